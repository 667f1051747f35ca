"""The `compress` stage: a smaller or faster copy of a trained model, gated on quality.

A compress stage follows the stage whose model it compresses (`config.source`, by
default the nearest model-producing stage before it) and runs one method:

- `int8` (classifiers and policies): dynamic int8 Linear layers, CPU kernels;
- `weight_int8` (policies): int8 weights, bf16 activations;
- `distill` (classifiers): a `student_layers`-layer student on the teacher's soft labels;
- `prune` (classifiers): heads and FFN channels removed by importance, then a recovery
  fine-tune.

Classifiers are the models of classifier, judge and adversarial (hardened) stages;
policies those of pretrain, sft, ppo, rloo, grpo and dpo stages. A pairwise reward
model is not supported yet (its quality is pairwise accuracy on preference pairs).

It measures the task metric (classifiers: accuracy on the held-out split; policies:
perplexity of held-out text) of the source and of the compressed model in the same
run, with size on disk, peak memory, latency and throughput. `register_compressed`
records the result as a new version of the source's model (lineage: parent = source)
and promotes it only when the quality drop is within `max_quality_drop` (and the
source's own recorded gates passed); otherwise the source keeps serving and the failed
gate carries the numbers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.pipelines import PipelineError, PipelineSpec, Stage, load_named_pipeline
from rlhf.runtime.runs import run_key
from rlhf.runtime.service import TOPIC_MODEL_PROMOTED, uri_path
from rlhf.workflows.stages import StageResult, _floats, _no_report

log = logging.getLogger(__name__)

CLASSIFIER_SOURCES = {"classifier", "judge", "adversarial"}
POLICY_SOURCES = {"pretrain", "sft", "ppo", "rloo", "grpo", "dpo"}
SUPPORTED: dict[str, set[str]] = {
    "int8": CLASSIFIER_SOURCES | POLICY_SOURCES,
    "weight_int8": POLICY_SOURCES,
    "distill": CLASSIFIER_SOURCES,
    "prune": CLASSIFIER_SOURCES,
}


@dataclass
class CompressConfig:
    """A compress stage's `config:` block."""

    method: str = "int8"  # int8, weight_int8, distill, prune (see the module table)
    source: str | None = None  # stage whose model is compressed; None: the nearest before
    max_quality_drop: float | None = None  # overrides gates.max_quality_drop for this stage
    calibration: str | None = None  # dataset key of the held-out set; None: the stage's data
    calibration_size: int = 256  # held-out examples scored (and texts timed); >= 1
    unlabelled: str | None = None  # dataset key whose texts join distillation unlabelled
    student_layers: int = 2  # distill: encoder layers of the student
    head_fraction: float = 0.5  # prune: share of attention heads removed per layer
    ffn_fraction: float = 0.5  # prune: share of FFN channels removed per layer
    temperature: float = 2.0  # distill / prune recovery: softmax temperature
    hard_weight: float = 0.5  # distill / prune recovery: weight of CE on known labels
    learning_rate: float = 1e-4  # distill / prune recovery learning rate
    batch_size: int = 32  # distill / prune recovery batch size
    epochs: float = 1.0  # distill / prune recovery passes over the training texts
    total_steps: int | None = None  # distill / prune recovery steps (overrides epochs)
    time_limit_s: float | None = 600.0  # distill / prune recovery wall-clock budget
    max_train_texts: int = 20000  # texts labelled by the teacher (cost: one forward each)
    speed_batch_size: int = 32  # throughput is measured at this batch, one call in flight
    speed_rounds: int = 3  # interleaved timing rounds (medians reported)
    measure_memory: bool = True  # peak RSS of a fresh process per model (slower)
    seed: int = 0


# -- validation ------------------------------------------------------------------------
def source_stage(spec: PipelineSpec, index: int, config: CompressConfig) -> Stage | None:
    """The stage whose model stage `index` compresses (None when there is none)."""
    earlier = spec.stages[:index]
    if config.source is not None:
        return next((s for s in earlier if s.name == config.source), None)
    producing = CLASSIFIER_SOURCES | POLICY_SOURCES | {"reward"}
    return next((s for s in reversed(earlier) if s.kind in producing), None)


