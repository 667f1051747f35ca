"""`rlhf demo`: the whole platform in one process, driven through its public gRPC API.

The five services run on one gRPC server (one port) over one in-process event bus and
a local artifact directory, exactly the code the cluster runs one-per-Deployment. The
demo then behaves like a production user:

1. `PrepareDataset(pipeline)` starts a round: data prep -> reward model (classifier and
   held-out judge) -> adversarial attack and hardening -> RL on the policy -> gates ->
   promotion -> inference loads the new version (all by events).
2. `Generate` and `Classify` answer from the promoted version.
3. Feedback arrives through `RecordFeedback` (with retried duplicates); the trigger
   policy emits one `retrain.requested`; a new round trains, gates and promotes a new
   version; inference serves it (the version in responses changes).

Simulated users: corrected labels come from held-out reviews with their true labels;
thumbs on generated texts come from the held-out judge (a model that never steered
training), so the feedback carries information the platform did not produce itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from rlhf.runtime.service import (
    TOPIC_MODEL_PROMOTED,
    TOPIC_POLICY_CHECKPOINT_READY,
    TOPIC_RETRAIN_REQUESTED,
    TOPIC_REWARD_MODEL_READY,
    TOPIC_ROBUSTNESS_REPORT,
    TOPIC_RUN_PROGRESS,
)
from rlhf.v1 import common_pb2

log = logging.getLogger(__name__)

SERVICES = ("dataprep", "reward", "adversary", "trainer", "inference")


class DemoError(RuntimeError):
    """A stage failed or a wait timed out; the message says which."""


@dataclass
class DemoOptions:
    pipeline: str = "sentiment-zh"
    quick: bool = False
    workdir: Path = Path("artifacts/demo")
    data_dir: Path | None = None
    device: str = "cpu"
    timeout_s: float = 3600.0
    duplicates: int = 5  # feedback events re-sent with the same id (client retries)


@dataclass
class Observer:
    """Collects the events the demo reports on, and wakes waiters."""

    promoted: list[Any] = field(default_factory=list)
    checkpoints: list[Any] = field(default_factory=list)
    retrain_requests: list[Any] = field(default_factory=list)
    reward_ready: list[Any] = field(default_factory=list)
    robustness: list[Any] = field(default_factory=list)
    runs: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def attach(self, bus: Any) -> None:
        topics = {
            TOPIC_MODEL_PROMOTED: self.promoted,
            TOPIC_POLICY_CHECKPOINT_READY: self.checkpoints,
            TOPIC_RETRAIN_REQUESTED: self.retrain_requests,
            TOPIC_REWARD_MODEL_READY: self.reward_ready,
            TOPIC_ROBUSTNESS_REPORT: self.robustness,
        }
        for topic, sink in topics.items():
            bus.subscribe(topic, "rlhf-demo", self._appender(sink))
        bus.subscribe(TOPIC_RUN_PROGRESS, "rlhf-demo", self._on_progress)

    def _appender(self, sink: list):
        def handle(event: Any) -> None:
            with self.changed:
                sink.append(event.payload)
                self.changed.notify_all()

        return handle

    def _on_progress(self, event: Any) -> None:
        status = event.payload.status
        with self.changed:
            self.runs[status.run_id] = event.payload
            if status.state == common_pb2.RUN_STATE_FAILED:
                self.failures.append(
                    f"{event.payload.service} run {status.run_id}: {status.message}"
                )
            self.changed.notify_all()

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                if self.failures:
                    raise DemoError("; ".join(self.failures))
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
                self.changed.wait(min(left, 1.0))

    def policy_promotions(self, pipeline: str) -> list[Any]:
        return [p for p in self.promoted if p.model.name == f"{pipeline}-policy"]

    def rejected_candidates(self, pipeline: str, promoted: set[str]) -> list[Any]:
        return [
            c
            for c in self.checkpoints
            if c.model.name == f"{pipeline}-policy"
            and c.model.version not in promoted
            and not all(c.model.gates.values())
        ]


class PlatformInProcess:
    """The five services on one gRPC server over one in-process bus (a thread)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.port: int | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._contexts: list[Any] = []
        from rlhf.runtime.bus import BusOptions, InProcessBroker, InProcessBus

        self.bus = InProcessBus(
            source="rlhf/demo",
            options=BusOptions(state_dir=Path(settings.artifact_dir) / ".bus", start_timeout_s=5),
            broker=InProcessBroker(),  # its own, so two platforms in one process stay apart
        )
        self._thread = threading.Thread(target=self._run, name="platform", daemon=True)

    def start(self, observer: Observer, timeout: float = 600) -> int:
        observer.attach(self.bus)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise DemoError("the platform did not start in time")
        if self._error is not None:
            raise DemoError(f"the platform failed to start: {self._error}") from self._error
        return self.port

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the caller through start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        import importlib

        from rlhf.runtime.grpc.server import GrpcServer
        from rlhf.runtime.service import ServiceContext

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = GrpcServer(self.settings.grpc, "rlhf-demo")
        # One worker for all services: stages run one after another (2 CPU cores gain
        # nothing from overlap, and model loading is not thread-safe).
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage")
        for name in SERVICES:
            module = importlib.import_module(f"rlhf.services.{name}.server")
            ctx = ServiceContext(name, self.settings, self.bus, executor=worker)
            self._contexts.append(ctx)
            result = module.register(server, ctx)
            if asyncio.iscoroutine(result):
                await result
        await asyncio.to_thread(self.bus.start)
        self.port = await server.start()
        self._ready.set()
        await self._stop.wait()
        await server.stop(grace=1.0)
        for ctx in self._contexts:
            ctx.close()
        worker.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.bus.close)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


