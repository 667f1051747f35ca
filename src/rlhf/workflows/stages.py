"""What each kind of pipeline stage does, on top of the engine.

One function per stage kind. Each takes prepared dataset directories and model
directories, writes its outputs under `out_dir`, and returns a `StageResult`: the model
directory it produced and the metrics that the promotion gates read. Progress and
cancellation go through `report(step, total, **metrics)` (a `RunContext.report`).

Under torchrun (`rlhf stage run`, `rlhf train` in a Job) every rank calls the stage
function and trains its shard; rank 0 alone evaluates, saves the model and discards the
run files, and the other ranks return a result without a model directory.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf.engine import distributed
from rlhf.engine.checkpoint import discard_run_files
from rlhf.engine.data import LabeledText, hash_fraction, load_dataset
from rlhf.engine.policy_eval import compare_generations, evaluate_policy
from rlhf.engine.vocabulary import renamed_hint
from rlhf.pipelines import PipelineError, PipelineSpec, Stage

log = logging.getLogger(__name__)

Report = Callable[..., None]


def _no_report(*args: Any, **kwargs: Any) -> None:
    return None


@dataclass
class StageResult:
    model_dir: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def stage_config(cls: type, stage: Stage, **fixed: Any) -> Any:
    """Build an algorithm config from the stage's `config:` block; unknown keys fail,
    naming the stage and the key."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(stage.config) - names)
    if unknown:
        hints = "".join(renamed_hint(key, names) for key in unknown)
        raise PipelineError(
            f"stages.{stage.name}.config: unknown keys {unknown} for {cls.__name__} "
            f"(known: {sorted(names)}){hints}"
        )
    values = {**fixed, **{k: v for k, v in stage.config.items() if k not in fixed}}
    if "labels" in names and isinstance(values.get("labels"), list):
        values["labels"] = tuple(values["labels"])
    return cls(**values)


def stage_config_class(kind: str) -> tuple[type | None, set[str]]:
    """The config dataclass a stage kind's `config:` block fills, and the extra keys the
    stage itself reads (None for kinds configured by keys alone)."""
    if kind in ("classifier", "judge"):
        from rlhf.engine.classifier import ClassifierTrainConfig

        return ClassifierTrainConfig, set()
    if kind == "reward":
        from rlhf.engine.reward_training import RewardModelTrainConfig

        return RewardModelTrainConfig, set()
    if kind == "pretrain":
        from rlhf.engine.algorithms.pretrain import PretrainConfig

        return PretrainConfig, {"model"}
    if kind == "sft":
        from rlhf.engine.algorithms.sft import SFTConfig

        return SFTConfig, {"model"}
    if kind == "ppo":
        from rlhf.engine.algorithms.ppo import PPOConfig

        return PPOConfig, set()
    if kind in ("rloo", "grpo"):
        from rlhf.engine.algorithms.rloo import RLOOConfig

        return RLOOConfig, set()
    if kind == "dpo":
        from rlhf.engine.algorithms.dpo import DPOConfig

        return DPOConfig, set()
    if kind == "compress":
        from rlhf.workflows.compression import CompressConfig

        return CompressConfig, set()
    if kind == "adversarial":
        return None, set(ATTACK_KEYS)
    if kind == "tokenizer":
        return None, {"vocab_size"}
    return None, set()


def config_problems(spec: PipelineSpec) -> list[str]:
    """Every `config:` key a stage would not take, named by its path, e.g.
    `stages[3].config.lr: DPOConfig has no field 'lr'; 'lr' is now 'learning_rate'
    (known: ...)` (the hint when the key is a retired name).
    Checked when a spec is validated, so a bad key fails before any stage runs."""
    problems = []
    for index, stage in enumerate(spec.stages):
        cls, extra = stage_config_class(stage.kind)
        known = set(extra)
        if cls is not None:
            known |= {f.name for f in dataclasses.fields(cls)}
        owner = cls.__name__ if cls is not None else f"a {stage.kind} stage"
        for key in sorted(set(stage.config) - known):
            problems.append(
                f"stages[{index}].config.{key}: {owner} has no field {key!r}"
                f"{renamed_hint(key, known)} (known: {', '.join(sorted(known))})"
            )
    from rlhf.workflows.compression import compress_problems

    return problems + compress_problems(spec)