def compress_problems(spec: PipelineSpec) -> list[str]:
    """Each bad value of a compress stage, named by its path (checked before any run)."""
    problems = []
    fields = {f.name for f in dataclasses.fields(CompressConfig)}
    for index, stage in enumerate(spec.stages):
        if stage.kind != "compress":
            continue
        where = f"stages[{index}].config"
        try:
            config = CompressConfig(**{k: v for k, v in stage.config.items() if k in fields})
        except TypeError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if config.method not in SUPPORTED:
            problems.append(f"{where}.method: {config.method!r} is not one of {sorted(SUPPORTED)}")
            continue
        source = source_stage(spec, index, config)
        if source is None:
            named = f"no stage {config.source!r} before it" if config.source else "none before it"
            problems.append(f"{where}.source: a compress stage needs a model stage ({named})")
        elif source.kind not in SUPPORTED[config.method]:
            fits = sorted(m for m, kinds in SUPPORTED.items() if source.kind in kinds)
            problems.append(
                f"{where}.method: {config.method!r} does not support a {source.kind} model "
                f"(stage {source.name!r}); supported kinds: {sorted(SUPPORTED[config.method])}"
                + (f"; methods for {source.kind}: {fits}" if fits else "")
            )
        bound = (
            config.max_quality_drop
            if config.max_quality_drop is not None
            else spec.gates.max_quality_drop
        )
        if bound is None:
            problems.append(
                f"{where}.max_quality_drop: no bound (set it here or in gates.max_quality_drop)"
            )
        elif not 0 <= bound < 1:
            field = "max_quality_drop" if config.max_quality_drop is not None else None
            path = f"{where}.{field}" if field else "gates.max_quality_drop"
            problems.append(
                f"{path}: {bound} cannot be met or checked: it must be in [0, 1) (accuracy "
                "points as a fraction, or the relative perplexity increase)"
            )
        if config.calibration_size < 1:
            problems.append(
                f"{where}.calibration_size: {config.calibration_size}: the calibration set "
                "would be empty (needs >= 1 held-out example)"
            )
        for key in ("calibration", "unlabelled"):
            value = getattr(config, key)
            if value is not None and value not in spec.datasets:
                problems.append(
                    f"{where}.{key}: {value!r} is not one of the datasets {sorted(spec.datasets)}"
                )
        for key in ("head_fraction", "ffn_fraction"):
            if not 0 <= getattr(config, key) < 1:
                problems.append(f"{where}.{key}: must be in [0, 1), got {getattr(config, key)}")
        if config.student_layers < 1:
            problems.append(f"{where}.student_layers: must be >= 1, got {config.student_layers}")
    return problems


# -- running ---------------------------------------------------------------------------
def _texts(records: list[Any]) -> list[str]:
    out = []
    for record in records:
        text = getattr(record, "text", None)
        if text is None and hasattr(record, "prompt"):
            text = record.prompt + getattr(record, "chosen", "")
        if text:
            out.append(text)
    return out


def _held_out(dataset: Any) -> list[Any]:
    return list(dataset.splits.get("validation") or dataset.splits.get("test") or [])


def compress_stage(
    spec: PipelineSpec,
    stage: Stage,
    datasets: dict[str, Path],
    out_dir: Path,
    *,
    source_dir: Path,
    source_kind: str,
    device: str = "cpu",
    report: Any = _no_report,
) -> StageResult:
    """Compress the model in `source_dir` (made by a stage of `source_kind`) into
    out_dir/model and measure both; the metrics are what `evaluate_gates` reads."""
    from rlhf.engine.data import load_dataset
    from rlhf.workflows.stages import stage_config

    config = stage_config(CompressConfig, stage)
    index = next((i for i, s in enumerate(spec.stages) if s.name == stage.name), -1)
    problems = [p for p in compress_problems(spec) if p.startswith(f"stages[{index}]")]
    if config.method in SUPPORTED and source_kind not in SUPPORTED[config.method]:
        problems.append(
            f"stages.{stage.name}.config.method: {config.method!r} does not support a "
            f"{source_kind} model"
        )
    if problems:
        raise PipelineError("; ".join(problems))
    key = stage.data or next(iter(datasets))
    train = list(load_dataset(datasets[key])["train"])
    held_out = _held_out(load_dataset(datasets[config.calibration or key]))
    held_out = held_out[: config.calibration_size]
    if not held_out:
        raise PipelineError(
            f"stages.{stage.name}.config.calibration: dataset "
            f"{config.calibration or key!r} has no held-out (validation/test) examples"
        )
    texts = _texts(train)
    labels = [getattr(r, "label", None) for r in train if _texts([r])]
    if config.unlabelled:  # their labels, if any, are not used: the teacher labels them
        extra = _texts(list(load_dataset(datasets[config.unlabelled])["train"]))
        texts, labels = texts + extra, labels + [None] * len(extra)
    texts, labels = texts[: config.max_train_texts], labels[: config.max_train_texts]
    bound = (
        config.max_quality_drop
        if config.max_quality_drop is not None
        else spec.gates.max_quality_drop
    )
    lineage = {"source": str(source_dir), "source_stage": config.source or "", "stage": stage.name}
    out = Path(out_dir) / "model"
    report(0, 3)
    if source_kind in POLICY_SOURCES:
        metrics = _compress_policy(config, source_dir, out, held_out, device, lineage)
    else:
        metrics = _compress_classifier(
            config, source_dir, out, (texts, labels), held_out, device, lineage, report
        )
    report(3, 3)
    metrics["max_quality_drop"] = float(bound)
    metrics["calibration_examples"] = float(len(held_out))
    log.info("%s: %s compressed %s: %s", spec.name, config.method, source_dir, metrics)
    return StageResult(out, metrics, extra={"method": config.method})


