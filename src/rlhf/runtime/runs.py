"""Asynchronous runs: long work (training, preparation, attacks) behind a run id.

An RPC submits work and returns the run id at once; the work runs on a worker thread,
reports progress through its `RunContext`, and stops cleanly when cancelled (the next
`report` raises `RunCancelled`). Every state change is written to `<state_dir>/<id>.json`
atomically and passed to `on_update` (services publish it as a `run.progress` event).
A process that restarts calls `resume_incomplete`: runs left PENDING or RUNNING start
again and their work resumes from its own checkpoint in `ctx.checkpoint_dir`.

Several replicas of a service share one state directory (a volume every pod mounts).
Each run belongs to the replica that started it (`owner`), and only its owner resumes
it. A replica proves it is alive by renewing its lease every `lease_ttl_s / 3`; the
runs of a replica whose lease went stale (its pod died, and a Deployment's new pod has
a new name) are taken over by the first live replica that claims `<run_id>.<epoch>`
(exactly one wins). An owner that finds a newer claim on its run (it was paused past
its lease, not dead) stops that run at its next `report` instead of finishing it twice.
Claims and leases are files in the state directory (`claims/`, `replicas/`) by default,
or rows of the state database (`rlhf.runtime.run_claims`, PostgreSQL with `store.url`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.core import GaugeMetricFamily, Metric

from rlhf.runtime import metrics
from rlhf.runtime.run_claims import FileRunClaims, RunClaims
from rlhf.v1 import common_pb2

log = logging.getLogger(__name__)

TERMINAL_STATES = {"succeeded", "failed", "cancelled"}
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_STATE_TO_PROTO = {
    "pending": common_pb2.RUN_STATE_PENDING,
    "running": common_pb2.RUN_STATE_RUNNING,
    "succeeded": common_pb2.RUN_STATE_SUCCEEDED,
    "failed": common_pb2.RUN_STATE_FAILED,
    "cancelled": common_pb2.RUN_STATE_CANCELLED,
}


class RunCancelled(Exception):
    """Raised inside work by `RunContext.report` once the run was cancelled."""


class RunQueueFull(RuntimeError):
    """Too many runs waiting: the caller should retry later (RPCs answer
    RESOURCE_EXHAUSTED with a retry hint)."""


#: Runs a process may hold queued or running from requests before refusing more.
MAX_QUEUED_RUNS = 32
#: Starts of one run (the first plus resumes after restarts) before it is failed: a run
#: that kills its process every time must not be resumed forever.
MAX_ATTEMPTS = 3
#: Seconds without a heartbeat after which a replica's runs may be taken over.
LEASE_TTL_S = 45.0


def default_replica_id() -> str:
    """RLHF_REPLICA_ID, else the pod name (Kubernetes sets HOSTNAME), else "local": a
    single process keeps one id across restarts and resumes its own runs at once."""
    return os.environ.get("RLHF_REPLICA_ID") or os.environ.get("POD_NAME") or "local"


def run_key(run_id: str, label: str) -> str:
    """`<run id>/<label>`: what a run's work registers under it
    (`ModelRegistry.register(key=)`) happens once, even when a crash between registering
    and finishing the run makes a resumed attempt do it again."""
    return f"{run_id}/{label}"


class RunNotFound(KeyError):
    """No run with that id."""


RUNS_FINISHED = metrics.counter(
    "rlhf_runs_finished", "Runs that ended, by service and final state.", ("service", "state")
)
# Progress keys a training loop reports, in order of preference, for the run gauges.
_REWARD_KEYS = ("reward", "score", "reward_margin")
_KL_KEYS = ("kl_per_sequence", "kl")


class RunsCollector:
    """Run gauges read from every live RunManager's own runs at scrape time (nothing to
    keep in step, no disk read): `rlhf_runs{service,state}`, and for each running run
    its step, total steps, latest reward and KL (`rlhf_run_*{service,stage,run_id}`; one
    worker per service runs at a time, so the run_id label stays few)."""

    def __init__(self) -> None:
        self._managers: weakref.WeakSet[RunManager] = weakref.WeakSet()

    def add(self, manager: RunManager) -> None:
        self._managers.add(manager)

    def collect(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily(
            "rlhf_runs", "Runs the service knows, by state.", labels=["service", "state"]
        )
        labels = ["service", "stage", "run_id"]
        gauges = {
            "step": GaugeMetricFamily("rlhf_run_step", "Step of a running run.", labels=labels),
            "total": GaugeMetricFamily(
                "rlhf_run_total_steps", "Steps a running run plans.", labels=labels
            ),
            "reward": GaugeMetricFamily(
                "rlhf_run_reward", "Latest mean reward a running run reported.", labels=labels
            ),
            "kl": GaugeMetricFamily(
                "rlhf_run_kl_per_sequence",
                "Latest KL(policy || reference), nats per sequence, a running run reported.",
                labels=labels,
            ),
        }
        for manager in list(self._managers):
            counts = dict.fromkeys(_STATE_TO_PROTO, 0)
            for record in manager.own_records():
                counts[record.state] = counts.get(record.state, 0) + 1
                if record.state != "running":
                    continue
                values = [manager.service, record.stage, record.run_id]
                gauges["step"].add_metric(values, record.step)
                gauges["total"].add_metric(values, record.total_steps)
                for name, keys in (("reward", _REWARD_KEYS), ("kl", _KL_KEYS)):
                    key = next((k for k in keys if k in record.metrics), None)
                    if key is not None:
                        gauges[name].add_metric(values, record.metrics[key])
            for state, count in counts.items():
                runs.add_metric([manager.service, state], count)
        yield runs
        yield from gauges.values()


RUNS_COLLECTOR = RunsCollector()
metrics.REGISTRY.register(RUNS_COLLECTOR)


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class RunRecord:
    run_id: str
    stage: str
    state: str = "pending"
    step: int = 0
    total_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    # Artifact references: {"uri", "kind", "digest"}.
    artifacts: list[dict[str, str]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    pipeline: str = ""
    request_id: str = ""
    attempts: int = 0
    owner: str = ""  # the replica running it ("" in records from before replicas)
    epoch: int = 0  # bumped by each takeover (claims/<run_id>.<epoch>)
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_proto(self) -> common_pb2.RunStatus:
        status = common_pb2.RunStatus(
            run_id=self.run_id,
            state=_STATE_TO_PROTO[self.state],
            stage=self.stage,
            step=self.step,
            total_steps=self.total_steps,
            message=self.message,
        )
        status.metrics.update({k: float(v) for k, v in self.metrics.items()})
        for ref in self.artifacts:
            status.artifacts.add(
                uri=ref["uri"], kind=ref.get("kind", ""), digest=ref.get("digest", "")
            )
        for name in ("created_at", "updated_at"):
            stamp = Timestamp()
            stamp.FromDatetime(datetime.fromisoformat(getattr(self, name)))
            getattr(status, name).CopyFrom(stamp)
        return status


@dataclass
class RunContext:
    """What a piece of work sees of its run."""

    record: RunRecord
    checkpoint_dir: Path
    _manager: RunManager
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Set with `cancelled` by a shutdown: the run stops for resume, not for good.
    interrupted: bool = False

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def params(self) -> dict[str, Any]:
        return self.record.params

    def report(
        self, step: int | None = None, total_steps: int | None = None, **metrics: float
    ) -> None:
        """Record progress; raises RunCancelled if the run was cancelled meanwhile."""
        if self.cancelled.is_set():
            raise RunCancelled(self.run_id)
        if self._manager.taken_over(self.record):
            self.cancelled.set()
            raise RunCancelled(self.run_id)
        if self._manager.cancel_requested(self.record):
            self.record.message = "cancelled"
            self.cancelled.set()
            raise RunCancelled(self.run_id)
        if step is not None:
            self.record.step = int(step)
        if total_steps is not None:
            self.record.total_steps = int(total_steps)
        self.record.metrics.update({k: float(v) for k, v in metrics.items()})
        self._manager._save_and_notify(self.record)

    def key(self, label: str) -> str:
        """`run_key(run id, label)`, the same on every attempt of this run."""
        return run_key(self.run_id, label)

    def event_id(self, label: str) -> str:
        """A deterministic event id (32 hex digits, like the bus's own) for this run's
        event `label`: a resumed attempt publishes it again under the same id, and the
        consumers' dedupe record drops the copy."""
        return hashlib.sha256(self.key(label).encode()).hexdigest()[:32]

    def add_artifact(self, uri: str, kind: str, digest: str = "") -> None:
        self.record.artifacts.append({"uri": uri, "kind": kind, "digest": digest})


Work = Callable[[RunContext], dict[str, Any] | None]


class RunManager:
    """Runs work asynchronously, persists run state, and supports cancel and resume."""

    def __init__(
        self,
        state_dir: Path,
        on_update: Callable[[RunRecord], None] | None = None,
        max_workers: int = 1,
        executor: ThreadPoolExecutor | None = None,
        service: str = "",
        replica: str | None = None,
        lease_ttl_s: float = LEASE_TTL_S,
        claims: RunClaims | None = None,
    ) -> None:
        """`executor`: share one worker pool between managers (several services in one
        process run their work one at a time instead of racing for the CPU); `service`
        labels the run metrics; `replica` names this replica among those sharing
        `state_dir` (default: `default_replica_id()`); `claims`: where run ownership is
        decided (default: files in `state_dir`)."""
        self.state_dir = Path(state_dir)
        self.service = service
        self.replica = replica or default_replica_id()
        self.lease_ttl_s = float(lease_ttl_s)
        self.claims = claims or FileRunClaims(self.state_dir)
        self._work_for: Callable[[RunRecord], Work] | None = None
        self._stopping = threading.Event()
        self._heartbeat()
        threading.Thread(
            target=self._heartbeat_loop, name=f"runs-lease-{self.replica}", daemon=True
        ).start()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._on_update = on_update
        self._owns_pool = executor is None
        self._pool = executor or ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="run"
        )
        self._lock = threading.RLock()
        self._records: dict[str, RunRecord] = {}
        self._contexts: dict[str, RunContext] = {}
        self._futures: dict[str, Future] = {}
        self._by_request: dict[str, str] = {}
        self._interrupted: set[str] = set()  # runs a shutdown left for resume
        for path in sorted(self.state_dir.glob("*.json")):
            record = RunRecord(**json.loads(path.read_text()))
            self._records[record.run_id] = record
            if record.request_id:
                self._by_request[record.request_id] = record.run_id
        RUNS_COLLECTOR.add(self)

    # -- submitting and querying -------------------------------------------------
    def submit(
        self,
        stage: str,
        work: Work,
        *,
        params: dict[str, Any] | None = None,
        request_id: str = "",
        pipeline: str = "",
        run_id: str | None = None,
        bounded: bool = False,
    ) -> RunRecord:
        """Start work; a repeated request_id returns the existing run instead.

        `bounded` (client requests): RunQueueFull when MAX_QUEUED_RUNS runs are already
        waiting or running. Work from events is never refused (it would be lost)."""
        with self._lock:
            if request_id:
                existing = self.find_by_request(request_id)
                if existing is not None:
                    return existing
            if bounded:
                waiting = sum(not r.done for r in self._records.values())
                if waiting >= MAX_QUEUED_RUNS:
                    raise RunQueueFull(
                        f"{waiting} runs are queued or running (limit {MAX_QUEUED_RUNS}); "
                        "retry in a few minutes"
                    )
            record = RunRecord(
                run_id=run_id or f"{stage}-{uuid.uuid4().hex[:12]}",
                stage=stage,
                params=dict(params or {}),
                request_id=request_id,
                pipeline=pipeline,
                owner=self.replica,
            )
            if request_id:
                winner = self._claim_request(request_id, record.run_id)
                if winner != record.run_id:  # another replica started it a moment ago
                    return self._await_record(winner)
            self._records[record.run_id] = record
            if request_id:
                self._by_request[request_id] = record.run_id
            self._save_and_notify(record)
            self._start(record, work)
            return record

    def get(self, run_id: str) -> RunRecord:
        """A run of this replica, or (read from the shared state) of another one."""
        with self._lock:
            if run_id in self._futures or run_id in self._contexts:
                return self._records[run_id]
            on_disk = self._read(run_id)
            if on_disk is not None:
                self._records[run_id] = on_disk
                return on_disk
            if run_id not in self._records:
                raise RunNotFound(run_id)
            return self._records[run_id]

    def find_by_request(self, request_id: str) -> RunRecord | None:
        """The run a request started, on this replica or (a client's retry that reached
        another replica) on any other."""
        with self._lock:
            run_id = self._by_request.get(request_id)
            if run_id is not None:
                return self.get(run_id)
            winner = self.claims.holder(self._request_claim(request_id))
            return self._await_record(winner) if winner else None

    def own_records(self) -> list[RunRecord]:
        """This replica's runs, from memory (what its metrics report: each replica is
        scraped on its own, so counting the others' runs would count them twice)."""
        with self._lock:
            return [r for r in self._records.values() if r.owner in (self.replica, "")]

    def list(self) -> list[RunRecord]:
        """Every run of every replica sharing the state directory."""
        with self._lock:
            return sorted(self._scan(), key=lambda r: r.created_at)

    def cancel(self, run_id: str, reason: str = "cancelled") -> RunRecord:
        record = self.get(run_id)
        if record.done:
            return record
        context = self._contexts.get(run_id)
        future = self._futures.get(run_id)
        if context is None and future is None:
            # Another replica runs it: leave it a note its next `report` reads.
            self.claims.note(f"{run_id}.cancel", reason[:1000])
            return record
        if context:
            context.cancelled.set()
            record.message = reason
        if future and future.cancel():  # never started
            self._finish(record, "cancelled", reason)
        return record

    def wait(self, run_id: str, timeout: float | None = None) -> RunRecord:
        future = self._futures.get(run_id)
        if future is not None:
            future.exception(timeout=timeout)  # waits; work errors are recorded, not raised
        return self.get(run_id)

    def resume_incomplete(self, work_for: Callable[[RunRecord], Work]) -> list[RunRecord]:
        """Restart the unfinished runs this replica owns, and those of replicas whose
        lease went stale (their work resumes from its checkpoint directory); a run
        started MAX_ATTEMPTS times already is failed. Called again on every heartbeat
        from then on, so a replica that dies later has its runs taken over too."""
        self._work_for = work_for
        resumed = []
        with self._lock:
            for record in self._scan():
                if record.done or record.run_id in self._futures:
                    continue
                if record.owner != self.replica:
                    if self._alive(record.owner) or not self._claim(record):
                        continue
                    log.warning(
                        "run %s: taking it over from replica %r (lease stale)",
                        record.run_id,
                        record.owner,
                    )
                self._records[record.run_id] = record
                if record.request_id:
                    self._by_request[record.request_id] = record.run_id
                if record.attempts >= MAX_ATTEMPTS:
                    log.error("run %s gave up after %d attempts", record.run_id, record.attempts)
                    self._finish(
                        record,
                        "failed",
                        f"gave up after {record.attempts} attempts: the process stopped "
                        "during each (resume it with a new request once the cause is fixed)",
                    )
                    continue
                log.info("resuming run %s (%s) after a restart", record.run_id, record.stage)
                record.message = "resumed after restart"
                self._start(record, work_for(record))
                resumed.append(record)
        return resumed

    def shutdown(self, wait: bool = True, grace_s: float | None = None) -> list[str]:
        """Stop for a restart: queued runs stay PENDING, running ones stop at their next
        `report` and are left PENDING ("interrupted"), to be resumed by the restarted
        process or another replica, never failed or cancelled.

        With `wait`, waits for the running ones up to `grace_s` seconds (None: without
        limit). A run still running then has a worker stuck where it cannot see the
        stop (a read from a hung network filesystem): it is recorded as interrupted all
        the same and its id returned; the caller's process must exit without joining
        that thread (`os._exit`), which the interpreter's exit would wait on forever."""
        self._stopping.set()
        with self._lock:
            for context in self._contexts.values():
                if not context.cancelled.is_set():  # a Cancel already asked stays one
                    context.interrupted = True
                    context.cancelled.set()
            futures = dict(self._futures)
        if self._owns_pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
        else:
            for future in futures.values():
                future.cancel()
        if not wait:
            return []
        wait_futures([f for f in futures.values() if not f.done()], timeout=grace_s)
        stuck = [run_id for run_id, future in futures.items() if not future.done()]
        for run_id in stuck:
            log.error("run %s: still running %ss after the stop; left for resume", run_id, grace_s)
            self._interrupt(self._records[run_id], counted=True)
        return stuck

    def checkpoint_dir(self, run_id: str) -> Path:
        return self.state_dir / "checkpoints" / run_id

    def taken_over(self, record: RunRecord) -> bool:
        """Whether another replica claimed this run after this one started it."""
        return self.claims.holder(f"{record.run_id}.{record.epoch + 1}") is not None

    @staticmethod
    def _request_claim(request_id: str) -> str:
        return f"request-{hashlib.sha256(request_id.encode()).hexdigest()[:32]}"

    def _claim_request(self, request_id: str, run_id: str) -> str:
        """The run that a request id starts, decided once across replicas: the first to
        claim `request-<digest>` names its run there."""
        return self.claims.claim(self._request_claim(request_id), run_id)

    def _await_record(self, run_id: str, timeout_s: float = 10.0) -> RunRecord:
        """A run another replica just claimed, once it has written its record."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.get(run_id)
            except RunNotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cancel_requested(self, record: RunRecord) -> bool:
        """Whether a Cancel reached another replica (see `cancel`)."""
        return self.claims.holder(f"{record.run_id}.cancel") is not None

    # -- replicas -----------------------------------------------------------------
    def _heartbeat(self) -> None:
        try:
            self.claims.renew(self.replica)
        except Exception as exc:  # a full disk, a database away: the lease ages, and
            # the runs may move to another replica
            log.error("replica lease of %s not renewed: %s", self.replica, exc)

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.lease_ttl_s / 3):
            self._heartbeat()
            if self._work_for is not None:
                try:
                    self.resume_incomplete(self._work_for)
                except Exception:
                    log.exception("taking over runs of stale replicas failed")

    def _alive(self, replica: str) -> bool:
        if replica == self.replica:
            return True
        if not replica or "/" in replica:
            return False  # a record from before replicas: no lease to renew
        age = self.claims.lease_age(replica)
        return age is not None and age < self.lease_ttl_s  # None: no lease, or unreadable

    def _claim(self, record: RunRecord) -> bool:
        """Take a run over: exactly one replica claims the next epoch."""
        if self.claims.claim(f"{record.run_id}.{record.epoch + 1}", self.replica) != self.replica:
            return False
        record.epoch += 1
        record.owner = self.replica
        record.message = f"taken over by {self.replica}"
        return True

    def _read(self, run_id: str) -> RunRecord | None:
        path = self.state_dir / f"{run_id}.json"
        if not _RUN_ID.fullmatch(run_id) or not path.is_file():
            return None
        try:
            return RunRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _scan(self) -> list[RunRecord]:
        """Every run in the shared state (this replica's running ones from memory)."""
        records = []
        for path in sorted(self.state_dir.glob("*.json")):
            run_id = path.stem
            if run_id in self._futures:
                records.append(self._records[run_id])
                continue
            record = self._read(run_id)
            if record is not None:
                records.append(record)
        return records

    # -- internals ----------------------------------------------------------------
    def _start(self, record: RunRecord, work: Work) -> None:
        context = RunContext(record, self.checkpoint_dir(record.run_id), self)
        context.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self._contexts[record.run_id] = context
        self._futures[record.run_id] = self._pool.submit(self._execute, context, work)

    def _execute(self, context: RunContext, work: Work) -> None:
        record = context.record
        record.state = "running"
        record.attempts += 1
        self._save_and_notify(record)
        before = record.message  # e.g. "resumed after restart": stale once the run ends
        try:
            result = work(context) or {}
        except RunCancelled:
            if context.interrupted:
                self._interrupt(record, counted=False)
            else:
                self._finish(record, "cancelled", record.message or "cancelled")
        except Exception as exc:  # the run fails visibly; the worker thread survives
            log.exception("run %s failed", record.run_id)
            self._finish(record, "failed", f"{type(exc).__name__}: {exc}")
        else:
            record.result = result
            # A note the work left (a candidate kept by a gate, and why) outlives the run.
            self._finish(record, "succeeded", record.message if record.message != before else "")

    def _interrupt(self, record: RunRecord, counted: bool) -> None:
        """Leave a run the shutdown stopped for resume (PENDING). Its attempt counts
        towards MAX_ATTEMPTS only when `counted`: a run that stopped at a `report` did
        nothing wrong, one whose worker hung past the grace period may hang again."""
        with self._lock:
            if record.run_id in self._interrupted or record.done:
                return  # already recorded, or it ended just before the grace period did
            self._interrupted.add(record.run_id)
            self._contexts.pop(record.run_id, None)
            if self.taken_over(record):
                return
            record.state = "pending"
            if not counted:
                record.attempts = max(0, record.attempts - 1)
            record.message = "interrupted: the service stopped; the run resumes on restart"
            self._save_and_notify(record)

    def _finish(self, record: RunRecord, state: str, message: str) -> None:
        if record.run_id in self._interrupted:
            return  # a stuck worker that came back after the shutdown left it for resume
        if self.taken_over(record):
            log.warning("run %s: another replica took it over; not finished here", record.run_id)
            self._contexts.pop(record.run_id, None)
            return
        record.state = state
        record.message = message
        RUNS_FINISHED.labels(self.service, state).inc()
        self._save_and_notify(record)
        self._contexts.pop(record.run_id, None)

    def _save_and_notify(self, record: RunRecord) -> None:
        record.updated_at = _now()
        try:
            self._write(record)
        except OSError as exc:
            # A full disk must not swallow a run's end (the record would say RUNNING
            # forever, and no FAILED event would go out): the status is still
            # published, and a final state is written again once the disk takes it.
            log.error("run %s: state not saved: %s", record.run_id, exc)
            if record.done:
                threading.Thread(target=self._write_later, args=(record,), daemon=True).start()
        if self._on_update is not None:
            try:
                self._on_update(record)
            except Exception:
                log.exception("run update callback failed for %s", record.run_id)

    def _write(self, record: RunRecord) -> None:
        if record.owner and record.owner != self.replica:
            return  # another replica's run: only its owner writes it
        path = self.state_dir / f"{record.run_id}.json"
        with self._lock:
            fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".run-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(asdict(record), handle, default=str)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    def _write_later(self, record: RunRecord, interval_s: float = 2.0, tries: int = 900) -> None:
        for _ in range(tries):
            time.sleep(interval_s)
            try:
                self._write(record)
            except OSError:
                continue
            log.info("run %s: state %s saved after all", record.run_id, record.state)
            return
