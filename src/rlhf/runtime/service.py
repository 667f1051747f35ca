"""What every service process holds: settings, event bus, model registry, runs.

A service builds one `ServiceContext`, subscribes its event handlers to `ctx.bus`,
and hands long work to `ctx.runs` (progress goes out as `run.progress` events). In
`rlhf demo` the five services share one in-process bus and one artifact directory;
in a cluster each process has its own context over Kafka and a shared volume.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from rlhf.registry import ModelRegistry
from rlhf.runtime.bus import topics
from rlhf.runtime.platform_metrics import PROMOTIONS, ROLLBACKS
from rlhf.runtime.runs import RunManager, RunRecord
from rlhf.runtime.settings import Settings
from rlhf.v1 import events_pb2

log = logging.getLogger(__name__)

# Topic names for the services (defined once, in rlhf.runtime.bus.topics).
TOPIC_DATASET_PREPARED = topics.DATASET_PREPARED
TOPIC_REWARD_MODEL_READY = topics.REWARD_MODEL_READY
TOPIC_ADVERSARIAL_BATCH_READY = topics.ADVERSARIAL_BATCH_READY
TOPIC_ROBUSTNESS_REPORT = topics.ROBUSTNESS_REPORT
TOPIC_POLICY_CHECKPOINT_READY = topics.POLICY_CHECKPOINT_READY
TOPIC_MODEL_PROMOTED = topics.MODEL_PROMOTED
TOPIC_RUN_PROGRESS = topics.RUN_PROGRESS
TOPIC_FEEDBACK_RECORDED = topics.FEEDBACK_RECORDED
TOPIC_RETRAIN_REQUESTED = topics.RETRAIN_REQUESTED


def uri_path(uri: str) -> Path:
    """Local path of a file:// artifact URI (or of a plain path)."""
    return Path(uri.removeprefix("file://"))