def _side_by_side(
    config: CompressConfig, kind: str, before: Path, after: Path, runners: dict, texts: list[str]
) -> dict[str, float]:
    from rlhf.engine.compression.measure import compare_speed, peak_rss_mb, size_mb

    speed = compare_speed(runners, texts, config.speed_batch_size, config.speed_rounds)
    metrics = {
        "size_mb_before": size_mb(before),
        "size_mb_after": size_mb(after),
        "batch_size": float(config.speed_batch_size),
        "concurrency": 1.0,
    }
    for side in ("before", "after"):
        for name, value in speed[side].items():
            metrics[f"{name}_{side}"] = value
    metrics["throughput_ratio"] = speed["after"]["throughput"] / speed["before"]["throughput"]
    if config.measure_memory:
        metrics["peak_rss_mb_before"] = peak_rss_mb(kind, before, texts[: config.speed_batch_size])
        metrics["peak_rss_mb_after"] = peak_rss_mb(kind, after, texts[: config.speed_batch_size])
    return metrics


def _compress_classifier(
    config: CompressConfig,
    source_dir: Path,
    out: Path,
    train: tuple[list[str], list[str | None]],
    held_out: list[Any],
    device: str,
    lineage: dict[str, Any],
    report: Any,
) -> dict[str, float]:
    from rlhf.engine.classifier import evaluate_classifier
    from rlhf.engine.compression import classifiers as K

    source = K.load_classifier(source_dir, device=device)
    texts, labels = train
    recovery = K.DistillConfig(
        temperature=config.temperature,
        hard_weight=config.hard_weight,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        epochs=config.epochs,
        total_steps=config.total_steps,
        time_limit_s=config.time_limit_s,
        seed=config.seed,
        device=device,
    )
    on_step = lambda step, row: report(1, 3, **_floats(row))  # noqa: E731
    metrics: dict[str, float] = {}
    if config.method == "int8":
        K.int8_classifier(source, out, lineage)
    elif config.method == "distill":
        _, trained = K.distill_classifier(
            source, out, recovery, texts, labels, config.student_layers, on_step, lineage
        )
        metrics |= {f"train_{k}": v for k, v in _floats(trained).items()}
    elif config.method == "prune":
        prune = K.PruneConfig(config.head_fraction, config.ffn_fraction)
        _, trained = K.prune_classifier(
            source, out, prune, recovery, texts, labels, on_step, lineage
        )
        metrics |= {f"train_{k}": v for k, v in _floats(trained).items()}
    else:
        raise PipelineError(f"compress method {config.method!r} does not apply to classifiers")
    report(2, 3)
    compressed = K.load_classifier(out, device="cpu")
    source.to("cpu")
    for side, model in (("before", source), ("after", compressed)):
        scored = evaluate_classifier(model, held_out)
        metrics[f"accuracy_{side}"] = float(scored["accuracy"])
        metrics[f"macro_f1_{side}"] = float(scored["macro_f1"])
    metrics["quality_before"] = metrics["accuracy_before"]
    metrics["quality_after"] = metrics["accuracy_after"]
    metrics["quality_drop"] = metrics["accuracy_before"] - metrics["accuracy_after"]
    runners = {"before": source.logits, "after": compressed.logits}
    return metrics | _side_by_side(config, "classifier", source_dir, out, runners, _texts(held_out))


