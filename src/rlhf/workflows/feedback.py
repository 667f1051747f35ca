"""Durable feedback accumulation and the retraining trigger policy.

Feedback events land in the state database (`rlhf.store`: a SQLite file by
default, PostgreSQL when `store.url` names one), one row per feedback id, so a
redelivered event is stored once. A pipeline's trigger fires when, within the current
window, enough new feedback accumulated (`count`) or the mean serving confidence dropped
by more than `drift` against the previous round's baseline. Each window fires at most
once: the request id is the window id, recorded in the same transaction that claims the
rows, under a lock on the pipeline, so replicas evaluating together fire it once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from rlhf.engine.data import LabeledText, PreferencePair, save_dataset
from rlhf.pipelines import RetrainTrigger
from rlhf.store import Database, Transaction, chunks, marks, open_database
from rlhf.v1 import events_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    model_version TEXT NOT NULL,
    kind INTEGER NOT NULL,
    payload TEXT NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    window_id TEXT
);
CREATE INDEX IF NOT EXISTS feedback_pending ON feedback (pipeline, window_id);
CREATE TABLE IF NOT EXISTS retrain_requests (
    window_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    reason TEXT NOT NULL,
    feedback_count INTEGER NOT NULL,
    baseline_confidence DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL
)
"""


@dataclass(frozen=True)
class TriggerDecision:
    window_id: str
    reason: str
    feedback_ids: list[str]


def _parse(rows: list[tuple]) -> list[events_pb2.FeedbackRecorded]:
    return [json_format.Parse(row[0], events_pb2.FeedbackRecorded()) for row in rows]