@contextlib.contextmanager
def _progress(console: Any, observer: Observer, enabled: bool) -> Iterator[None]:
    """Progress bars driven by run.progress events (one bar per run)."""
    if not enabled:
        yield
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, int] = {}
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(0.5):
            with observer.changed:
                runs = list(observer.runs.values())
            for event in runs:
                status = event.status
                if status.run_id not in tasks:
                    tasks[status.run_id] = progress.add_task(
                        f"{event.service}: {status.stage}", total=None, info=""
                    )
                state = common_pb2.RunState.Name(status.state).removeprefix("RUN_STATE_").lower()
                done = status.state == common_pb2.RUN_STATE_SUCCEEDED
                total = status.total_steps or None
                progress.update(
                    tasks[status.run_id],
                    total=total if not done else max(status.step, 1),
                    completed=status.step if not done else max(status.step, 1),
                    info=state,
                )

    with progress:
        worker = threading.Thread(target=refresh, daemon=True)
        worker.start()
        try:
            yield
        finally:
            stop.set()
            worker.join()


def run_demo(options: DemoOptions, console: Any, show_progress: bool = True) -> dict[str, Any]:
    """Run the demo and return its report (one JSON-able dict)."""
    from rlhf.client import Client
    from rlhf.engine.classifier import load_classifier
    from rlhf.pipelines import load_pipeline
    from rlhf.registry import ModelRegistry
    from rlhf.runtime.settings import load_settings
    from rlhf.services.inference.settings import InferenceSettings

    started = time.monotonic()
    spec = load_pipeline(options.pipeline, quick=options.quick)
    workdir = options.workdir.resolve()
    overrides: dict[str, Any] = {
        "artifact_dir": workdir,
        "bus": "inprocess",
        "device": options.device,
        "grpc": {"host": "127.0.0.1", "port": 0},
    }
    if options.data_dir is not None:
        overrides["data_dir"] = options.data_dir
    settings = load_settings(InferenceSettings, **overrides)
    observer = Observer()
    platform = PlatformInProcess(settings)
    console.print(
        f"[bold]rlhf demo[/bold]: pipeline {spec.name}{' (quick)' if options.quick else ''}, "
        f"artifacts in {workdir}"
    )
    port = platform.start(observer)
    target = f"127.0.0.1:{port}"
    client = Client(dataprep=target, trainer=target, inference=target, timeout=120)
    try:
        with _progress(console, observer, show_progress):
            # -- round 1: data -> reward -> adversarial -> RL -> gates -> promotion -------
            round_started = time.monotonic()
            run_id = client.prepare(pipeline=spec.name, profile="quick" if options.quick else "")
            first = observer.wait_for(
                lambda: observer.policy_promotions(spec.name) or _rejected(observer, spec.name),
                options.timeout_s,
                "the first promoted policy",
            )[0]
            round_minutes = (time.monotonic() - round_started) / 60
            first_version = first.model.version
            served_first = _wait_served(client, first_version, options.timeout_s, spec.language)

            # -- production traffic and feedback -----------------------------------------
            judge_version = next(
                (r.judge_version for r in reversed(observer.reward_ready) if r.judge_version), ""
            )
            judge = None
            if judge_version:
                registry = ModelRegistry(workdir / "registry")
                judge = load_classifier(
                    registry.get(judge_version).artifact.uri.removeprefix("file://")
                )
            feedback = _send_feedback(client, spec, served_first, judge, options)
            requests = observer.wait_for(
                lambda: observer.retrain_requests, options.timeout_s, "retrain.requested"
            )
            # -- round 2: retraining from the promoted model --------------------------------
            second = observer.wait_for(
                lambda: (
                    [
                        p
                        for p in observer.policy_promotions(spec.name)
                        if p.model.version != first_version
                    ]
                    or _rejected(observer, spec.name, after=first_version)
                ),
                options.timeout_s,
                "the retrained policy",
            )[0]
            second_version = second.model.version
            served_second = _wait_served(client, second_version, options.timeout_s, spec.language)
            time.sleep(1.0)  # late events (e.g. duplicate feedback) settle
        registry = ModelRegistry(workdir / "registry")
        report = _report(
            spec,
            run_id,
            registry,
            observer,
            first_version,
            second_version,
            served_first,
            served_second,
            feedback,
            len(observer.retrain_requests),
            round_minutes,
            time.monotonic() - started,
        )
        report["retrain"]["window_id"] = requests[0].window_id
        return report
    except grpc.RpcError as exc:
        raise DemoError(f"{exc.code().name}: {exc.details()}") from exc
    finally:
        client.close()
        platform.stop()