def _compress_policy(
    config: CompressConfig,
    source_dir: Path,
    out: Path,
    held_out: list[Any],
    device: str,
    lineage: dict[str, Any],
) -> dict[str, float]:
    import torch

    from rlhf.engine.compression.policy import load_policy, perplexity, save_compressed_policy
    from rlhf.engine.models import load_tokenizer

    source = load_policy(source_dir, device=device)
    tokenizer = load_tokenizer(source_dir)
    save_compressed_policy(source, tokenizer, out, config.method, lineage)
    compressed = load_policy(out, device=device)
    texts = _texts(held_out)
    metrics = {
        "perplexity_before": perplexity(source, tokenizer, texts),
        "perplexity_after": perplexity(compressed, tokenizer, texts),
    }
    metrics["quality_before"] = metrics["perplexity_before"]
    metrics["quality_after"] = metrics["perplexity_after"]
    metrics["quality_drop"] = metrics["perplexity_after"] / metrics["perplexity_before"] - 1

    def runner(model: Any):
        @torch.no_grad()
        def run(batch: list[str]) -> Any:
            enc = tokenizer(batch, return_tensors="pt", padding=True).to(device)
            return model.generate(
                **enc, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )

        return run

    runners = {"before": runner(source), "after": runner(compressed)}
    return metrics | _side_by_side(config, "policy", source_dir, out, runners, texts)


# -- registering and promoting ---------------------------------------------------------
@dataclass
class CompressDecision:
    """The registered compressed version and whether it now serves."""

    version: Any  # rlhf.v1.ModelVersion
    gates: dict[str, bool]
    promoted: bool
    reason: str  # the failed gates with their numbers, or "" when promoted

    def summary(self) -> dict[str, Any]:
        """What a service's compress run returns (its run record's result)."""
        return {
            "version": self.version.version,
            "source_version": self.version.lineage.parent_version,
            "promoted": self.promoted,
            "gates": dict(self.gates),
            "failed_gates": self.reason,
            "metrics": dict(self.version.lineage.metrics),
        }


def register_compressed(
    registry: Any,
    spec: PipelineSpec,
    stage: Stage,
    result: StageResult,
    source_version: str,
    run_id: str = "",
    promote: Callable[[str, str], Any] | None = None,
) -> CompressDecision:
    """Register the compressed model as a new version of its source's model (lineage:
    parent = source) and promote it only when every gate it reaches passes; the source
    keeps serving otherwise. `promote(version, reason)` defaults to the registry's; a
    service passes its own, which also announces the promotion (`model.promoted`)."""
    from rlhf.v1 import common_pb2
    from rlhf.workflows.promotion import evaluate_gates, failed_gates

    source = registry.get(source_version)
    kind = common_pb2.ModelKind.Name(source.kind).removeprefix("MODEL_KIND_").lower()
    compression_gates = evaluate_gates(spec.gates, result.metrics)
    if "compression_quality" not in compression_gates:
        raise PipelineError(
            f"stages.{stage.name}: the compressed model has no quality figures to gate on"
        )
    # The source's own gates still hold: a compressed copy of a rejected model is rejected.
    gates = {**dict(source.gates), **compression_gates}
    method = result.extra.get("method", stage.config.get("method", "int8"))
    version = registry.register(
        source.name,
        kind,
        f"file://{result.model_dir}",
        run_id=run_id,
        pipeline=spec.name,
        parent_version=source.version,
        reward_model_version=source.lineage.reward_model_version,
        datasets=list(source.lineage.datasets),
        config={"compress": {"method": method, **stage.config}, "source_version": source.version},
        metrics={**dict(source.lineage.metrics), **result.metrics},
        gates=gates,
        key=run_key(run_id, stage.name) if run_id else "",  # a resumed run registers once
    )
    if all(gates.values()):
        promote = promote or (lambda v, reason: registry.promote(v, reason=reason))
        promote(version.version, f"{method} compression of {source.version}")
        return CompressDecision(registry.get(version.version), gates, True, "")
    reason = failed_gates(gates, {**dict(source.lineage.metrics), **result.metrics})
    log.warning(
        "%s: %s not promoted (%s); %s keeps serving",
        spec.name,
        version.version,
        reason,
        source.version,
    )
    return CompressDecision(version, gates, False, reason)


# -- in the services ----------------------------------------------------------------------
def served_name(spec: PipelineSpec, stage: Stage) -> str | None:
    """The registry name under which the services promote and serve `stage`'s model
    (None: a model that is never promoted, such as a judge or a base policy)."""
    if stage.kind in {"classifier", "adversarial"}:  # hardening registers under the same name
        return f"{spec.name}-classifier"
    if stage.kind in POLICY_SOURCES - {"pretrain", "sft"}:
        return f"{spec.name}-policy"
    return None


def compress_stages_for(spec: PipelineSpec, model_name: str) -> list[tuple[Stage, Stage]]:
    """(compress stage, its source stage) for every compress stage whose source is served
    as `model_name`: what a promotion of that model starts. The promoted version is the
    one compressed, so a hardened or retrained classifier is compressed as it serves."""
    from rlhf.workflows.stages import stage_config

    found = []
    for index, stage in enumerate(spec.stages):
        if stage.kind != "compress":
            continue
        source = source_stage(spec, index, stage_config(CompressConfig, stage))
        if source is not None and served_name(spec, source) == model_name:
            found.append((stage, source))
    return found


