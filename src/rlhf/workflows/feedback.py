"""Durable feedback accumulation and the retraining trigger policy.

Feedback events land in a SQLite file (one row per feedback id, so a redelivered event
is stored once). A pipeline's trigger fires when, within the current window, enough
new feedback accumulated (`count`) or the mean serving confidence dropped by more than
`drift` against the previous round's baseline. Each window fires at most once: the
request id is the window id, recorded in the same transaction that claims the rows.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from rlhf.engine.data import LabeledText, PreferencePair, save_dataset
from rlhf.pipelines import RetrainTrigger
from rlhf.v1 import events_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    model_version TEXT NOT NULL,
    kind INTEGER NOT NULL,
    payload TEXT NOT NULL,
    confidence REAL NOT NULL,
    received_at REAL NOT NULL,
    window_id TEXT
);
CREATE TABLE IF NOT EXISTS retrain_requests (
    window_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    reason TEXT NOT NULL,
    feedback_count INTEGER NOT NULL,
    baseline_confidence REAL,
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class TriggerDecision:
    window_id: str
    reason: str
    feedback_ids: list[str]


class FeedbackStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def add(self, event: events_pb2.FeedbackRecorded, received_at: float | None = None) -> bool:
        """Store one feedback event; False when this feedback id was already stored."""
        payload = json_format.MessageToJson(event, preserving_proto_field_name=True)
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
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
        rows = self._db.execute(
            "SELECT payload FROM feedback WHERE pipeline = ? AND window_id IS NULL "
            "ORDER BY received_at, feedback_id",
            (pipeline,),
        ).fetchall()
        return [json_format.Parse(row[0], events_pb2.FeedbackRecorded()) for row in rows]

    def count(self, pipeline: str) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM feedback WHERE pipeline = ?", (pipeline,)
        ).fetchone()[0]

    def requests(self, pipeline: str) -> list[str]:
        rows = self._db.execute(
            "SELECT window_id FROM retrain_requests WHERE pipeline = ? ORDER BY created_at",
            (pipeline,),
        ).fetchall()
        return [row[0] for row in rows]

    def evaluate(
        self, pipeline: str, trigger: RetrainTrigger, now: float | None = None
    ) -> TriggerDecision | None:
        """Claim pending feedback for a retraining round if the policy fires.

        Returns the decision (once per window) or None. The claim and the request row
        are written in one transaction, so concurrent calls cannot fire twice.
        """
        now = time.time() if now is None else now
        window_id = f"{pipeline}-w{int(now // trigger.window_s)}"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                decision = self._decide(pipeline, trigger, window_id)
                if decision is None:
                    self._db.execute("ROLLBACK")
                    return None
                marks = ",".join("?" * len(decision.feedback_ids))
                self._db.execute(
                    f"UPDATE feedback SET window_id = ? WHERE feedback_id IN ({marks})",
                    (window_id, *decision.feedback_ids),
                )
                confidences = self._confidences(decision.feedback_ids)
                self._db.execute(
                    "INSERT INTO retrain_requests VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        window_id,
                        pipeline,
                        decision.reason,
                        len(decision.feedback_ids),
                        sum(confidences) / len(confidences) if confidences else None,
                        now,
                    ),
                )
                self._db.execute("COMMIT")
                return decision
            except Exception:
                self._db.execute("ROLLBACK")
                raise

    def _decide(
        self, pipeline: str, trigger: RetrainTrigger, window_id: str
    ) -> TriggerDecision | None:
        already = self._db.execute(
            "SELECT 1 FROM retrain_requests WHERE window_id = ?", (window_id,)
        ).fetchone()
        if already:
            return None
        rows = self._db.execute(
            "SELECT feedback_id, confidence FROM feedback "
            "WHERE pipeline = ? AND window_id IS NULL ORDER BY received_at, feedback_id",
            (pipeline,),
        ).fetchall()
        ids = [row[0] for row in rows]
        if len(ids) >= trigger.count:
            return TriggerDecision(window_id, "count", ids)
        if trigger.drift is not None and ids:
            baseline = self._db.execute(
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

    def _confidences(self, ids: list[str]) -> list[float]:
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f"SELECT confidence FROM feedback WHERE feedback_id IN ({marks}) AND confidence > 0",
            ids,
        ).fetchall()
        return [row[0] for row in rows]

    def claimed(self, window_id: str) -> list[events_pb2.FeedbackRecorded]:
        rows = self._db.execute(
            "SELECT payload FROM feedback WHERE window_id = ? ORDER BY received_at, feedback_id",
            (window_id,),
        ).fetchall()
        return [json_format.Parse(row[0], events_pb2.FeedbackRecorded()) for row in rows]

    def close(self) -> None:
        self._db.close()


def feedback_dataset(
    events: list[events_pb2.FeedbackRecorded], out_dir: Path, name: str
) -> dict | None:
    """Turn claimed feedback into a versioned dataset; returns its manifest.

    Corrected labels become labelled texts, preferences become pairs, thumbs and ratings
    become labelled responses (up / rating >= 4 positive, down / rating <= 2 negative).
    Splits: `labels` and/or `preferences`. Returns None when nothing is usable.
    """
    labels: list[LabeledText] = []
    pairs: list[PreferencePair] = []
    for event in events:
        if event.kind == events_pb2.FEEDBACK_KIND_LABEL and event.label:
            labels.append(LabeledText(event.prompt or event.response, event.label))
        elif event.kind == events_pb2.FEEDBACK_KIND_PREFERENCE and event.chosen:
            pairs.append(PreferencePair(event.prompt, event.chosen, event.rejected))
        elif event.kind == events_pb2.FEEDBACK_KIND_THUMBS and event.response:
            labels.append(
                LabeledText(event.response, "positive" if event.thumbs_up else "negative")
            )
        elif (
            event.kind == events_pb2.FEEDBACK_KIND_RATING
            and event.response
            and event.rating != 3  # a neutral rating says nothing about the label
        ):
            label = "positive" if event.rating >= 4 else "negative"
            labels.append(LabeledText(event.response, label))
    splits: dict[str, list] = {}
    if labels:
        splits["labels"] = labels
    if pairs:
        splits["preferences"] = pairs
    if not splits:
        return None
    manifests = {}
    for split, records in splits.items():
        target = out_dir / name / split
        manifests[split] = save_dataset(
            target, {"train": records}, name=f"{name}-{split}", metadata={"source": "feedback"}
        )
        manifests[split]["path"] = str(target)
    summary = {"splits": manifests, "count": len(events)}
    (out_dir / name).mkdir(parents=True, exist_ok=True)
    (out_dir / name / "feedback.json").write_text(json.dumps(summary, default=str))
    return summary