# -- classifiers ---------------------------------------------------------------------------
def halves(records: Sequence[LabeledText], half: int) -> list[LabeledText]:
    """A deterministic half of the records (by text hash): 0 or 1. Lets the reward
    classifier and the held-out judge learn from disjoint data of one source."""
    return [r for r in records if (hash_fraction(r.text, "judge") < 0.5) == (half == 0)]


def classifier_data(
    spec: PipelineSpec, stage: Stage, datasets: dict[str, Path]
) -> tuple[list[LabeledText], list[LabeledText]]:
    """(train, eval) records for a classifier or judge stage."""
    key = stage.data or next(iter(datasets))
    dataset = load_dataset(datasets[key])
    train = list(dataset["train"])
    evaluation = list(dataset.splits.get("test") or dataset.splits.get("validation") or [])
    shares_data = [
        s for s in spec.stages if s.kind in ("classifier", "judge") and (s.data or key) == key
    ]
    if len(shares_data) > 1:  # classifier and judge on one source: disjoint halves
        train = halves(train, 0 if stage.kind == "classifier" else 1)
    return train, evaluation


def base_classifier(spec: PipelineSpec, train: Sequence[LabeledText], max_length: int, seed: int):
    from rlhf.engine import classifier as C

    base = spec.models.classifier
    if base == "tiny":
        texts = [r.text for r in train[:4000]]
        # Chinese: the recipe of `ChineseClassifierRecipe` (BPE merges across CJK
        # characters, so frequent words are single tokens), sized for a pipeline stage.
        chinese = spec.language == "zh"
        return C.tiny_classifier(
            texts=texts,
            vocab_size=3000,
            hidden_size=64,
            num_layers=2,
            max_length=max_length,
            seed=seed,
            split_cjk=not chinese,
            min_frequency=C.ChineseClassifierRecipe.min_frequency if chinese else 1,
        )
    if base == "minilm":
        return C.classifier_from_backbone("minilm", max_length=max_length, seed=seed)
    return C.load_classifier(base)


def train_classifier_stage(
    spec: PipelineSpec,
    stage: Stage,
    datasets: dict[str, Path],
    out_dir: Path,
    *,
    device: str = "cpu",
    report: Report = _no_report,
    init_dir: Path | None = None,
    extra_train: Sequence[LabeledText] = (),
    extra_weight: float | None = None,
) -> StageResult:
    """Train (or, with init_dir, continue training) a classifier; saves to out_dir/model.

    `extra_train` is appended as is (adversarial examples), or with `extra_weight` mixed
    in as that share of the training data (feedback; see `workflows.feedback.mix`)."""
    from rlhf.engine import classifier as C
    from rlhf.workflows.feedback import mix

    train, evaluation = classifier_data(spec, stage, datasets)
    if extra_weight is None:
        train = train + list(extra_train)
    else:
        train = mix(train, list(extra_train), extra_weight)
    config = stage_config(
        C.ClassifierTrainConfig,
        stage,
        device=device,
        output_dir=str(out_dir / "run"),
        backbone=spec.models.classifier,
    )
    model = (
        C.load_classifier(init_dir, device=device)
        if init_dir is not None
        else base_classifier(spec, train, config.max_length, config.seed)
    )
    result = C.train_classifier(
        config,
        train,
        evaluation or None,
        classifier=model,
        on_step=lambda step, metrics: report(step, **_floats(metrics)),
    )
    if not distributed.is_main():
        return StageResult(None)
    # Consumers (serving, attacks) truncate to what the model was trained to read.
    result.classifier.tokenizer.model_max_length = config.max_length
    model_dir = result.classifier.save(out_dir / "model")
    metrics = {f"eval_{k}": v for k, v in _floats(result.metrics).items()}
    if evaluation:
        scored = C.evaluate_classifier(result.classifier, evaluation)
        metrics.update({k: v for k, v in _floats(scored).items()})
    discard_run_files(out_dir / "run")
    return StageResult(Path(model_dir), metrics)