def _rejected(observer: Observer, pipeline: str, after: str = "") -> list[Any]:
    """A candidate that failed a gate ends the wait with an explanation."""
    promoted = {p.model.version for p in observer.promoted}
    rejected = [
        c
        for c in observer.rejected_candidates(pipeline, promoted)
        if not after or c.model.version != after
    ]
    if rejected:
        gates = dict(rejected[-1].model.gates)
        failed = sorted(k for k, ok in gates.items() if not ok)
        raise DemoError(
            f"candidate {rejected[-1].model.version} failed the promotion gates {failed}: "
            f"{dict(rejected[-1].model.lineage.metrics)}"
        )
    return []


DEMO_PROMPTS = {"zh": ["这家酒店", "质量"], "en": ["The movie was", "I think this film"]}


def _wait_served(client: Any, version: str, timeout: float, language: str) -> dict[str, Any]:
    """Generate until the response names `version` (inference loads it on model.promoted)."""
    deadline = time.monotonic() + timeout
    prompts = DEMO_PROMPTS[language]
    while True:
        try:
            reply = client.generate(prompts, max_new_tokens=24, temperature=0.8, seed=1)
            if reply.model_version == version:
                return {
                    "version": reply.model_version,
                    "request_id": reply.request_id,
                    "samples": [p + c for p, c in zip(prompts, reply.completions, strict=True)],
                }
        except Exception as exc:  # not loaded yet: UNAVAILABLE / NOT_FOUND
            log.debug("waiting for %s: %s", version, exc)
        if time.monotonic() > deadline:
            raise DemoError(f"inference never served {version}")
        time.sleep(1.0)


