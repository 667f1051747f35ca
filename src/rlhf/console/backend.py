"""What the console does, apart from HTTP: comparisons, feedback (with a retry queue),
win rates, the prompt pool and the runs' metric history.

It talks to the platform only through `rlhf.client.Client` (public gRPC APIs).

Feedback of a comparison (ids derived from the comparison id, so a resubmitted form or
a retry records once, in the console and in the inference service's ledger):

| choice    | recorded                                                               |
|-----------|------------------------------------------------------------------------|
| A / B     | one `preference` (`console-<cid>`): prompt, chosen, rejected          |
| both bad  | two `thumbs` down, one per response (`console-<cid>-a`, `-b`)          |
| tie       | nothing is sent (a tie is no preference pair); counted in the win rate |

Every event names the serving version of the comparison as `model_version` (so a
retraining round starts from it) and the labeller's user id as `labeller`.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from rlhf.v1 import common_pb2

log = logging.getLogger(__name__)

CHOICES = ("a", "b", "tie", "bad")
TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}
MAX_TEXT = 4000
# Fresh samples drawn for a comparison whose response came back empty or the same as
# the other one (a small or early model does that now and then).
MAX_RESAMPLES = 4
RUN_DONE = {
    common_pb2.RUN_STATE_SUCCEEDED,
    common_pb2.RUN_STATE_FAILED,
    common_pb2.RUN_STATE_CANCELLED,
}


class ConsoleError(Exception):
    """A message for the person at the page (never a secret)."""


class ServiceDown(ConsoleError):
    """A service did not answer (transient: try again later)."""


def describe(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "ERROR"
    return f"{name}: {(details or '').strip()[:300]}"


def _status(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    return code.name if code is not None else "ERROR"


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and getattr(exc, "code", lambda: None)() in TRANSIENT


@dataclass
class Response:
    version: str
    request_id: str
    text: str


@dataclass
class Comparison:
    id: str
    user_id: str
    prompt: str
    a: Response
    b: Response
    serving: str
    note: str = ""
    created_at: float = field(default_factory=time.time)
    choice: str = ""
    comment: str = ""  # kept in the console: RecordFeedback has no field for it
    status: str = ""  # "", "recorded", "queued", "failed: ..."

    @property
    def pair(self) -> tuple[str, str]:
        return tuple(sorted((self.a.version, self.b.version)))  # type: ignore[return-value]

    @property
    def identical(self) -> bool:
        return self.a.text.strip() == self.b.text.strip()


@dataclass
class RateItem:
    id: str
    user_id: str
    prompt: str
    response: str
    version: str
    request_id: str
    done: set[str] = field(default_factory=set)


@dataclass
class Pending:
    """One feedback call waiting for the inference service."""

    fields: dict[str, Any]
    user_id: str
    attempts: int = 0
    last_error: str = ""
    queued_at: float = field(default_factory=time.time)


@dataclass
class WinRate:
    wins: collections.Counter = field(default_factory=collections.Counter)  # version -> n
    ties: int = 0
    both_bad: int = 0

    @property
    def total(self) -> int:
        return sum(self.wins.values()) + self.ties + self.both_bad

    def rate(self, version: str) -> float | None:
        """Wins of `version` / decided comparisons (ties and both-bad excluded)."""
        decided = sum(self.wins.values())
        return self.wins[version] / decided if decided else None


def prompts_from(records: list[dict], words: int, language: str) -> list[str]:
    """Openings of texts as prompts, as the trainer builds them (characters for zh)."""
    prompts = []
    for record in records:
        text = record.get("text") or record.get("prompt") or ""
        opening = text[:words] if language == "zh" else " ".join(text.split()[:words])
        if opening.strip():
            prompts.append(opening)
    return prompts


class Backend:
    """Thread-safe; one per console process."""

    def __init__(
        self,
        client: Any,
        *,
        pipeline: str = "",
        model: str = "",
        pool_dataset: str = "",
        max_new_tokens: int = 48,
        temperature: float = 0.9,
        retry_interval_s: float = 5.0,
        poll_interval_s: float = 10.0,
        history_points: int = 500,
    ) -> None:
        self.client = client
        self.pipeline = pipeline
        self.model = model or (f"{pipeline}-policy" if pipeline else "")
        self.pool_dataset = pool_dataset
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.retry_interval_s = retry_interval_s
        self.poll_interval_s = poll_interval_s
        self.history_points = history_points
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self.comparisons: collections.OrderedDict[str, Comparison] = collections.OrderedDict()
        self.rate_items: collections.OrderedDict[str, RateItem] = collections.OrderedDict()
        self.pending: collections.deque[Pending] = collections.deque()
        self.sent_ids: set[str] = set()
        self.win_rates: dict[tuple[str, str], WinRate] = {}
        self.history: dict[str, list[tuple[float, int, dict[str, float]]]] = {}
        self.inference_error = ""  # the last failure talking to inference, "" once it answers
        self._pool: list[str] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._retry_loop, "retry"), (self._poll_loop, "runs")):
            thread = threading.Thread(target=target, name=f"console-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _remember(self, table: collections.OrderedDict, key: str, value: Any) -> None:
        table[key] = value
        while len(table) > 10_000:
            table.popitem(last=False)

    # -- inference calls ---------------------------------------------------------------
    def _inference(self, fn, *args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except grpc.RpcError as exc:
            if is_transient(exc):
                # the page names the status only; details (addresses, ...) go to the log
                log.warning("inference: %s", describe(exc))
                self.inference_error = _status(exc)
                message = f"the inference service is unavailable ({self.inference_error})"
                raise ServiceDown(message) from None
            raise ConsoleError(describe(exc)) from None
        self.inference_error = ""
        return result

    def _generate(self, prompt: str, version: str, seed: int) -> Response:
        reply = self._inference(
            self.client.generate,
            [prompt],
            # the registry names versions "<model name>-v<n>"
            model=self.model or version.rsplit("-v", 1)[0],
            version=version,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            seed=seed,
        )
        return Response(reply.model_version, reply.request_id, reply.completions[0])

    def _sample(
        self, prompt: str, version: str, rng: random.Random, other: Response | None = None
    ) -> Response:
        """A non-empty response that differs from `other`: a comparison with an empty or
        twin answer teaches nothing (and RecordFeedback refuses such a preference). Up
        to MAX_RESAMPLES fresh seeds; the last sample is shown whatever it is."""
        for _ in range(MAX_RESAMPLES):
            response = self._generate(prompt, version, rng.randrange(1, 2**31))
            text = response.text.strip()
            if text and (other is None or text != other.text.strip()):
                break
        return response

    # -- versions ----------------------------------------------------------------------
    def versions_to_compare(self) -> tuple[str, str]:
        """(serving, candidate): the promoted version of the model and its latest
        non-promoted version (a retrained candidate or a canary; "" when none)."""
        models = [
            m
            for m in self.list_models(self.model)
            if m.kind == common_pb2.MODEL_KIND_POLICY or self.model
        ]
        serving = next((m for m in models if m.promoted), None)
        if serving is None:
            raise ConsoleError(f"no promoted version of {self.model or 'the policy'} yet")
        others = [
            m
            for m in models
            if m.name == serving.name and not m.promoted and m.version != serving.version
        ]
        others.sort(key=lambda m: (m.created_at.seconds, m.created_at.nanos, m.version))
        return serving.version, (others[-1].version if others else "")

    def list_models(self, name: str = "") -> list[Any]:
        try:
            return list(self.client.list_models(name=name))
        except grpc.RpcError as exc:
            raise ConsoleError(f"the trainer did not answer ({describe(exc)})") from None

    # -- comparisons -------------------------------------------------------------------
    def new_comparison(self, user_id: str, prompt: str) -> Comparison:
        prompt = prompt.strip()
        if not prompt:
            raise ConsoleError("type a prompt or draw one from the pool")
        if len(prompt) > MAX_TEXT:
            raise ConsoleError(f"the prompt is longer than {MAX_TEXT} characters")
        serving, candidate = self.versions_to_compare()
        rng = random.SystemRandom()
        note = ""
        first = self._sample(prompt, serving, rng)
        second = None
        if candidate:
            try:
                second = self._sample(prompt, candidate, rng, other=first)
            except ConsoleError as exc:
                if isinstance(exc, ServiceDown):
                    raise
                note = (
                    "The candidate version is not served (only the promoted version and a "
                    "canary are); both responses are samples of the serving version."
                )
                log.info("candidate %s not served: %s", candidate, exc)
        else:
            note = (
                "There is no candidate version yet; both responses are samples of the "
                "serving version."
            )
        if second is None:
            second = self._sample(prompt, serving, rng, other=first)
        a, b = (first, second) if rng.random() < 0.5 else (second, first)
        comparison = Comparison(
            id=secrets.token_urlsafe(12),
            user_id=user_id,
            prompt=prompt,
            a=a,
            b=b,
            serving=serving,
            note=note,
        )
        with self._lock:
            self._remember(self.comparisons, comparison.id, comparison)
        return comparison

    def comparison(self, cid: str, user_id: str) -> Comparison | None:
        with self._lock:
            comparison = self.comparisons.get(cid)
        return comparison if comparison is not None and comparison.user_id == user_id else None

    def choose(self, cid: str, user_id: str, choice: str, comment: str = "") -> Comparison:
        """Record the labeller's choice once; later calls return the first outcome."""
        if choice not in CHOICES:
            raise ConsoleError(f"unknown choice {choice!r}")
        comment = comment.strip()[:MAX_TEXT]
        with self._lock:
            comparison = self.comparison(cid, user_id)
            if comparison is None:
                raise ConsoleError("this comparison does not exist (or is not yours)")
            if comparison.choice:
                return comparison  # double click / resubmitted form
            if choice in ("a", "b") and comparison.identical:
                raise ConsoleError("the two responses are identical: choose tie or both bad")
            comparison.choice, comparison.comment = choice, comment
            stats = self.win_rates.setdefault(comparison.pair, WinRate())
            if choice == "a":
                stats.wins[comparison.a.version] += 1
            elif choice == "b":
                stats.wins[comparison.b.version] += 1
            elif choice == "tie":
                stats.ties += 1
            else:
                stats.both_bad += 1
        log.info("comparison %s: %s chose %s", cid, user_id, choice)
        calls = self._feedback_calls(comparison, choice, user_id)
        comparison.status = self._submit(calls, user_id) if calls else "recorded"
        return comparison

    def _feedback_calls(self, c: Comparison, choice: str, user_id: str) -> list[dict[str, Any]]:
        common = {
            "model_version": c.serving,
            "pipeline": self.pipeline,
            "prompt": c.prompt,
            "labeller": user_id,
        }
        if choice in ("a", "b"):
            chosen, rejected = (c.a, c.b) if choice == "a" else (c.b, c.a)
            return [
                {
                    **common,
                    "request_id": chosen.request_id,
                    "kind": "preference",
                    "chosen": chosen.text,
                    "rejected": rejected.text,
                    "feedback_id": f"console-{c.id}",
                }
            ]
        if choice == "bad":
            return [
                {
                    **common,
                    "request_id": r.request_id,
                    "kind": "thumbs",
                    "thumbs_up": False,
                    "response": r.text,
                    "feedback_id": f"console-{c.id}-{side}",
                }
                for side, r in (("a", c.a), ("b", c.b))
            ]
        return []  # tie

    # -- rate / label ------------------------------------------------------------------
    def new_rate_item(self, user_id: str, prompt: str, text: str) -> RateItem:
        """A response generated for `prompt` by the serving version, or a typed text."""
        prompt, text = prompt.strip(), text.strip()
        if len(prompt) > MAX_TEXT or len(text) > MAX_TEXT:
            raise ConsoleError(f"texts are limited to {MAX_TEXT} characters")
        serving, _ = self.versions_to_compare()
        if text:
            request_id, version = f"console-text-{secrets.token_hex(8)}", serving
        elif prompt:
            response = self._generate(prompt, serving, random.SystemRandom().randrange(1, 2**31))
            text, request_id, version = response.text, response.request_id, response.version
        else:
            raise ConsoleError("type a text to rate, or a prompt to generate a response for")
        item = RateItem(secrets.token_urlsafe(12), user_id, prompt, text, version, request_id)
        with self._lock:
            self._remember(self.rate_items, item.id, item)
        return item

    def rate_item(self, item_id: str, user_id: str) -> RateItem | None:
        with self._lock:
            item = self.rate_items.get(item_id)
        return item if item is not None and item.user_id == user_id else None

    def rate(self, item_id: str, user_id: str, kind: str, value: str) -> str:
        item = self.rate_item(item_id, user_id)
        if item is None:
            raise ConsoleError("this item does not exist (or is not yours)")
        fields: dict[str, Any] = {
            "request_id": item.request_id,
            "model_version": item.version,
            "pipeline": self.pipeline,
            "prompt": item.prompt,
            "response": item.response,
            "labeller": user_id,
        }
        if kind == "thumbs":
            if value not in ("up", "down"):
                raise ConsoleError("thumbs must be up or down")
            fields.update(kind="thumbs", thumbs_up=value == "up")
        elif kind == "rating":
            if value not in {"1", "2", "3", "4", "5"}:
                raise ConsoleError("choose a rating from 1 to 5")
            fields.update(kind="rating", rating=int(value))
        elif kind == "label":
            value = value.strip()
            if not value or len(value) > 200:
                raise ConsoleError("type the corrected label (at most 200 characters)")
            fields.update(kind="label", label=value)
        else:
            raise ConsoleError(f"unknown feedback kind {kind!r}")
        fields["feedback_id"] = f"console-rate-{item.id}-{kind}"
        with self._lock:
            if kind in item.done:
                return "recorded"
            item.done.add(kind)
        return self._submit([fields], user_id)

    # -- sending, with the retry queue -------------------------------------------------
    def _submit(self, calls: list[dict[str, Any]], user_id: str) -> str:
        """Send now; on a transient failure keep the calls queued. Returns the status."""
        status = "recorded"
        for fields in calls:
            outcome = self._send(Pending(fields, user_id))
            if outcome == "queued":
                status = "queued"
            elif outcome.startswith("failed"):
                return outcome
        return status

    def _send(self, item: Pending, from_queue: bool = False) -> str:
        """One RecordFeedback call. A transient failure queues it (once); a refusal
        (INVALID_ARGUMENT, ...) drops it with the reason."""
        feedback_id = item.fields["feedback_id"]
        with self._send_lock:  # one call at a time: a double click cannot race itself
            if feedback_id in self.sent_ids:
                self._unqueue(item)
                return "recorded"
            if not from_queue:
                with self._lock:
                    if any(p.fields["feedback_id"] == feedback_id for p in self.pending):
                        return "queued"  # the retry loop owns it
            item.attempts += 1
            try:
                self.client.record_feedback(**item.fields)
            except grpc.RpcError as exc:
                item.last_error = describe(exc)
                if is_transient(exc):
                    self.inference_error = _status(exc)
                    if not from_queue:
                        with self._lock:
                            self.pending.append(item)
                    log.warning("feedback %s queued: %s", feedback_id, item.last_error)
                    return "queued"
                log.error("feedback %s refused: %s", feedback_id, item.last_error)
                self._unqueue(item)
                return f"failed: {item.last_error}"
            self.inference_error = ""
            self.sent_ids.add(feedback_id)
            self._unqueue(item)
            log.info("feedback %s recorded (%s)", feedback_id, item.user_id)
            return "recorded"

    def _unqueue(self, item: Pending) -> None:
        with self._lock:
            if item in self.pending:
                self.pending.remove(item)

    def flush(self) -> int:
        """Try every queued call once, oldest first; returns how many are left."""
        with self._lock:
            items = list(self.pending)
        for item in items:
            if self._send(item, from_queue=True) == "queued":
                break  # still down: keep the order, try again later
        with self._lock:
            self._refresh_statuses()
            return len(self.pending)

    def _refresh_statuses(self) -> None:
        waiting = {p.fields["feedback_id"] for p in self.pending}
        for comparison in self.comparisons.values():
            if comparison.status == "queued" and not any(
                fid == f"console-{comparison.id}" or fid.startswith(f"console-{comparison.id}-")
                for fid in waiting
            ):
                comparison.status = "recorded"

    def pending_for(self, user_id: str) -> int:
        with self._lock:
            return sum(1 for p in self.pending if p.user_id == user_id)

    def _retry_loop(self) -> None:
        while not self._stop.wait(self.retry_interval_s):
            if self.pending:
                try:
                    self.flush()
                except Exception:  # noqa: BLE001 - the loop must survive anything
                    log.exception("retrying queued feedback failed")

    # -- win rates ---------------------------------------------------------------------
    def recent_choices(self, limit: int = 20) -> list[Comparison]:
        with self._lock:
            done = [c for c in self.comparisons.values() if c.choice]
        return done[-limit:][::-1]

    def win_rate_rows(self) -> list[tuple[tuple[str, str], WinRate]]:
        with self._lock:
            return sorted(self.win_rates.items())

    # -- prompt pool -------------------------------------------------------------------
    def _load_pool(self) -> list[str]:
        names, words, language = self._pool_source()
        prompts: list[str] = []
        for name in names:
            try:
                dataset = self._get_dataset(name)
            except grpc.RpcError as exc:
                raise ConsoleError(f"data prep has no dataset {name!r} ({describe(exc)})") from None
            for split in ("validation", "test", "train"):
                if split in dataset.splits:
                    prompts += prompts_from(_read_jsonl(dataset.splits[split].uri), words, language)
                    break
        return list(dict.fromkeys(prompts))

    def _get_dataset(self, name: str) -> Any:
        from rlhf.v1 import dataprep_pb2

        request = dataprep_pb2.GetDatasetRequest(name=name)
        return self.client.stub("dataprep").GetDataset(request, timeout=self.client.timeout)

    def _pool_source(self) -> tuple[list[str], int, str]:
        if self.pool_dataset:
            return [self.pool_dataset], 6, "en"
        if not self.pipeline:
            raise ConsoleError("no prompt pool: start the console with --pipeline")
        from rlhf.pipelines import load_named_pipeline

        try:
            spec = load_named_pipeline(self.pipeline)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            raise ConsoleError(f"pipeline {self.pipeline!r}: {exc}") from None
        words = {name: source.prompt_words for name, source in spec.datasets.items()}
        first = next(iter(spec.datasets))
        return list(spec.datasets), words[first], spec.language

    def draw_prompt(self) -> str:
        with self._lock:
            pool = self._pool
        if not pool:
            pool = self._load_pool()
            if not pool:
                raise ConsoleError("the prompt pool is empty")
            with self._lock:
                self._pool = pool
        return random.SystemRandom().choice(pool)

    # -- runs --------------------------------------------------------------------------
    def list_runs(self) -> list[Any]:
        try:
            runs = list(self.client.list_runs(pipeline=self.pipeline))
        except grpc.RpcError as exc:
            raise ConsoleError(f"the trainer did not answer ({describe(exc)})") from None
        self._record_history(runs)
        return runs

    def get_run(self, run_id: str) -> Any:
        try:
            run = self.client.get_run(run_id)
        except grpc.RpcError as exc:
            raise ConsoleError(describe(exc)) from None
        self._record_history([run])
        return run

    def _record_history(self, runs: list[Any]) -> None:
        with self._lock:
            for run in runs:
                if not run.metrics:
                    continue
                series = self.history.setdefault(run.run_id, [])
                snapshot = dict(run.metrics)
                if series and series[-1][1] == run.step and series[-1][2] == snapshot:
                    continue
                series.append((time.time(), int(run.step), snapshot))
                del series[: -self.history_points]

    def run_history(self, run_id: str) -> list[tuple[float, int, dict[str, float]]]:
        with self._lock:
            return list(self.history.get(run_id, ()))

    def run_curves(
        self, run_id: str, models: list[Any] | None = None
    ) -> list[tuple[float, int, dict[str, float]]]:
        """The run's metrics over steps: its `metrics.jsonl` (beside the model artifact
        of the version it trained) when the console can read the artifact volume, else
        the snapshots polled from ListRuns / GetRun."""
        polled = self.run_history(run_id)
        if models is None:
            try:
                models = self.list_models()
            except ConsoleError:
                models = []
        model = next((m for m in models if m.lineage.run_id == run_id), None)
        if model is None or not model.artifact.uri.startswith("file://"):
            return polled
        path = Path(model.artifact.uri.removeprefix("file://")).parent / "run" / "metrics.jsonl"
        from_file = _read_metrics(path)
        return from_file if len(from_file) > len(polled) else polled

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.list_runs()
            except ConsoleError as exc:
                log.debug("polling runs: %s", exc)
            except Exception:  # noqa: BLE001
                log.exception("polling runs failed")


def _read_jsonl(uri: str) -> list[dict]:
    """Records of a dataset split. The console reads `file://` splits from the shared
    artifact volume (mount it read-only); other schemes are not readable here."""
    if not uri.startswith("file://"):
        raise ConsoleError(f"cannot read dataset split {uri[:120]!r} (only file:// URIs)")
    path = Path(uri.removeprefix("file://"))
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    if isinstance(obj, dict):
                        records.append(obj)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConsoleError(f"cannot read the prompt pool: {exc}") from None
    return records


def _read_metrics(
    path: Path, max_bytes: int = 8 << 20
) -> list[tuple[float, int, dict[str, float]]]:
    """Rows of a run's metrics.jsonl (`{"step": n, "<metric>": value, ...}` a line)."""
    try:
        if not path.is_file() or path.stat().st_size > max_bytes:
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        values = {
            k: float(v)
            for k, v in obj.items()
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
        }
        step = obj.get("step", len(rows))
        rows.append((0.0, int(step) if isinstance(step, int | float) else len(rows), values))
    return rows
