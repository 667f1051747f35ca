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
thumbs on generated texts and preferences between two continuations of one prompt come
from the held-out judge (a model that never steered training, never the reward model),
so the feedback carries information the platform did not produce itself.

The default pipeline, `reviews-en`, aligns SmolLM2-135M-Instruct with a MiniLM reward
on the English reviews shipped in the package; the report shows what the base model, the
first promoted version and the retrained version write for the same prompts and seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from rlhf.contract import SERVICES
from rlhf.runtime.service import (
    TOPIC_MODEL_PROMOTED,
    TOPIC_POLICY_CHECKPOINT_READY,
    TOPIC_RETRAIN_REQUESTED,
    TOPIC_REWARD_MODEL_READY,
    TOPIC_ROBUSTNESS_REPORT,
    TOPIC_RUN_PROGRESS,
    uri_path,
)
from rlhf.v1 import common_pb2
from rlhf.workflows.promotion import failed_gates

log = logging.getLogger(__name__)


class DemoError(RuntimeError):
    """A stage failed or a wait timed out; the message says which."""


@dataclass
class DemoOptions:
    pipeline: str = "reviews-en"
    quick: bool = False
    workdir: Path = Path("artifacts/demo")
    data_dir: Path | None = None
    device: str = "cpu"
    timeout_s: float = 3600.0
    duplicates: int = 5  # feedback events re-sent with the same id (client retries)
    seed: int = 1  # sampling seed of the side-by-side samples (base, v1, v2)
    max_new_tokens: int = 24  # length of the side-by-side samples
    feedback_tokens: int = 16  # length of the generated texts users give feedback on


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
    return _run_demo(options, console, show_progress)


def _run_demo(options: DemoOptions, console: Any, show_progress: bool) -> dict[str, Any]:
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
    if "RLHF_TORCH_THREADS" not in os.environ:
        # One process runs one stage at a time here: let it use every core (the
        # platform's default of 1 suits several service processes sharing the cores).
        overrides["torch_threads"] = os.cpu_count() or 1
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
            phases = {"platform_start": round_started - started, "round_1": round_minutes * 60}
            first_version = first.model.version
            mark = time.monotonic()
            served_first = _wait_served(client, first_version, options, spec.language)
            phases["serve_v1"], mark = time.monotonic() - mark, time.monotonic()

            # -- production traffic and feedback -----------------------------------------
            judge_version = next(
                (r.judge_version for r in reversed(observer.reward_ready) if r.judge_version), ""
            )
            judge = None
            if judge_version:
                registry = ModelRegistry(workdir / "registry")
                judge = load_classifier(uri_path(registry.get(judge_version).artifact.uri))
            feedback = _send_feedback(client, spec, served_first, judge, options)
            requests = observer.wait_for(
                lambda: observer.retrain_requests, options.timeout_s, "retrain.requested"
            )
            phases["feedback"], mark = time.monotonic() - mark, time.monotonic()
            # -- round 2: retraining from the promoted model --------------------------------
            # The round ends with a promoted version, or with a candidate the gates kept
            # (the platform doing its job: v1 goes on serving, and the report says why).
            second = observer.wait_for(
                lambda: (
                    [
                        p
                        for p in observer.policy_promotions(spec.name)
                        if p.model.version != first_version
                    ]
                    or _kept(observer, spec.name, first_version)
                ),
                options.timeout_s,
                "the retrained policy",
            )[0]
            second_version = second.model.version
            promoted_second = all(second.model.gates.values())
            phases["round_2"], mark = time.monotonic() - mark, time.monotonic()
            served_second = None
            if promoted_second:
                served_second = _wait_served(client, second_version, options, spec.language)
            time.sleep(1.0)  # late events (e.g. duplicate feedback) settle
            phases["serve_v2"], mark = time.monotonic() - mark, time.monotonic()
        registry = ModelRegistry(workdir / "registry")
        base = _local_samples(_base_policy_dir(spec, workdir), spec.language, options)
        if served_second is not None:
            second = served_second["samples"]
        else:  # kept by the gates: its text, decoded here, shows why
            kept_dir = uri_path(registry.get(second_version).artifact.uri)
            second = _local_samples(kept_dir, spec.language, options)
        phases["local_samples"] = time.monotonic() - mark
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
        report["samples"] = _side_by_side(served_first, second, base)
        report["phase_minutes"] = {k: round(v / 60, 2) for k, v in phases.items()}
        return report
    except grpc.RpcError as exc:
        raise DemoError(f"{exc.code().name}: {exc.details()}") from exc
    finally:
        client.close()
        platform.stop()