@dataclass
class ServiceContext:
    name: str
    settings: Settings
    bus: object  # rlhf.runtime.bus.EventBus
    # One worker pool shared by every service of a process (see RunManager); None gives
    # this service its own single worker.
    executor: ThreadPoolExecutor | None = None
    registry: ModelRegistry = field(init=False)
    runs: RunManager = field(init=False)
    closed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        self.registry = ModelRegistry(
            self.artifact_dir / "registry", database=self.settings.store.postgres_url
        )
        claims = None  # claim and lease files in the runs' state directory
        if self.settings.store.postgres_url:
            from rlhf.runtime.run_claims import DatabaseRunClaims
            from rlhf.store import open_database

            claims = DatabaseRunClaims(open_database(self.settings.store.postgres_url), self.name)
        self.runs = RunManager(
            self.state_dir / "runs",
            on_update=self._publish_progress,
            executor=self.executor,
            service=self.name,
            lease_ttl_s=self.settings.run_lease_ttl_s,
            claims=claims,
        )

    @property
    def artifact_dir(self) -> Path:
        return Path(self.settings.artifact_dir).resolve()

    @property
    def data_roots(self) -> tuple[Path, ...]:
        """Where client-named source files may live: the data directory and the artifact
        store's `uploads/` (nothing else on the volume, e.g. state or tokens)."""
        return (Path(self.settings.data_dir), self.artifact_dir / "uploads")

    @property
    def datasets_root(self) -> Path:
        """Where prepared datasets live: the only place RPCs may name a dataset."""
        return self.artifact_dir / "datasets"

    @property
    def state_dir(self) -> Path:
        """Private state of this service (runs, dedupe records, feedback)."""
        path = self.artifact_dir / "state" / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def store_target(self, filename: str) -> str | Path:
        """Where one of this service's stores keeps its state: the PostgreSQL database
        of `store.url` when set (shared by the replicas), else `filename` in the state
        directory (SQLite). Pass it to the store, which opens its own connection."""
        return self.settings.store.postgres_url or self.state_dir / filename

    def publish(
        self, topic: str, message: Message, key: str | None = None, event_id: str | None = None
    ) -> str:
        """Publish as this service; `event_id` (`RunContext.event_id`) for an event a
        resumed run may publish again, so consumers dedupe it (default: a fresh id)."""
        return self.bus.publish(
            topic, message, key=key, source=f"rlhf/{self.name}", event_id=event_id
        )

    def publish_promotion(
        self,
        version: str,
        run_id: str,
        pipeline: str,
        canary_percent: int,
        reason: str = "",
        event_id: str | None = None,
    ):
        """Promote `version` in the registry and announce it (`model.promoted`), the one
        path every promotion takes, so inference loads, canaries and rolls back any
        version alike, whichever service promoted it. Returns the promoted version.
        A run passes `event_id` (`RunContext.event_id`): promoting again on resume is a
        no-op in the registry, and the repeated event is dropped as a duplicate."""
        previous = self.registry.promote(version, reason=reason or "gates passed")
        model = self.registry.get(version)
        event = events_pb2.ModelPromoted(
            run_id=run_id,
            stage="promote",
            pipeline=pipeline,
            previous_version=previous.version if previous else "",
            canary_percent=canary_percent,
        )
        event.model.CopyFrom(model)
        self.publish(TOPIC_MODEL_PROMOTED, event, key=model.name, event_id=event_id)
        PROMOTIONS.labels(pipeline, model.name).inc()
        if run_id.startswith("rollback-"):
            ROLLBACKS.labels(model.name).inc()
        return model

    def run_status(self, run_id: str):
        """A run's status for GetRun RPCs; NOT_FOUND when the id is unknown."""
        from rlhf.runtime.grpc.errors import NotFound
        from rlhf.runtime.runs import RunNotFound

        try:
            return self.runs.get(run_id).to_proto()
        except RunNotFound:
            raise NotFound(f"run {run_id!r} does not exist") from None

    def submit_request(self, stage: str, work, request, params: dict, **kwargs):
        """Start a run for a client request (its `request_id` makes retries idempotent,
        its `pipeline` labels the run): RESOURCE_EXHAUSTED (with a retry hint) when the
        run queue is full, instead of queueing without bound."""
        from rlhf.runtime.grpc.errors import ResourceExhausted
        from rlhf.runtime.runs import RunQueueFull

        try:
            return self.runs.submit(
                stage,
                work,
                params=params,
                request_id=request.request_id,
                pipeline=request.pipeline,
                bounded=True,
                **kwargs,
            )
        except RunQueueFull as exc:
            raise ResourceExhausted(str(exc)) from None

    def subscribe(self, topic: str, handler) -> None:
        self.bus.subscribe(topic, f"rlhf-{self.name}", handler)

    def _publish_progress(self, record: RunRecord) -> None:
        if self.closed:  # a run cancelled at shutdown: the bus may be gone already
            return
        event = events_pb2.RunProgress(service=self.name, pipeline=record.pipeline)
        event.status.CopyFrom(record.to_proto())
        self.publish(TOPIC_RUN_PROGRESS, event, key=record.run_id)

    def close(self, wait: bool = False) -> list[str]:
        """Stop the runs for resume (`RunManager.shutdown`). With `wait`, waits up to
        `settings.run_shutdown_grace_s` and returns the runs whose worker is stuck: the
        process must then exit with `exit_leaving_threads`."""
        self.closed = True
        return self.runs.shutdown(wait=wait, grace_s=self.settings.run_shutdown_grace_s)


def exit_leaving_threads(code: int) -> None:
    """Exit now, without joining the worker threads (the interpreter's exit waits for
    every thread of a ThreadPoolExecutor, forever for one stuck on a hung read): the
    stopping service saved its state already; logs are flushed first."""
    import os
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def watch_bus_health(server, bus, interval_s: float = 2.0) -> None:
    """Keep the server's health in step with its bus: when a consumer died for good the
    service no longer handles its events, so every service on the server turns
    NOT_SERVING (the liveness probe restarts the pod) until the bus is healthy again."""
    import asyncio

    last = True
    while True:
        healthy = bus.healthy()
        if healthy != last:
            if not healthy:
                log.error("event consumers down: %s; health NOT_SERVING", bus.dead_consumers())
            for name in server.services:
                await server.set_serving(name, healthy)
            last = healthy
        await asyncio.sleep(interval_s)