def _send_feedback(client, spec, served: dict, judge, options: DemoOptions) -> dict[str, int]:
    """Enough feedback to fire the trigger once, plus retried duplicates."""
    from rlhf.engine.data import load_dataset
    from rlhf.workflows.stages import prompts_from

    count = spec.retrain.trigger.count
    datasets = sorted((options.workdir.resolve() / "datasets").glob("*/*/manifest.json"))
    held_out = []
    for manifest in datasets:
        split = load_dataset(manifest.parent).splits.get("validation") or []
        held_out += [r for r in split if hasattr(r, "label")]
    sent = duplicates = 0
    labels = held_out[: count // 2]
    for i, record in enumerate(labels):  # users correcting Classify answers
        reply = client.classify([record.text])
        client.record_feedback(
            reply.request_id,
            reply.model_version,
            kind="label",
            prompt=record.text,
            response=reply.results[0].label,
            label=record.label,
            pipeline=spec.name,
            confidence=reply.results[0].score,
            feedback_id=f"demo-label-{i}",
        )
        sent += 1
    prompts = prompts_from(
        held_out, spec.datasets[next(iter(spec.datasets))].prompt_words, spec.language
    ) or ["The movie"]
    i = 0
    while sent < count:  # thumbs on generated texts, judged by the held-out judge
        prompt = prompts[i % len(prompts)]
        reply = client.generate([prompt], max_new_tokens=24, temperature=1.0)
        text = prompt + reply.completions[0]
        thumbs_up = judge.predict([text])[0].label == "positive" if judge else True
        client.record_feedback(
            reply.request_id,
            reply.model_version,
            kind="thumbs",
            prompt=prompt,
            response=text,
            thumbs_up=thumbs_up,
            pipeline=spec.name,
            feedback_id=f"demo-thumbs-{i}",
        )
        sent += 1
        i += 1
    for j in range(options.duplicates):  # a client retrying after a lost reply
        client.record_feedback(
            "retry",
            served["version"],
            kind="thumbs",
            prompt="retry",
            response="retry",
            thumbs_up=True,
            pipeline=spec.name,
            feedback_id=f"demo-thumbs-{j}",
        )
        duplicates += 1
    return {"sent": sent, "duplicates": duplicates}


def _report(
    spec,
    run_id,
    registry,
    observer,
    first,
    second,
    served_first,
    served_second,
    feedback,
    retrain_count,
    round_minutes,
    seconds,
) -> dict[str, Any]:
    def lineage(version: str) -> dict[str, Any]:
        model = registry.get(version)
        return {
            "version": model.version,
            "parent": model.lineage.parent_version,
            "reward_model": model.lineage.reward_model_version,
            "datasets": [d.uri for d in model.lineage.datasets],
            "gates": dict(model.gates),
            "metrics": dict(model.lineage.metrics),
        }

    stages: dict[str, dict[str, float]] = defaultdict(dict)
    for ready in observer.reward_ready:
        if ready.stage in ("reward", "hardened"):
            stages[f"reward_model_{ready.stage}"] = {
                k: round(v, 4)
                for k, v in ready.metrics.items()
                if k.endswith(("accuracy", "macro_f1")) and not k.startswith("eval_")
            }
    for report in observer.robustness:
        stages[f"robustness_{report.stage}"] = {
            "clean_accuracy": round(report.clean_accuracy, 4),
            "robust_accuracy": round(report.robust_accuracy, 4),
            "attack_success_rate": round(report.attack_success_rate, 4),
            "mean_edits": round(report.mean_edits, 3),
        }
    policy = registry.get(first).lineage.metrics
    stages["policy"] = {
        k: round(v, 4) for k, v in policy.items() if k.startswith(("reward_", "judge_", "kl_"))
    }
    retrained = registry.get(second).lineage.metrics
    stages["policy_retrained"] = {
        k: round(v, 4) for k, v in retrained.items() if k.startswith(("reward_", "judge_", "kl_"))
    }
    return {
        "pipeline": spec.name,
        "run_id": run_id,
        "promoted_version": first,
        "served": served_first,
        "stages": dict(stages),
        "feedback": feedback,
        "retrain": {
            "triggered": retrain_count,
            "promoted_version": second,
            "served": served_second,
        },
        "lineage": {first: lineage(first), second: lineage(second)},
        "first_round_minutes": round(round_minutes, 2),
        "minutes": round(seconds / 60, 2),
    }


def render_report(report: dict[str, Any], console: Any) -> None:
    """The readable table."""
    from rich.table import Table

    table = Table(title=f"rlhf demo: {report['pipeline']}", show_lines=False)
    table.add_column("stage")
    table.add_column("metrics")
    for stage, metrics in report["stages"].items():
        table.add_row(stage, ", ".join(f"{k}={v}" for k, v in metrics.items()))
    console.print(table)
    console.print(
        f"promoted: [bold]{report['promoted_version']}[/bold] -> sample: "
        f"{report['served']['samples'][0]!r}"
    )
    retrain = report["retrain"]
    console.print(
        f"feedback: {report['feedback']['sent']} events "
        f"(+{report['feedback']['duplicates']} retried duplicates) -> "
        f"{retrain['triggered']} retrain.requested -> [bold]{retrain['promoted_version']}"
        f"[/bold] served: {retrain['served']['samples'][0]!r}"
    )
    console.print(
        f"done in {report['minutes']} min; lineage: rlhf models show {retrain['promoted_version']}"
    )


__all__ = ["DemoOptions", "DemoError", "run_demo", "render_report"]