def _progress(report: Report, config: Any) -> Callable[[int, dict[str, Any]], None]:
    """A training loop's per-step callback that reports progress (and so cancellation)."""
    return lambda step, row: report(step, config.total_steps, **_floats(row))


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


# -- policies ------------------------------------------------------------------------------
def prompts_from(records: Sequence[Any], words: int, language: str) -> list[str]:
    """Openings of texts as prompts: the first `words` words (characters for Chinese)."""
    prompts = []
    for record in records:
        text = getattr(record, "text", None) or getattr(record, "prompt", "")
        opening = text[:words] if language == "zh" else " ".join(text.split()[:words])
        if opening.strip():
            prompts.append(opening)
    return prompts


def score_spread(classifier: Any, records: Sequence[Any], texts: int = 256) -> float:
    """Standard deviation of a classifier's positive log-odds over up to `texts` of the
    records' texts (evenly spread); 1.0 when there are too few to say."""
    sample = [r.text for r in records if getattr(r, "text", "")]
    sample = sample[:: max(1, len(sample) // texts)][:texts]
    if len(sample) < 8:
        return 1.0
    with torch.no_grad():
        spread = float(classifier.positive_scores(sample).float().std())
    return max(spread, 0.05)


def rl_stage(
    spec: PipelineSpec,
    stage: Stage,
    datasets: dict[str, Path],
    out_dir: Path,
    *,
    policy_dir: Path | str,
    reward_dir: Path,
    judge_dir: Path | None,
    device: str = "cpu",
    report: Report = _no_report,
    eval_prompts: int = 64,
    eval_samples: int | None = None,
    extra_prompts: Sequence[str] = (),
    feedback_weight: float = 0.0,
    reference_dir: Path | str | None = None,
) -> StageResult:
    """PPO / RLOO / GRPO on prompt openings, rewarded by a classifier; measures reward,
    judge positive rate, KL and fluency before and after on held-out prompts
    (`eval_samples` continuations of each; by default `gates.samples_per_prompt`).

    `reference_dir` is the KL anchor (default: the start policy). A retraining round
    passes the pipeline's base policy, so KL, its budget and the fluency gate measure the
    total drift from the base model, not a fresh budget on top of every earlier round.

    `extra_prompts` (prompts seen in production) join the prompt pool as
    `feedback_weight` of it (see `workflows.feedback.mix`)."""
    import copy

    from rlhf.engine.classifier import load_classifier
    from rlhf.engine.models import load_policy, load_tokenizer
    from rlhf.workflows.feedback import mix

    key = stage.data or next(iter(datasets))
    dataset = load_dataset(datasets[key])
    words = spec.datasets[key].prompt_words
    train_prompts = prompts_from(dataset["train"], words, spec.language)
    held_out = prompts_from(
        dataset.splits.get("validation") or dataset.splits.get("test") or dataset["train"],
        words,
        spec.language,
    )[:eval_prompts]
    train_prompts = mix(train_prompts, list(extra_prompts), feedback_weight)
    if not train_prompts or not held_out:
        raise PipelineError(f"stages.{stage.name}: no prompts in dataset {key!r}")

    distributed.init(device)  # a no-op outside torchrun
    main = distributed.is_main()
    policy = load_policy(policy_dir, device=device)
    tokenizer = load_tokenizer(policy_dir)
    if reference_dir is not None:
        reference = load_policy(reference_dir, device=device)
    else:
        reference = copy.deepcopy(policy)
    reference.eval().requires_grad_(False)
    reward_model = load_classifier(reward_dir, device=device)
    judge = load_classifier(judge_dir, device=device) if judge_dir else None
    reward_spread = score_spread(reward_model, dataset["train"])

    def reward_fn(texts: list[str]) -> torch.Tensor:
        return reward_model.positive_scores(texts)

    if stage.kind == "ppo":
        from rlhf.engine.algorithms.ppo import PPOConfig, train_ppo

        config = stage_config(
            PPOConfig, stage, device=device, output_dir=str(out_dir / "run"), progress=False
        )
        max_new_tokens = config.max_new_tokens
        train = lambda: train_ppo(config, policy, tokenizer, reward_fn, train_prompts, reference)  # noqa: E731
    elif stage.kind in ("rloo", "grpo"):
        from rlhf.engine.algorithms.rloo import RLOOConfig, train_rloo

        config = stage_config(
            RLOOConfig,
            stage,
            device=device,
            output_dir=str(out_dir / "run"),
            progress=False,
            estimator=stage.kind,
        )
        max_new_tokens = config.max_new_tokens
        train = lambda: train_rloo(config, policy, tokenizer, reward_fn, train_prompts, reference)  # noqa: E731
    else:
        raise PipelineError(f"stages.{stage.name}.kind: {stage.kind!r} is not an RL stage")

    # PPO is rewarded in units of the classifier's spread over the data set's own texts.
    # A retrained reward model grows more confident (its log-odds spread ~4x wider after
    # one quick feedback round) and would otherwise outweigh the KL penalty the spec
    # balanced against it. The metrics below stay in raw log-odds.
    config.score_scale = config.score_scale / reward_spread
    report(0, config.total_steps)
    # The reward is the classifier's positive log-odds: above 0 it calls a text positive.
    generation = {
        "max_new_tokens": max_new_tokens,
        "samples_per_prompt": eval_samples or spec.gates.samples_per_prompt,
        "reward_threshold": 0.0,
    }
    if main:  # the training loops seed themselves: skipping this leaves them unchanged
        before = evaluate_policy(
            policy, reference, tokenizer, held_out, reward_fn, judge, **generation
        )
    # A retraining round continues a policy that may already be past the budget against
    # the same base reference: its measured drift (held-out samples, not one noisy batch)
    # becomes the ceiling. It may trade reward within that drift, never add to it;
    # without this it could not take a step and would return its start unchanged.
    start_kl = distributed.all_reduce_sum(before.metrics["kl_per_sequence"] if main else 0.0)
    if config.kl_budget is not None and start_kl > config.kl_budget:
        config.kl_budget = start_kl
    result = train()
    if not main:
        return StageResult(None)
    trained = getattr(policy, "lm", policy)
    after = evaluate_policy(trained, reference, tokenizer, held_out, reward_fn, judge, **generation)
    report(config.total_steps, config.total_steps)
    model_dir = out_dir / "model"
    trained.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    metrics = compare_generations(before.metrics, after.metrics)
    metrics["train_prompts"] = float(len(train_prompts))
    metrics["reward_spread"] = reward_spread
    if config.kl_budget is not None:
        metrics["train_kl_budget"] = float(config.kl_budget)
    metrics["steps"] = float(getattr(result, "steps", config.total_steps))
    metrics["stopped_on_kl_budget"] = float(bool(getattr(result, "stopped_on_budget", False)))
    samples = [
        {"prompt": b["prompt"], "before": b["text"], "after": a["text"]}
        for b, a in zip(before.samples, after.samples, strict=True)
    ]
    discard_run_files(out_dir / "run")
    return StageResult(model_dir, metrics, samples)


def train_reward_stage(
    spec: PipelineSpec,
    stage: Stage,
    datasets: dict[str, Path],
    out_dir: Path,
    *,
    device: str = "cpu",
    report: Report = _no_report,
    init_dir: Path | None = None,
    extra_pairs: Sequence[Any] = (),
    feedback_weight: float = 0.0,
) -> StageResult:
    """A pairwise (Bradley-Terry) reward model on preference pairs (plus feedback pairs
    as `feedback_weight` of the data); metrics include held-out pairwise accuracy."""
    from rlhf.engine.classifier import load_classifier
    from rlhf.engine.reward_training import RewardModelTrainConfig, train_reward_model
    from rlhf.workflows.feedback import mix

    key = stage.data or next(iter(datasets))
    dataset = load_dataset(datasets[key])
    train = mix(list(dataset["train"]), list(extra_pairs), feedback_weight)
    evaluation = list(dataset.splits.get("validation") or dataset.splits.get("test") or [])
    config = stage_config(
        RewardModelTrainConfig,
        stage,
        device=device,
        output_dir=str(out_dir / "run"),
        backbone=spec.models.classifier,
    )
    model = load_classifier(init_dir, device=device) if init_dir else None
    result = train_reward_model(
        config,
        train,
        evaluation or None,
        model=model,
        on_step=lambda step, metrics: report(step, **_floats(metrics)),
    )
    if not distributed.is_main():
        return StageResult(None)
    model_dir = result.classifier.save(out_dir / "model")
    discard_run_files(out_dir / "run")
    return StageResult(Path(model_dir), _floats(result.metrics))


def base_policy_stage(
    spec: PipelineSpec,
    stage: Stage,
    datasets: dict[str, Path],
    out_dir: Path,
    *,
    tokenizer_dir: Path | None = None,
    policy_dir: Path | str | None = None,
    device: str = "cpu",
    report: Report = _no_report,
) -> StageResult:
    """Pre-training from scratch (a tiny Llama over the pipeline's tokenizer) or SFT.

    The stage's `config.model` block sizes the from-scratch model (hidden_size,
    num_layers, num_heads); every other key is a PretrainConfig / SFTConfig field.
    """
    from rlhf.engine.models import load_policy, load_tokenizer, tiny_causal_lm

    config_block = dict(stage.config)
    model_shape = config_block.pop("model", {})
    stage = stage.model_copy(update={"config": config_block})
    key = stage.data or next(iter(datasets))
    dataset = load_dataset(datasets[key])
    texts = [getattr(r, "text", None) or r.prompt + r.chosen for r in dataset["train"]]
    common = {"device": device, "output_dir": str(out_dir / "run"), "progress": False}
    distributed.init(device)  # a no-op outside torchrun
    if stage.kind == "pretrain":
        from transformers import AutoTokenizer

        from rlhf.engine.algorithms.pretrain import PretrainConfig, pretrain

        if tokenizer_dir is None:
            raise PipelineError(f"stages.{stage.name}: pre-training needs a tokenizer stage first")
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        tokenizer.padding_side = "left"
        config = stage_config(PretrainConfig, stage, **common)
        model = tiny_causal_lm(
            len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            max_position_embeddings=max(256, config.block_size * 2),
            seed=config.seed,
            **model_shape,
        ).to(device)
        result = pretrain(config, model, tokenizer, texts, on_step=_progress(report, config))
    elif stage.kind == "sft":
        from rlhf.engine.algorithms.sft import SFTConfig, train_sft

        source = policy_dir or spec.models.policy
        model, tokenizer = load_policy(source, device=device), load_tokenizer(source)
        config = stage_config(SFTConfig, stage, **common)
        result = train_sft(
            config, model, tokenizer, list(dataset["train"]), on_step=_progress(report, config)
        )
    else:
        raise PipelineError(f"stages.{stage.name}.kind: {stage.kind!r} is not a base-policy stage")
    report(result.steps, result.steps)
    if not distributed.is_main():
        return StageResult(None)
    model_dir = out_dir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    last = result.history[-1] if result.history else {}
    discard_run_files(out_dir / "run")
    return StageResult(model_dir, {"steps": float(result.steps), **_floats(last)})


def dpo_stage(
    spec: PipelineSpec,
    stage: Stage,
    datasets: dict[str, Path],
    out_dir: Path,
    *,
    policy_dir: Path | str,
    device: str = "cpu",
    report: Report = _no_report,
    extra_pairs: Sequence[Any] = (),
    feedback_weight: float = 0.0,
    scorer_dir: Path | None = None,
    eval_prompts: int = 32,
    eval_new_tokens: int = 48,
) -> StageResult:
    """DPO on preference pairs (plus feedback pairs as `feedback_weight` of the data).

    Measured on held-out pairs: the implicit reward's pairwise accuracy. Measured on
    their prompts, before (the start policy, i.e. the serving version in a retraining
    round) and after: KL, fluency and diversity of the samples, and, with `scorer_dir`
    (a reward model the policy was not trained on), the candidate's win rate against
    the start policy: P(r(candidate) > r(start)), ties counting one half.
    """
    import copy

    from rlhf.engine.algorithms.dpo import DPOConfig, train_dpo
    from rlhf.engine.models import load_policy, load_tokenizer
    from rlhf.workflows.feedback import mix

    key = stage.data or next(iter(datasets))
    dataset = load_dataset(datasets[key])
    train = mix(list(dataset["train"]), list(extra_pairs), feedback_weight)
    held_out = list(dataset.splits.get("validation") or dataset.splits.get("test") or [])
    distributed.init(device)  # a no-op outside torchrun
    main = distributed.is_main()
    policy, tokenizer = load_policy(policy_dir, device=device), load_tokenizer(policy_dir)
    config = stage_config(
        DPOConfig, stage, device=device, output_dir=str(out_dir / "run"), progress=False
    )
    prompts = list(dict.fromkeys(p.prompt for p in held_out if p.prompt.strip()))[:eval_prompts]
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    generation = {
        "max_new_tokens": eval_new_tokens,
        "show": None,
        "chat_template": config.use_chat_template,
        "samples_per_prompt": spec.gates.samples_per_prompt,
    }
    report(0, 1)
    if prompts and main:
        before = evaluate_policy(policy, reference, tokenizer, prompts, **generation)
    result = train_dpo(config, policy, tokenizer, train, held_out, ref_model=reference)
    report(1, 1)
    if not main:
        return StageResult(None)
    model_dir = out_dir / "model"
    policy.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    metrics = {f"{k}_before": v for k, v in _floats(result.eval_before).items()}
    metrics |= {f"{k}_after": v for k, v in _floats(result.eval_after).items()}
    metrics["steps"] = float(result.steps)
    metrics["train_pairs"] = float(len(train))
    samples: list[dict[str, str]] = []
    if prompts:
        after = evaluate_policy(policy, reference, tokenizer, prompts, **generation)
        metrics |= compare_generations(before.metrics, after.metrics)
        start_samples, candidate_samples = before.samples, after.samples
        if scorer_dir is not None:
            metrics["win_rate"] = win_rate(scorer_dir, candidate_samples, start_samples, device)
        samples = [
            {"prompt": b["prompt"], "before": b["response"], "after": a["response"]}
            for b, a in zip(start_samples[:3], candidate_samples[:3], strict=True)
        ]
    discard_run_files(out_dir / "run")
    return StageResult(model_dir, metrics, samples)


def win_rate(
    scorer_dir: Path,
    candidate: Sequence[dict[str, str]],
    baseline: Sequence[dict[str, str]],
    device: str = "cpu",
) -> float:
    """Share of prompts where the scorer prefers the candidate's response (ties: 1/2)."""
    from rlhf.engine.classifier import load_classifier

    scorer = load_classifier(scorer_dir, device=device)
    ours = scorer.positive_scores([c["text"] for c in candidate]).tolist()
    theirs = scorer.positive_scores([b["text"] for b in baseline]).tolist()
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(ours, theirs, strict=True)]
    return sum(wins) / len(wins)


# -- ad-hoc runs (trainer StartRun, `rlhf train --run-config`) ---------------------------
@dataclass
class RunConfig:
    """One training run outside a pipeline: what `rlhf train --run-config FILE` reads
    (inside a Kubernetes Job) and what StartRun builds."""

    algorithm: str  # pretrain, sft, ppo, grpo, rloo, dpo
    dataset: str  # prepared dataset directory
    output_dir: str  # the trained model goes to <output_dir>/model
    base_model: str = "smollm2"  # policy to start from: a directory or "smollm2"
    reward_model: str = ""  # classifier / reward model directory (ppo, grpo, rloo)
    tokenizer: str = ""  # tokenizer directory (pretrain)
    language: str = "en"
    config: dict[str, Any] = field(default_factory=dict)  # algorithm config overrides
    device: str = "cpu"


def run_adhoc(run: RunConfig, report: Report = _no_report) -> StageResult:
    """Execute a RunConfig with the same stage functions as the pipelines."""
    spec = PipelineSpec(
        name="adhoc",
        task="chat",
        language=run.language,
        datasets={"data": {"format": "jsonl", "path": run.dataset}},
        models={"policy": run.base_model},
        stages=[Stage(name=run.algorithm, kind=run.algorithm, data="data", config=run.config)],
    )
    stage, datasets, out = spec.stages[0], {"data": Path(run.dataset)}, Path(run.output_dir)
    if run.algorithm in ("pretrain", "sft"):
        return base_policy_stage(
            spec,
            stage,
            datasets,
            out,
            tokenizer_dir=Path(run.tokenizer) if run.tokenizer else None,
            policy_dir=run.base_model,
            device=run.device,
            report=report,
        )
    if run.algorithm == "dpo":
        return dpo_stage(
            spec, stage, datasets, out, policy_dir=run.base_model, device=run.device, report=report
        )
    if not run.reward_model:
        raise PipelineError(f"{run.algorithm}: reward_model is required")
    return rl_stage(
        spec,
        stage,
        datasets,
        out,
        policy_dir=run.base_model,
        reward_dir=Path(run.reward_model),
        judge_dir=None,
        device=run.device,
        report=report,
    )


# -- adversarial ---------------------------------------------------------------------------
ATTACK_KEYS = {"method", "max_examples", "max_edits", "min_similarity", "query_budget", "rounds"}


def attack_stage(
    spec: PipelineSpec,
    stage: Stage,
    datasets: dict[str, Path],
    *,
    classifier_dir: Path,
    device: str = "cpu",
    report: Report = _no_report,
    split: str = "validation",
) -> tuple[Any, list[Any], list[LabeledText]]:
    """Attack a classifier on held-out examples: (RobustnessReport, results, adversarial
    examples with their true labels). English: word substitution under MiniLM similarity;
    Chinese: character attacks (similar characters, pinyin homophones)."""
    from rlhf.engine import adversarial as A

    unknown = sorted(set(stage.config) - ATTACK_KEYS)
    if unknown:
        raise PipelineError(f"stages.{stage.name}.config: unknown keys {unknown}")
    config = stage.config
    key = stage.data or next(iter(datasets))
    dataset = load_dataset(datasets[key])
    records = list(dataset.splits.get(split) or dataset.splits.get("test") or dataset["train"])
    from transformers import AutoConfig

    positions = getattr(AutoConfig.from_pretrained(classifier_dir), "max_position_embeddings", 128)
    classifier = A.HFClassifier.from_pretrained(
        classifier_dir, device=device, max_length=min(128, positions)
    )
    # Attack only what the model reads whole: longer texts would be truncated anyway.
    fits = lambda text: len(classifier.tokenizer(text)["input_ids"]) <= classifier.max_length  # noqa: E731
    records = [r for r in records if isinstance(r, LabeledText) and fits(r.text)]
    records = records[: int(config.get("max_examples", 200))]
    labels = list(classifier.model.config.id2label.values())
    label_ids = {name: i for i, name in enumerate(labels)}
    budget = {
        "max_edits": int(config.get("max_edits", 3)),
        "query_budget": config.get("query_budget"),
    }
    method = config.get("method") or ("char" if spec.language == "zh" else "word")
    if method == "blackbox":  # only Classify calls, substitutes from MiniLM's vocabulary
        attack = A.blackbox_attack(
            classify=classifier,
            similarity=A.MiniLMSimilarity(device=device),
            query_budget=int(budget.pop("query_budget") or 200),
            min_similarity=float(config.get("min_similarity", 0.8)),
            **budget,
        )
    elif method == "char":  # language detected per text: CJK characters or English words
        attack = A.CharAttack(
            classifier, A.CharNgramSimilarity(), A.CharAttackConfig(language="auto", **budget)
        )
    else:
        attack = A.WordSubstitutionAttack(
            classifier,
            A.EmbeddingNeighbours.from_model(classifier.model, classifier.tokenizer),
            A.MiniLMSimilarity(device=device),
            A.WordAttackConfig(min_similarity=float(config.get("min_similarity", 0.8)), **budget),
        )
    results = attack.attack_many(
        [r.text for r in records],
        [label_ids[r.label] for r in records],
        progress=lambda i, _: report(i + 1, len(records)),
    )
    robustness = A.robustness_report(results)
    return robustness, results, A.adversarial_examples(results, labels)