def is_compressed(model: Any) -> bool:
    """Whether a registered version (rlhf.v1.ModelVersion) came from a compress stage."""
    try:
        return "compress" in json.loads(model.lineage.config_json or "{}")
    except ValueError:
        return False


def uncompressed(registry: Any, model: Any) -> Any:
    """The full-precision version a compressed one came from (the model itself when it is
    not compressed): what retraining continues from, never the int8 or pruned copy."""
    while is_compressed(model) and model.lineage.parent_version:
        model = registry.get(model.lineage.parent_version)
    return model


def compress_version(
    registry: Any,
    spec: PipelineSpec,
    stage: Stage,
    source_kind: str,
    source_version: str,
    datasets: dict[str, Path],
    out_dir: Path,
    *,
    promote: Callable[[str, str], Any],
    run_id: str = "",
    device: str = "cpu",
    report: Any = _no_report,
) -> CompressDecision:
    """Run `stage` on a registered version, then register the result and gate it (what a
    service's compress run does; `promote(version, reason)` announces a promotion)."""
    source = registry.get(source_version)
    result = compress_stage(
        spec,
        stage,
        datasets,
        out_dir,
        source_dir=uri_path(source.artifact.uri),
        source_kind=source_kind,
        device=device,
        report=report,
    )
    return register_compressed(
        registry, spec, stage, result, source.version, run_id=run_id, promote=promote
    )


def run_compress(
    service: Any,
    run: Any,
    datasets: dict[str, Path],
    out_dir: Callable[[str], Path],
) -> dict[str, Any]:
    """The work of a compress run, in whichever service owns the source model (the reward
    service for classifiers, the trainer for policies): `compress_version` on the run's
    source, promoted through `service.publish_promotion` (a `ServiceContext`) only when
    every gate passes; a kept copy's failed gate goes into the run's message.
    `out_dir(stage_name)` is where the service keeps that stage's models."""
    params = run.params
    spec = load_named_pipeline(run.record.pipeline, quick=params.get("profile") == "quick")
    stage = spec.stage(params["stage"])
    decision = compress_version(
        service.registry,
        spec,
        stage,
        params["source_kind"],
        params["source_version"],
        datasets,
        out_dir(stage.name),
        promote=lambda version, reason: service.publish_promotion(
            version,
            run.run_id,
            spec.name,
            spec.serving.canary_percent,
            reason,
            # a resumed run announces it again under the same id: consumers dedupe it
            event_id=run.event_id(f"{TOPIC_MODEL_PROMOTED}/{version}"),
        ),
        run_id=run.run_id,
        device=service.settings.device,
        report=run.report,
    )
    if not decision.promoted:
        run.record.message = f"{decision.version.version} not promoted: {decision.reason}"
    return decision.summary()


def submit_compress_runs(
    service: Any,
    promoted: Any,
    model_kind: int,
    source_kinds: set[str],
    profile: str,
    run_kind: str,
    work: Callable[[Any], dict],
) -> None:
    """On `model.promoted`: submit, as `run_kind` runs of `work`, the compress runs that
    the promotion starts in the service owning `model_kind` models (`compress_requests`).
    An ad-hoc model promoted by hand belongs to no known pipeline and starts nothing."""
    if not promoted.pipeline or promoted.model.kind != model_kind:
        return
    try:
        spec = load_named_pipeline(promoted.pipeline, quick=profile == "quick")
    except PipelineError:
        return
    for request_id, params in compress_requests(spec, promoted.model, source_kinds, profile):
        service.runs.submit(
            run_kind, work, params=params, request_id=request_id, pipeline=promoted.pipeline
        )


def compress_requests(
    spec: PipelineSpec, model: Any, source_kinds: set[str], profile: str = ""
) -> list[tuple[str, dict[str, str]]]:
    """(request id, run params) of each compress run a promotion of `model` starts in the
    service owning `source_kinds`. The request id names the stage and the source version,
    so a source is compressed once per stage: a redelivered event, or a rollback to the
    source, starts nothing new. A compressed version itself starts nothing."""
    if is_compressed(model):
        return []
    return [
        (
            f"compress/{stage.name}/{model.version}",
            {
                "kind": "compress",
                "profile": profile,
                "stage": stage.name,
                "source_kind": source.kind,
                "source_version": model.version,
            },
        )
        for stage, source in compress_stages_for(spec, model.name)
        if source.kind in source_kinds
    ]
