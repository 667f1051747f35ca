"""What a policy writes for held-out prompts, measured the way gates and benchmarks read it.

One pass samples `samples_per_prompt` continuations of every prompt and scores each with
the reward function, the held-out judge and the frozen reference. Figures are averaged
per prompt first, so a prompt counts once however many samples it has, and every
figure carries a bootstrap confidence interval over prompts: with one sample per
prompt the judge's positive rate of 160 prompts moves by about +-0.04 between seeds,
and a result at a bar should say how sure it is.

Used by the pipeline stages (`workflows/stages.py`) and the RL benchmarks
(`bench/quality_rl.py`, `bench/ppo_vs_trl.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rlhf.engine.algorithms.rollout import (
    decode_responses,
    encode_prompts,
    rollout_logprobs,
    sample,
)
from rlhf.engine.evaluation import text_quality

RewardFn = Callable[[list[str]], Any]


@dataclass
class PolicyEvaluation:
    """Means over prompts, their intervals, per-prompt values and a few samples."""

    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_prompt: dict[str, list[float]] = field(default_factory=dict)
    samples: list[dict[str, str]] = field(default_factory=list)


def bootstrap_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the values with replacement."""
    if not values:
        return (math.nan, math.nan)
    data = torch.as_tensor(list(values), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(data), (resamples, len(data)), generator=generator)
    means = data[index].mean(dim=1)
    tail = (1 - confidence) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return (float(low), float(high))


def paired_gain(
    before: Sequence[float], after: Sequence[float], confidence: float = 0.95, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Mean of after - before over the same prompts, with its bootstrap interval.

    Pairing removes the spread between prompts (some openings are positive whatever the
    policy writes), so the gain's interval is narrower than either figure's."""
    if len(before) != len(after):
        raise ValueError(f"paired_gain: {len(before)} prompts before, {len(after)} after")
    differences = [a - b for a, b in zip(after, before, strict=True)]
    mean = sum(differences) / len(differences) if differences else math.nan
    return mean, bootstrap_interval(differences, confidence, seed=seed)


@torch.no_grad()
def evaluate_policy(
    policy: Any,
    reference: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    reward_fn: RewardFn | None = None,
    judge: Any | None = None,
    *,
    max_new_tokens: int,
    samples_per_prompt: int = 1,
    batch_size: int = 16,
    seed: int = 1234,
    show: int | None = 3,
    chat_template: bool = False,
    use_autocast: bool | None = None,
    max_prompt_tokens: int = 64,
    confidence: float = 0.95,
    reward_threshold: float | None = None,
) -> PolicyEvaluation:
    """Sample, score and summarise; the same seed gives the same samples.

    - `reward` (when reward_fn is given) and `judge_positive_rate` (when a judge is);
    - `kl_per_sequence`: the sum over generated tokens of log pi - log pi_ref for tokens
      sampled from pi (an unbiased estimate of KL(pi || pi_ref));
    - `ref_perplexity`: exp of the mean per-token negative log-likelihood of the samples
      under the frozen reference: gibberish scores high. Divided by the same figure for
      the reference's own samples it is the fluency ratio the promotion gate bounds;
    - `reward_hacking_rate` (with a judge and a `reward_threshold`, the reward above
      which the reward model calls a text positive): the share of samples the reward
      model calls positive and the judge does not. Optimising against the reward model
      raises it when the policy learns the reward model's blind spots (the red-team
      disagreement of `engine.adversarial.redteam`, on the plain held-out prompts);
    - `distinct_2`, `repetition_rate`, `empty_rate` of all responses (text_quality).
    """
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt: must be >= 1, got {samples_per_prompt}")
    if not prompts:
        raise ValueError("prompts: nothing to evaluate")
    device = next(policy.parameters()).device
    if use_autocast is None:
        use_autocast = device.type == "cpu"
    use_chat = chat_template and bool(getattr(tokenizer, "chat_template", None))
    ids = encode_prompts(tokenizer, prompts, use_chat, max_prompt_tokens)
    # Row r is sample r % k of prompt r // k: the k samples of a prompt sit together.
    rows = [i for i in range(len(prompts)) for _ in range(samples_per_prompt)]
    kls: list[float] = []
    rewards: list[float] = []
    positives: list[float] = []
    hacking: list[float] = []
    texts: list[str] = []
    responses: list[str] = []
    ref_nll, ref_tokens = 0.0, 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(rows), batch_size):
            batch_rows = rows[start : start + batch_size]
            rollout = sample(
                policy,
                tokenizer,
                [ids[i] for i in batch_rows],
                max_new_tokens,
                use_autocast=use_autocast,
            )
            logp = rollout_logprobs(policy, rollout, use_autocast)
            ref_logp = rollout_logprobs(reference, rollout, use_autocast)
            mask = rollout.response_mask
            kls.extend(((logp - ref_logp) * mask).sum(1).tolist())
            ref_nll -= float((ref_logp.float() * mask).sum())
            ref_tokens += float(mask.sum())
            batch_responses = decode_responses(tokenizer, rollout)
            full = [prompts[i] + r for i, r in zip(batch_rows, batch_responses, strict=True)]
            if reward_fn is not None:
                batch_rewards = torch.as_tensor(reward_fn(full)).float().tolist()
                rewards.extend(batch_rewards)
            if judge is not None:
                verdicts = [float(p.label == "positive") for p in judge.predict(full)]
                positives.extend(verdicts)
                if reward_fn is not None and reward_threshold is not None:
                    hacking.extend(
                        float(r > reward_threshold and not v)
                        for r, v in zip(batch_rewards, verdicts, strict=True)
                    )
            texts.extend(full)
            responses.extend(batch_responses)

    per_sample = {
        "kl_per_sequence": kls,
        "reward": rewards,
        "judge_positive_rate": positives,
        "reward_hacking_rate": hacking,
    }
    per_prompt = {
        name: _prompt_means(values, samples_per_prompt)
        for name, values in per_sample.items()
        if values
    }
    metrics = {name: sum(values) / len(values) for name, values in per_prompt.items()}
    intervals = {
        name: bootstrap_interval(values, confidence, seed=seed)
        for name, values in per_prompt.items()
    }
    metrics["ref_perplexity"] = math.exp(ref_nll / ref_tokens) if ref_tokens else math.inf
    metrics |= text_quality(responses)
    shown = [
        {"prompt": prompts[i], "text": t, "response": r}
        for i, t, r in zip(rows, texts, responses, strict=True)
    ][::samples_per_prompt][:show]
    return PolicyEvaluation(metrics, intervals, per_prompt, shown)


def _prompt_means(values: list[float], k: int) -> list[float]:
    return [sum(values[i : i + k]) / k for i in range(0, len(values), k)]


def compare_generations(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Gate inputs from two `evaluate_policy` passes over the same prompts: the start
    policy (the frozen reference) and the candidate."""
    metrics = {f"{k}_before": v for k, v in before.items()}
    metrics |= {f"{k}_after": v for k, v in after.items()}
    metrics["kl_per_sequence"] = after["kl_per_sequence"]
    metrics["ref_perplexity_ratio"] = after["ref_perplexity"] / before["ref_perplexity"]
    for key in ("distinct_2", "repetition_rate", "empty_rate"):
        metrics[key] = after[key]
    if "reward_hacking_rate" in after:
        metrics["reward_hacking_rate"] = after["reward_hacking_rate"]
    return metrics
