"""The compress stage: validation before anything runs, the stage on tiny models, and the
quality gate deciding whether the compressed version replaces its source in serving."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rlhf.cli.pipeline import app as pipeline_app
from rlhf.engine.classifier import ClassifierTrainConfig, tiny_classifier, train_classifier
from rlhf.engine.data import LabeledText, save_dataset
from rlhf.engine.models import tiny_causal_lm, tiny_char_tokenizer
from rlhf.pipelines import PipelineError, parse_pipeline
from rlhf.registry import ModelRegistry
from rlhf.workflows.compression import (
    CLASSIFIER_SOURCES,
    POLICY_SOURCES,
    compress_requests,
    compress_stage,
    register_compressed,
    uncompressed,
)
from rlhf.workflows.stages import StageResult, config_problems

TEXTS = [
    "a great movie , i loved it",
    "a terrible film , i hated it",
    "wonderful acting",
    "boring and dull",
    "the best film of the year",
    "the worst film of the year",
] * 3
LABELS = ["positive", "negative"] * 9
RECORDS = [LabeledText(t, label) for t, label in zip(TEXTS, LABELS, strict=True)]


def spec_dict(compress: dict | None = None, source_kind: str = "classifier", **gates) -> dict:
    return {
        "name": "tiny",
        "task": "classify",
        "datasets": {"d": {"format": "jsonl", "path": "d.jsonl"}},
        "stages": [
            {"name": "model", "kind": source_kind, "data": "d"},
            {"name": "small", "kind": "compress", "data": "d", "config": compress or {}},
        ],
        "gates": {"reward_up": False, "kl_budget": None, "judge_not_worse": False, **gates},
    }


def problems(compress: dict | None = None, source_kind: str = "classifier", **gates) -> str:
    return "\n".join(config_problems(parse_pipeline(spec_dict(compress, source_kind, **gates))))


# -- validation ---------------------------------------------------------------------------
def test_a_valid_compress_stage_has_no_problems():
    assert problems({"method": "int8"}) == ""
    assert problems({"method": "distill", "student_layers": 1, "max_quality_drop": 0.02}) == ""
    assert problems({"method": "weight_int8"}, source_kind="sft") == ""


def test_a_method_on_a_model_kind_it_does_not_support_names_the_field():
    text = problems({"method": "distill"}, source_kind="reward")
    assert "stages[1].config.method: 'distill' does not support a reward model" in text
    text = problems({"method": "weight_int8"})
    assert "stages[1].config.method: 'weight_int8' does not support a classifier model" in text
    assert "methods for classifier: ['distill', 'int8', 'prune']" in text
    assert "stages[1].config.method: 'gguf' is not one of" in problems({"method": "gguf"})


def test_an_impossible_bound_or_an_empty_calibration_set_names_the_field():
    assert "stages[1].config.max_quality_drop: 1.5 cannot be met" in problems(
        {"max_quality_drop": 1.5}
    )
    assert "stages[1].config.max_quality_drop: -0.1 cannot be met" in problems(
        {"max_quality_drop": -0.1}
    )
    assert "stages[1].config.calibration_size: 0: the calibration set would be empty" in (
        problems({"calibration_size": 0})
    )
    assert "stages[1].config.calibration: 'nope' is not one of the datasets" in problems(
        {"calibration": "nope"}
    )
    assert "stages[1].config.head_fraction: must be in [0, 1)" in problems(
        {"method": "prune", "head_fraction": 1.0}
    )
    assert "stages[1].config.max_quality_drop: no bound" in problems({}, max_quality_drop=None)
    with pytest.raises(PipelineError, match=r"gates\.max_quality_drop: Input should be less"):
        parse_pipeline(spec_dict({}, max_quality_drop=2))


def test_a_compress_stage_needs_a_model_stage_before_it():
    raw = spec_dict({"source": "later"})
    assert "stages[1].config.source: a compress stage needs a model stage (no stage 'later'" in (
        "\n".join(config_problems(parse_pipeline(raw)))
    )
    raw["stages"] = raw["stages"][::-1]
    raw["stages"][0]["config"] = {}
    assert "stages[0].config.source: a compress stage needs a model stage (none before it)" in (
        "\n".join(config_problems(parse_pipeline(raw)))
    )


def test_pipeline_validate_names_the_bad_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec_dict({"method": "prune", "calibration_size": 0})))
    result = CliRunner().invoke(pipeline_app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "stages[1].config.calibration_size" in result.output
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(spec_dict({"method": "int8"})))
    result = CliRunner().invoke(pipeline_app, ["validate", str(good)])
    assert result.exit_code == 0, result.output


# -- the stage on tiny models ---------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compress")
    save_dataset(root / "data", {"train": RECORDS, "validation": RECORDS[:12]}, name="d")
    model = tiny_classifier(texts=TEXTS, hidden_size=32, num_layers=4, num_heads=4, seed=1)
    config = ClassifierTrainConfig(
        backbone="tiny", total_steps=40, learning_rate=2e-3, batch_size=6
    )
    train_classifier(config, RECORDS, classifier=model).classifier.save(root / "classifier")
    return root


def run_stage(workdir: Path, compress: dict, tmp_path: Path, source_kind="classifier", **gates):
    spec = parse_pipeline(spec_dict({"measure_memory": False, **compress}, source_kind, **gates))
    source = workdir / ("classifier" if source_kind == "classifier" else "policy")
    return spec, compress_stage(
        spec,
        spec.stages[1],
        {"d": workdir / "data"},
        tmp_path,
        source_dir=source,
        source_kind=source_kind,
    )


@pytest.mark.parametrize(
    "compress",
    [
        {"method": "int8"},
        {"method": "distill", "student_layers": 1, "total_steps": 20, "learning_rate": 1e-3},
        {"method": "prune", "total_steps": 10, "learning_rate": 1e-3},
    ],
    ids=["int8", "distill", "prune"],
)
def test_the_stage_measures_source_and_compressed_side_by_side(workdir, tmp_path, compress):
    _, result = run_stage(workdir, {**compress, "speed_rounds": 1, "speed_batch_size": 4}, tmp_path)
    m = result.metrics
    assert (result.model_dir / "config.json").is_file()
    for key in ("accuracy", "macro_f1", "size_mb", "latency_p50_ms", "throughput"):
        assert m[f"{key}_before"] > 0 and m[f"{key}_after"] >= 0, key
    assert m["quality_drop"] == pytest.approx(m["accuracy_before"] - m["accuracy_after"])
    assert m["max_quality_drop"] == 0.01 and m["calibration_examples"] == 12
    assert m["throughput_ratio"] > 0 and m["batch_size"] == 4 and m["concurrency"] == 1
    if compress["method"] != "int8":  # int8 keeps the fp32 weights on disk
        assert m["size_mb_after"] < m["size_mb_before"]


def test_weight_only_int8_of_a_policy_gates_on_perplexity(workdir, tmp_path):
    tok = tiny_char_tokenizer()
    lm = tiny_causal_lm(
        len(tok),
        hidden_size=64,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    lm.save_pretrained(workdir / "policy")
    tok.save_pretrained(workdir / "policy")
    compress = {"method": "weight_int8", "speed_rounds": 1, "speed_batch_size": 2}
    _, result = run_stage(workdir, compress, tmp_path, source_kind="sft")
    m = result.metrics
    assert m["quality_drop"] == pytest.approx(m["perplexity_after"] / m["perplexity_before"] - 1)
    assert abs(m["quality_drop"]) < 0.01


def test_a_calibration_set_with_no_held_out_examples_fails_before_compressing(workdir, tmp_path):
    save_dataset(tmp_path / "train-only", {"train": RECORDS}, name="d")
    spec = parse_pipeline(spec_dict({"method": "int8"}))
    with pytest.raises(PipelineError, match="config.calibration: dataset 'd' has no held-out"):
        compress_stage(
            spec,
            spec.stages[1],
            {"d": tmp_path / "train-only"},
            tmp_path / "out",
            source_dir=workdir / "classifier",
            source_kind="classifier",
        )
    assert not (tmp_path / "out" / "model").exists()


# -- the gate and promotion -----------------------------------------------------------------
def registry_with_source(tmp_path: Path, workdir: Path) -> tuple[ModelRegistry, str]:
    registry = ModelRegistry(tmp_path / "registry")
    source = registry.register(
        "tiny-classifier",
        "classifier",
        f"file://{workdir / 'classifier'}",
        metrics={"accuracy": 1.0},
        gates={"accuracy_not_worse": True},
    )
    registry.promote(source.version)
    return registry, source.version


def test_a_compressed_version_within_the_bound_replaces_its_source(workdir, tmp_path):
    spec, result = run_stage(workdir, {"method": "int8", "speed_rounds": 1}, tmp_path, **{})
    registry, source = registry_with_source(tmp_path, workdir)
    decision = register_compressed(registry, spec, spec.stages[1], result, source)
    assert decision.promoted and decision.reason == ""
    assert decision.gates == {"accuracy_not_worse": True, "compression_quality": True}
    served = registry.promoted("tiny-classifier")
    assert served.version == decision.version.version == "tiny-classifier-v2"
    assert served.lineage.parent_version == source
    assert '"method": "int8"' in served.lineage.config_json
    assert served.lineage.metrics["quality_drop"] == result.metrics["quality_drop"]


def test_a_compressed_version_over_the_bound_is_kept_and_the_source_keeps_serving(
    workdir, tmp_path
):
    spec = parse_pipeline(spec_dict({"method": "prune"}, max_quality_drop=0.02))
    metrics = {
        "quality_before": 0.91,
        "quality_after": 0.85,
        "quality_drop": 0.06,
        "max_quality_drop": 0.02,
    }
    result = StageResult(workdir / "classifier", metrics, extra={"method": "prune"})
    registry, source = registry_with_source(tmp_path, workdir)
    decision = register_compressed(registry, spec, spec.stages[1], result, source)
    assert not decision.promoted
    assert decision.gates["compression_quality"] is False
    assert "compression_quality (quality_before=0.91, quality_after=0.85" in decision.reason
    assert "quality_drop=0.06, max_quality_drop=0.02" in decision.reason
    assert registry.promoted("tiny-classifier").version == source
    assert registry.get(decision.version.version).lineage.parent_version == source


def test_a_compressed_copy_of_a_rejected_source_is_not_promoted(workdir, tmp_path):
    spec = parse_pipeline(spec_dict({"method": "int8"}))
    registry = ModelRegistry(tmp_path / "registry")
    rejected = registry.register(
        "tiny-classifier", "classifier", "file:///x", gates={"accuracy_not_worse": False}
    )
    metrics = {"quality_before": 0.9, "quality_after": 0.9, "quality_drop": 0.0}
    result = StageResult(workdir / "classifier", {**metrics, "max_quality_drop": 0.01})
    decision = register_compressed(registry, spec, spec.stages[1], result, rejected.version)
    assert not decision.promoted and decision.gates["compression_quality"] is True
    assert "accuracy_not_worse" in decision.reason
    assert registry.promoted("tiny-classifier") is None


# -- what a promotion starts in the services -------------------------------------------------
def test_a_promotion_starts_the_compress_stages_of_its_model_in_the_owning_service(tmp_path):
    spec = parse_pipeline(
        {
            **spec_dict(),
            "stages": [
                {"name": "clf", "kind": "classifier", "data": "d"},
                {"name": "judge", "kind": "judge", "data": "d"},
                {"name": "clf-int8", "kind": "compress", "data": "d", "config": {"source": "clf"}},
                {"name": "ppo", "kind": "ppo", "data": "d"},
                {"name": "small", "kind": "compress", "config": {"method": "weight_int8"}},
            ],
            "gates": {"reward_up": True, "kl_budget": 8.0, "max_quality_drop": 0.01},
        }
    )  # fmt: skip
    registry = ModelRegistry(tmp_path / "registry")
    classifier = registry.register("tiny-classifier", "classifier", "file:///c")
    policy = registry.register("tiny-policy", "policy", "file:///p")
    requests = compress_requests(spec, policy, POLICY_SOURCES, "quick")
    assert requests == [
        (
            f"compress/small/{policy.version}",
            {
                "kind": "compress",
                "profile": "quick",
                "stage": "small",
                "source_kind": "ppo",
                "source_version": policy.version,
            },
        )
    ]
    assert compress_requests(spec, policy, CLASSIFIER_SOURCES) == []  # not the reward service's
    ((request_id, params),) = compress_requests(spec, classifier, CLASSIFIER_SOURCES)
    assert request_id == f"compress/clf-int8/{classifier.version}"
    # The copy starts nothing; retraining continues from the full version it came from.
    copy = registry.register(
        "tiny-classifier",
        "classifier",
        "file:///c8",
        parent_version=classifier.version,
        config={"compress": {"method": "int8"}},
    )
    assert compress_requests(spec, copy, CLASSIFIER_SOURCES) == []
    assert uncompressed(registry, copy).version == classifier.version
    assert uncompressed(registry, classifier).version == classifier.version


def test_a_compress_run_resumed_after_registering_registers_and_promotes_once(tmp_path):
    # The process died after registering (and promoting) the copy; the resumed run
    # calls register_compressed again with the same run id and gets the same version.
    spec = parse_pipeline(spec_dict({"method": "int8"}))
    registry = ModelRegistry(tmp_path / "registry")
    source = registry.register("tiny-classifier", "classifier", "file:///x").version
    registry.promote(source)
    metrics = {"quality_before": 0.9, "quality_after": 0.9, "quality_drop": 0.0}
    result = StageResult(tmp_path / "copy", {**metrics, "max_quality_drop": 0.01})
    first, again = (
        register_compressed(registry, spec, spec.stages[1], result, source, run_id="c-1")
        for _ in range(2)
    )
    assert first.promoted and again.promoted
    assert again.version.version == first.version.version == "tiny-classifier-v2"
    assert [m.version for m in registry.list(name="tiny-classifier")] == [
        source,
        "tiny-classifier-v2",
    ]
    promoted = [e["version"] for e in registry.promotions("tiny-classifier")]
    assert promoted == [source, "tiny-classifier-v2"]