class FeedbackStore:
    def __init__(self, db: Database | Path | str) -> None:
        """`db`: an open `Database`, a SQLite file path or a `postgresql://` URL."""
        self._db = db if isinstance(db, Database) else open_database(db)
        self._db.ensure_schema(_SCHEMA)

    def add(self, event: events_pb2.FeedbackRecorded, received_at: float | None = None) -> bool:
        """Store one feedback event; False when this feedback id was already stored."""
        payload = json_format.MessageToJson(event, preserving_proto_field_name=True)
        with self._db.transaction() as tx:
            cursor = tx.execute(
                "INSERT INTO feedback (feedback_id, pipeline, model_version, kind, payload, "
                "confidence, received_at, window_id) VALUES (?, ?, ?, ?, ?, ?, ?, NULL) "
                "ON CONFLICT (feedback_id) DO NOTHING",
                (
                    event.feedback_id,
                    event.pipeline,
                    event.model_version,
                    int(event.kind),
                    payload,
                    float(event.confidence),
                    received_at if received_at is not None else time.time(),
                ),
            )
            return cursor.rowcount == 1

    def pending(self, pipeline: str) -> list[events_pb2.FeedbackRecorded]:
        return _parse(
            self._db.query(
                "SELECT payload FROM feedback WHERE pipeline = ? AND window_id IS NULL "
                "ORDER BY received_at, feedback_id",
                (pipeline,),
            )
        )

    def count(self, pipeline: str) -> int:
        return self._db.query("SELECT COUNT(*) FROM feedback WHERE pipeline = ?", (pipeline,))[0][0]

    def requests(self, pipeline: str) -> list[str]:
        rows = self._db.query(
            "SELECT window_id FROM retrain_requests WHERE pipeline = ? ORDER BY created_at",
            (pipeline,),
        )
        return [row[0] for row in rows]

    def evaluate(
        self, pipeline: str, trigger: RetrainTrigger, now: float | None = None
    ) -> TriggerDecision | None:
        """Claim pending feedback for a retraining round if the policy fires.

        Returns the decision (once per window) or None. The claim and the request row
        are written in one transaction holding the pipeline's lock, so concurrent calls
        (threads, replicas) cannot fire twice or claim one record for two windows.
        """
        now = time.time() if now is None else now
        window_id = f"{pipeline}-w{int(now // trigger.window_s)}"
        with self._db.transaction() as tx:
            tx.lock(f"feedback-window/{pipeline}")
            decision = self._decide(tx, pipeline, trigger, window_id)
            if decision is None:
                return None
            for chunk in chunks(decision.feedback_ids):
                tx.execute(
                    f"UPDATE feedback SET window_id = ? WHERE window_id IS NULL "
                    f"AND feedback_id IN ({marks(len(chunk))})",
                    (window_id, *chunk),
                )
            confidences = self._confidences(tx, decision.feedback_ids)
            tx.execute(
                "INSERT INTO retrain_requests (window_id, pipeline, reason, feedback_count, "
                "baseline_confidence, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    window_id,
                    pipeline,
                    decision.reason,
                    len(decision.feedback_ids),
                    sum(confidences) / len(confidences) if confidences else None,
                    now,
                ),
            )
            return decision

    @staticmethod
    def _decide(
        tx: Transaction, pipeline: str, trigger: RetrainTrigger, window_id: str
    ) -> TriggerDecision | None:
        already = tx.execute(
            "SELECT 1 FROM retrain_requests WHERE window_id = ?", (window_id,)
        ).fetchone()
        if already:
            return None
        rows = tx.execute(
            "SELECT feedback_id, confidence FROM feedback "
            "WHERE pipeline = ? AND window_id IS NULL ORDER BY received_at, feedback_id",
            (pipeline,),
        ).fetchall()
        ids = [row[0] for row in rows]
        if len(ids) >= trigger.count:
            return TriggerDecision(window_id, "count", ids)
        if trigger.drift is not None and ids:
            baseline = tx.execute(
                "SELECT baseline_confidence FROM retrain_requests WHERE pipeline = ? "
                "AND baseline_confidence IS NOT NULL ORDER BY created_at DESC LIMIT 1",
                (pipeline,),
            ).fetchone()
            scored = [row[1] for row in rows if row[1] > 0]
            minimum = max(5, trigger.count // 5)
            if baseline and len(scored) >= minimum:
                current = sum(scored) / len(scored)
                if baseline[0] - current > trigger.drift:
                    return TriggerDecision(window_id, "drift", ids)
        return None

    @staticmethod
    def _confidences(tx: Transaction, ids: list[str]) -> list[float]:
        confidences = []
        for chunk in chunks(ids):
            rows = tx.execute(
                f"SELECT confidence FROM feedback WHERE feedback_id IN ({marks(len(chunk))}) "
                "AND confidence > 0",
                chunk,
            ).fetchall()
            confidences += [row[0] for row in rows]
        return confidences

    def claimed(self, window_id: str) -> list[events_pb2.FeedbackRecorded]:
        return _parse(
            self._db.query(
                "SELECT payload FROM feedback WHERE window_id = ? "
                "ORDER BY received_at, feedback_id",
                (window_id,),
            )
        )

    def close(self) -> None:
        self._db.close()


#: Feedback kinds by the names used in lineage and reports.
KIND_NAMES = {
    events_pb2.FEEDBACK_KIND_THUMBS: "thumbs",
    events_pb2.FEEDBACK_KIND_RATING: "rating",
    events_pb2.FEEDBACK_KIND_PREFERENCE: "preference",
    events_pb2.FEEDBACK_KIND_LABEL: "label",
}
#: Label of the records in a window's `prompts` split (prompts carry no label).
PROMPT_LABEL = "prompt"


@dataclass
class FeedbackWindowData:
    """What one claimed window gives training, split by what each record teaches."""

    labels: list[LabeledText]
    preferences: list[PreferencePair]
    prompts: list[str]
    counts: dict[str, int]
    skipped: dict[str, int]

    @property
    def usable(self) -> bool:
        return bool(self.labels or self.preferences or self.prompts)

    def why_unusable(self, total: int) -> str:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return f"none of the window's {total} feedback records is usable ({reasons or 'empty'})"


def window_data(events: list[events_pb2.FeedbackRecorded]) -> FeedbackWindowData:
    """Sort claimed feedback by what it teaches.

    - a corrected label -> a labelled text (the classifier / reward model);
    - thumbs and ratings -> labelled responses (up / 4-5 positive, down / 1-2 negative;
      a 3 says nothing about the label);
    - a preferred-of-two -> a preference pair (pairwise reward model, DPO);
    - every prompt of a generation (thumbs, rating, preference) -> the RL prompt pool.
    """
    labels: list[LabeledText] = []
    pairs: list[PreferencePair] = []
    prompts: dict[str, None] = {}  # ordered and unique
    counts = dict.fromkeys([*KIND_NAMES.values(), PROMPT_LABEL], 0)
    skipped: dict[str, int] = {}

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    for event in events:
        kind = event.kind
        if kind == events_pb2.FEEDBACK_KIND_LABEL:
            text = event.prompt or event.response
            if event.label and text.strip():
                labels.append(LabeledText(text, event.label))
                counts["label"] += 1
            else:
                skip("labels without text or label")
            continue
        if kind == events_pb2.FEEDBACK_KIND_PREFERENCE:
            if event.chosen.strip() and event.rejected.strip() and event.chosen != event.rejected:
                pairs.append(PreferencePair(event.prompt, event.chosen, event.rejected))
                counts["preference"] += 1
            else:
                skip("preferences without two different responses")
        elif kind == events_pb2.FEEDBACK_KIND_THUMBS:
            if event.response.strip():
                labels.append(
                    LabeledText(event.response, "positive" if event.thumbs_up else "negative")
                )
                counts["thumbs"] += 1
            else:
                skip("thumbs without a response")
        elif kind == events_pb2.FEEDBACK_KIND_RATING:
            if event.response.strip() and 1 <= event.rating <= 5 and event.rating != 3:
                label = "positive" if event.rating >= 4 else "negative"
                labels.append(LabeledText(event.response, label))
                counts["rating"] += 1
            else:
                skip("neutral or invalid ratings")
        else:
            skip("records of an unknown kind")
            continue
        if event.prompt.strip() and event.prompt not in prompts:
            prompts[event.prompt] = None
            counts["prompt"] += 1
    return FeedbackWindowData(labels, pairs, list(prompts), counts, skipped)


def feedback_dataset(events: list[events_pb2.FeedbackRecorded], out_dir: Path, name: str) -> dict:
    """Turn claimed feedback into a versioned dataset under `out_dir/name`.

    Splits (each its own prepared dataset): `labels`, `preferences`, `prompts`. Returns
    a summary: `counts` of usable records by kind, `splits` (manifests; empty when
    nothing is usable), `count` (records claimed) and `reason` when nothing is usable.
    """
    data = window_data(events)
    splits: dict[str, list] = {}
    if data.labels:
        splits["labels"] = data.labels
    if data.preferences:
        splits["preferences"] = data.preferences
    if data.prompts:
        splits["prompts"] = [LabeledText(p, PROMPT_LABEL) for p in data.prompts]
    manifests = {}
    for split, records in splits.items():
        target = out_dir / name / split
        manifests[split] = save_dataset(
            target, {"train": records}, name=f"{name}-{split}", metadata={"source": "feedback"}
        )
        manifests[split]["path"] = str(target)
    summary: dict = {"splits": manifests, "count": len(events), "counts": data.counts}
    if not data.usable:
        summary["reason"] = data.why_unusable(len(events))
    (out_dir / name).mkdir(parents=True, exist_ok=True)
    (out_dir / name / "feedback.json").write_text(json.dumps(summary, default=str))
    return summary


def load_window(directory: Path) -> FeedbackWindowData:
    """The records of a feedback dataset written by `feedback_dataset`."""
    from rlhf.engine.data import load_dataset

    def split(name: str) -> list:
        path = Path(directory) / name
        return list(load_dataset(path)["train"]) if (path / "manifest.json").exists() else []

    summary_file = Path(directory) / "feedback.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    return FeedbackWindowData(
        labels=split("labels"),
        preferences=split("preferences"),
        prompts=[r.text for r in split("prompts")],
        counts=summary.get("counts", {}),
        skipped={},
    )


def mix(base: list, feedback: list, weight: float, seed: int = 0) -> list:
    """Base records plus feedback records making up `weight` of the result.

    Feedback is small next to most base sets, so it is repeated (a seeded shuffle,
    cycled) until it is `weight / (1 - weight)` times the base; with no base data the
    feedback alone is returned, with weight 0 the base alone.
    """
    import random

    if not feedback or weight <= 0:
        return list(base)
    if not base:
        return list(feedback)
    wanted = max(len(feedback), round(weight / (1 - weight) * len(base)))
    order = list(feedback)
    random.Random(seed).shuffle(order)
    repeated = [order[i % len(order)] for i in range(wanted)]
    return list(base) + repeated