def _kept(observer: Observer, pipeline: str, first: str) -> list[Any]:
    """Retrained candidates the gates kept (not promoted), newest last."""
    promoted = {p.model.version for p in observer.promoted}
    kept = observer.rejected_candidates(pipeline, promoted)
    return [c for c in kept if c.model.version != first][-1:]


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


# The prompts of the side-by-side samples (base, v1, v2: same prompts, same seed).
DEMO_PROMPTS = {
    "zh": ["这家酒店", "质量"],
    "en": ["The movie was", "The hotel room was", "The food at this restaurant", "This phone"],
}
# Feedback kinds as the registry's lineage counts them (FeedbackWindow.counts).
FEEDBACK_KINDS = ("thumbs", "rating", "preference", "label", "prompt")
# What the report shows of a policy version (its registry lineage metrics).
POLICY_METRICS = (
    "judge_positive_rate_before",
    "judge_positive_rate_after",
    "reward_before",
    "reward_after",
    "kl_per_sequence",
    "ref_perplexity_ratio",
    "distinct_2",
    "repetition_rate",
)


def _wait_served(client: Any, version: str, options: DemoOptions, language: str) -> dict[str, Any]:
    """Generate until the response names `version` (inference loads it on model.promoted);
    the samples are the fixed prompts with the fixed seed."""
    deadline = time.monotonic() + options.timeout_s
    prompts = DEMO_PROMPTS[language]
    while True:
        try:
            reply = client.generate(
                prompts,
                max_new_tokens=options.max_new_tokens,
                temperature=0.8,
                seed=options.seed,
            )
            if reply.model_version == version:
                return {
                    "version": reply.model_version,
                    "request_id": reply.request_id,
                    "prompts": list(prompts),
                    "samples": [p + c for p, c in zip(prompts, reply.completions, strict=True)],
                }
        except Exception as exc:  # not loaded yet: UNAVAILABLE / NOT_FOUND
            log.debug("waiting for %s: %s", version, exc)
        if time.monotonic() > deadline:
            raise DemoError(f"inference never served {version}")
        time.sleep(1.0)


def _base_policy_dir(spec: Any, workdir: Path) -> Path | None:
    """The policy RL started from: the spec's base model, or what its pre-training / SFT
    stage wrote (the trainer's `models/<pipeline>/<stage>/<run>/model`)."""
    from rlhf.engine.models import resolve_model_dir

    base_stage = next((s for s in spec.stages if s.kind in ("pretrain", "sft")), None)
    if base_stage is not None:
        found = sorted((workdir / "models" / spec.name / base_stage.name).glob("*/model"))
        return found[-1] if found else None
    try:
        return resolve_model_dir(spec.models.policy)
    except Exception as exc:  # an unknown name: no base samples
        log.warning("no base policy for the samples: %s", exc)
        return None


def _local_samples(model_dir: Path | None, language: str, options: DemoOptions) -> list[str] | None:
    """A policy's samples for the fixed prompts, decoded here with the inference service's
    own sampler and the same settings and seed as the served versions: for the base
    model, and for a retrained candidate the gates kept (never served)."""
    from rlhf.serving.backend import PolicyEngine, Sampling

    if model_dir is None:
        return None
    prompts = DEMO_PROMPTS[language]
    rows = [
        Sampling(max_new_tokens=options.max_new_tokens, temperature=0.8, seed=options.seed)
        for _ in prompts
    ]
    try:
        engine = PolicyEngine(str(model_dir), device=options.device)
        completions = engine.generate(prompts, rows)
    except Exception as exc:  # the samples are an illustration: never fail the demo
        log.warning("no samples from %s: %s", model_dir, exc)
        return None
    return [p + c for p, c in zip(prompts, completions, strict=True)]


def _side_by_side(
    served_first: dict, second: list[str] | None, base: list[str] | None
) -> list[dict]:
    """One row per fixed prompt: what the base model, v1 and v2 wrote (prompt included;
    v2 is the kept candidate's text when the gates did not promote it)."""
    return [
        {
            "prompt": prompt,
            "base": base[i] if base else None,
            "v1": v1,
            "v2": second[i] if second else None,
        }
        for i, (prompt, v1) in enumerate(
            zip(served_first["prompts"], served_first["samples"], strict=True)
        )
    ]


def _traffic_records(workdir: Path) -> list[Any]:
    """Labelled training reviews of every prepared dataset: the simulated users' traffic.

    Never the validation split: its prompts are the ones the gates and the judge measure,
    and feedback prompts join the next round's PPO prompt pool, so traffic drawn from
    them would train v2 on its own test."""
    from rlhf.engine.data import load_dataset

    records = []
    for manifest in sorted((workdir / "datasets").glob("*/*/manifest.json")):
        split = load_dataset(manifest.parent).splits.get("train") or []
        records += [r for r in split if hasattr(r, "label")]
    return records


def _send_feedback(client, spec, served: dict, judge, options: DemoOptions) -> dict[str, Any]:
    """Exactly the trigger's count of feedback events, plus retried duplicates: about a
    third each of corrected labels, preference pairs and thumbs on generated texts. The
    held-out judge plays the user (thumbs, chosen vs rejected), never the reward model."""
    from rlhf.workflows.stages import prompts_from

    count = spec.retrain.trigger.count
    traffic = _traffic_records(options.workdir.resolve())
    source = spec.datasets[next(iter(spec.datasets))]
    prompts = prompts_from(traffic, source.prompt_words, spec.language) or list(
        DEMO_PROMPTS[spec.language]
    )
    by_kind: Counter[str] = Counter()
    ids: list[str] = []
    sent: list[tuple[tuple, dict]] = []  # what went out, for the retries below

    def send(request_id: str, version: str, kind: str, **fields: Any) -> None:
        feedback_id = f"demo-{kind}-{by_kind[kind]}"
        args = (request_id, version)
        fields = {"kind": kind, "pipeline": spec.name, "feedback_id": feedback_id, **fields}
        client.record_feedback(*args, **fields)
        sent.append((args, fields))
        by_kind[kind] += 1
        ids.append(feedback_id)

    # users correcting Classify answers: reviews with their true labels
    for record in traffic[: count // 3]:
        reply = client.classify([record.text])
        send(
            reply.request_id,
            reply.model_version,
            "label",
            prompt=record.text,
            response=reply.results[0].label,
            label=record.label,
            confidence=reply.results[0].score,
        )
    # preference pairs: two continuations of one prompt, the judge picks the better one
    cursor = 0
    wanted = count // 3 if judge is not None else 0
    for _attempt in range(3):
        if by_kind["preference"] >= wanted:
            break
        batch = [prompts[(cursor + k) % len(prompts)] for k in range(wanted)]
        cursor += len(batch)
        reply = client.generate(
            [p for p in batch for _ in range(2)],
            max_new_tokens=options.feedback_tokens,
            temperature=1.0,
        )
        for k, prompt in enumerate(batch):
            first, second = reply.completions[2 * k], reply.completions[2 * k + 1]
            if by_kind["preference"] >= wanted or first.strip() == second.strip():
                continue  # equal texts say nothing
            if not first.strip() or not second.strip():
                continue  # an empty answer (EOS at once) is no preference pair
            scores = judge.positive_scores([prompt + first, prompt + second]).tolist()
            chosen, rejected = (first, second) if scores[0] >= scores[1] else (second, first)
            send(
                reply.request_id,
                reply.model_version,
                "preference",
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
            )
    # thumbs on generated texts, judged by the held-out judge, up to the trigger's count
    while len(ids) < count:
        batch = [prompts[(cursor + k) % len(prompts)] for k in range(count - len(ids))]
        cursor += len(batch)
        reply = client.generate(batch, max_new_tokens=options.feedback_tokens, temperature=1.0)
        texts = [p + c for p, c in zip(batch, reply.completions, strict=True)]
        verdicts = judge.predict(texts) if judge is not None else None
        for k, (prompt, text) in enumerate(zip(batch, texts, strict=True)):
            send(
                reply.request_id,
                reply.model_version,
                "thumbs",
                prompt=prompt,
                response=text,
                thumbs_up=verdicts[k].label == "positive" if verdicts else True,
            )
    duplicates = 0
    for j in range(options.duplicates):  # a client retrying after a lost reply: the
        args, fields = sent[j % len(sent)]  # same request again, stored once
        client.record_feedback(*args, **fields)
        duplicates += 1
    return {
        "sent": len(ids),
        "duplicates": duplicates,
        "by_kind": {kind: by_kind[kind] for kind in FEEDBACK_KINDS},
    }


def _policy_metrics(registry: Any, version: str) -> dict[str, float | None]:
    metrics = registry.get(version).lineage.metrics
    return {k: round(metrics[k], 4) if k in metrics else None for k in POLICY_METRICS}


def _window_counts(registry: Any, version: str, sent: dict[str, int]) -> dict[str, int]:
    """Feedback by kind that trained `version`: its lineage's feedback windows when the
    registry records them, else what the demo sent."""
    lineage = registry.get(version).lineage
    windows = list(getattr(lineage, "feedback_windows", None) or [])
    if not windows:
        return dict(sent)
    counts: Counter[str] = Counter()
    for window in windows:
        window_counts = window["counts"] if isinstance(window, dict) else window.counts
        counts.update({str(k): int(v) for k, v in dict(window_counts).items()})
    return {kind: counts.get(kind, 0) for kind in FEEDBACK_KINDS} | dict(counts)


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
        if ready.stage in ("reward", "hardened", "retrain"):
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
    shown = ("reward_", "judge_", "kl_", "ref_perplexity_ratio", "distinct_2", "repetition_")
    policy = registry.get(first).lineage.metrics
    stages["policy"] = {k: round(v, 4) for k, v in policy.items() if k.startswith(shown)}
    retrained = registry.get(second).lineage.metrics
    stages["policy_retrained"] = {
        k: round(v, 4) for k, v in retrained.items() if k.startswith(shown)
    }
    first_metrics, second_metrics = (
        _policy_metrics(registry, first),
        _policy_metrics(registry, second),
    )
    judged = (
        first_metrics["judge_positive_rate_after"],
        second_metrics["judge_positive_rate_after"],
    )
    return {
        "pipeline": spec.name,
        "run_id": run_id,
        "promoted_version": first,
        "served": served_first,
        "policy": first_metrics,
        "samples": [],  # filled in by run_demo: base / v1 / v2 side by side
        "stages": dict(stages),
        "feedback": feedback,
        "retrain": {
            "triggered": retrain_count,
            # None when the gates kept the retrained candidate (v1 goes on serving).
            "promoted_version": second if served_second else None,
            "candidate_version": second,
            "failed_gates": failed_gates(
                dict(registry.get(second).gates), dict(registry.get(second).lineage.metrics)
            ),
            "served": served_second,
            "feedback": _window_counts(registry, second, feedback["by_kind"]),
            "judge_positive_rate_after": judged[1],
            "judge_improved": None if None in judged else judged[1] > judged[0],
            "policy": second_metrics,
        },
        "lineage": {first: lineage(first), second: lineage(second)},
        "first_round_minutes": round(round_minutes, 2),
        "minutes": round(seconds / 60, 2),
    }


def render_report(report: dict[str, Any], console: Any) -> None:
    """The readable report: samples side by side, then the metrics."""
    from rich.table import Table

    retrain = report["retrain"]
    first, second = report["promoted_version"], retrain["candidate_version"]
    samples = Table(title="what the policy writes (same prompts, same seed)", show_lines=True)
    samples.add_column("prompt", style="bold")
    samples.add_column("base model")
    samples.add_column(f"{first} (RLHF)")
    kept = retrain["promoted_version"] is None
    samples.add_column(f"{second} (+ feedback{', kept by the gates' if kept else ''})")
    for row in report["samples"]:
        prompt = row["prompt"]
        cells = [
            row[key][len(prompt) :] if row[key] and row[key].startswith(prompt) else row[key]
            for key in ("base", "v1", "v2")
        ]
        samples.add_row(prompt, *[("…" + " ".join(c.split())) if c else "-" for c in cells])
    console.print(samples)

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    policy, retrained = report["policy"], retrain["policy"]
    metrics = Table(title=f"rlhf demo: {report['pipeline']}")
    metrics.add_column("")
    metrics.add_column("base")
    metrics.add_column(first)
    metrics.add_column(second)
    metrics.add_row(
        "judge: positive rate (held out)",
        rate(policy["judge_positive_rate_before"]),
        rate(policy["judge_positive_rate_after"]),
        rate(retrained["judge_positive_rate_after"]),
    )
    metrics.add_row(
        "reward (reward model of the round)",
        rate(policy["reward_before"]),
        rate(policy["reward_after"]),
        rate(retrained["reward_after"]),
    )
    for key, label in (
        ("kl_per_sequence", "KL to the base model, nats/seq"),
        ("ref_perplexity_ratio", "perplexity under the base / its own"),
        ("distinct_2", "distinct bigrams"),
        ("repetition_rate", "repetition rate"),
    ):
        metrics.add_row(label, "", rate(policy[key]), rate(retrained[key]))
    console.print(metrics)
    stages = Table(title="stages")
    stages.add_column("stage")
    stages.add_column("metrics")
    for stage, values in report["stages"].items():
        if not stage.startswith("policy"):
            stages.add_row(stage, ", ".join(f"{k}={v}" for k, v in values.items()))
    console.print(stages)
    feedback = report["feedback"]
    kinds = ", ".join(f"{n} {k}" for k, n in retrain["feedback"].items() if n)
    console.print(
        f"feedback: {feedback['sent']} events ({kinds}; +{feedback['duplicates']} retried "
        f"duplicates) -> {retrain['triggered']} retrain.requested -> [bold]{second}[/bold]"
    )
    if kept:
        console.print(
            f"{second} was kept, not promoted: {retrain['failed_gates']}; {first} goes on "
            "serving (the gates judge the same held-out prompts before and after)"
        )
    console.print(f"done in {report['minutes']} min; lineage: rlhf models show {second}")


__all__ = ["DemoOptions", "DemoError", "run_demo", "render_report"]
