"""RL bar (ppo / rloo / grpo): SmolLM2-135M learns to continue IMDB review openings positively.

Prompts are the first 5-8 words of IMDB reviews (the same 70/30 hash split as the
judge: training prompts from the 70%, evaluation prompts from the held-out 30%).
The reward is the SST-2 MiniLM classifier's P(positive) of prompt+continuation; the
judge is a classifier trained on the IMDB sample only (40-word windows of the 70%
split: `bench/quality.py classifier --judge`), never optimised against, so reward
hacking would show as reward up, judge flat. The judge is calibrated on held-out IMDB
windows (53.6% predicted positive, 49.9% true) yet calls ~73% of the untrained
policy's continuations positive: SmolLM2's own text leans positive. Before and after
training the policy samples `--eval-samples` (4) 32-token continuations per held-out
prompt (same seed) and we report the judge's positive rate, the mean reward and the
mean KL(policy || ref) in nats per sequence (summed over generated tokens), each
averaged per prompt, with 95% bootstrap intervals over prompts; the judge gain's
interval is paired (the same prompts before and after).

    python bench/quality.py ppo --json                    # one seed
    python bench/quality.py ppo --json --seeds 0,1,2,3    # per seed, mean and worst
    python bench/quality.py rloo --json --seeds 0,1,2,3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Idle OpenMP threads must sleep, not spin: on a shared 2-core machine spinning
# threads made SmolLM2 generation ~10x slower. Read by libgomp when torch loads, so it
# is set here, before any torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=os.environ.get("RLHF_DATA_DIR", str(DEFAULT_DATA)))
    parser.add_argument("--policy", default="smollm2", help="causal LM name or directory")
    parser.add_argument(
        "--reward-model",
        default=None,
        help="reward classifier dir; default: built once and cached (bench/prepared.py)",
    )
    parser.add_argument(
        "--judge-model",
        default=None,
        help="held-out judge dir; default: built once and cached (bench/prepared.py)",
    )
    parser.add_argument(
        "--reward",
        choices=["prob", "logodds"],
        default="prob",
        help="reward = P(positive) (bounded) or its log-odds",
    )
    parser.add_argument("--minutes", type=float, default=28.0, help="wall-clock budget in all")
    parser.add_argument("--steps", type=int, default=1000, help="max training steps")
    parser.add_argument("--eval-prompts", type=int, default=160, help=">= 128 held-out prompts")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: per algorithm")
    parser.add_argument("--kl-coef", type=float, default=None, help="initial beta (per algorithm)")
    parser.add_argument(
        "--kl-target", type=float, default=None, help="adaptive target, nats/seq (per algorithm)"
    )
    parser.add_argument(
        "--kl-horizon", type=float, default=None, help="beta's horizon, episodes (per algorithm)"
    )
    parser.add_argument(
        "--kl-budget",
        type=float,
        default=None,
        help="training stops (and restores) past this KL (per algorithm)",
    )
    parser.add_argument(
        "--kl-budget-smoothing",
        type=float,
        default=None,
        help="newest batch's weight in the KL average the budget checks (per algorithm)",
    )
    parser.add_argument(
        "--kl-overshoot-factor",
        type=float,
        default=None,
        help="beta's multiplier at a budget overshoot (per algorithm)",
    )
    parser.add_argument(
        "--kl-budget-retries",
        type=int,
        default=3,
        help="budget overshoots survived (restore, double beta, go on) before stopping",
    )
    parser.add_argument(
        "--min-kl-coef", type=float, default=None, help="floor for beta (per algorithm)"
    )
    parser.add_argument("--lam", type=float, default=None, help="PPO's GAE lambda")
    parser.add_argument("--batch", type=int, default=32, help="episodes per step")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt (rloo/grpo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds run one after another (e.g. 0,1,2,3): per-seed "
        "figures, their mean and worst; --out gets one seed-N directory each",
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=4,
        help="continuations per held-out prompt, before and after (averaged per prompt)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-autocast", action="store_true", help="fp32 instead of bf16 autocast")
    parser.add_argument("--out", default=None, help="run directory (metrics, final policy)")
    parser.add_argument("--samples", type=int, default=4, help="samples shown before/after")


# The defaults of the measured runs (docs/algorithms.md), per algorithm: a flag given on
# the command line wins. Per-sequence KL on one 32-episode batch is noisy (about +-1
# nat near the target). RLOO checks its budget on each batch and doubles beta when one
# passes it: its penalty acts on the sequence score and pulls KL back within a step or
# two. PPO's penalty acts per token through the value head, more slowly, and a short
# horizon or a doubled beta wound beta up to 0.1-0.3 and KL 2-3 nats under target for
# 20-30 steps; so PPO moves beta at most ~5% a step (horizon 128 episodes), starts at
# its floor, checks the budget on a moving average of KL (newest batch weighted 0.5)
# and answers an overshoot with x1.5. PPO uses lambda = 1: its value head starts from
# nothing, and with a flat value estimate GAE with lambda 0.95 hands the first
# generated token only 0.95^31 = 0.2 of the credit, although the opening words decide
# the sentiment.
_RLOO_DEFAULTS = {
    "learning_rate": 3e-5,
    "kl_coef": 0.05,
    "kl_target": 7.5,
    "kl_horizon": 32.0,
    "kl_budget": 8.5,
    "kl_budget_smoothing": 1.0,
    "kl_overshoot_factor": 2.0,
    "min_kl_coef": 0.01,
}
KL_DEFAULTS: dict[str, dict[str, float]] = {
    "ppo": {
        "learning_rate": 5e-5,
        "kl_coef": 0.02,
        "kl_target": 7.0,
        "kl_horizon": 128.0,
        "kl_budget": 8.0,
        "kl_budget_smoothing": 0.5,
        "kl_overshoot_factor": 1.5,
        "min_kl_coef": 0.02,
        "lam": 1.0,
    },
    "rloo": _RLOO_DEFAULTS,
    "grpo": _RLOO_DEFAULTS,
}


def resolve_defaults(args: argparse.Namespace, algorithm: str) -> None:
    """Fill the per-algorithm defaults into the flags left unset."""
    for key, value in KL_DEFAULTS[algorithm].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def imdb_prompts(data_dir: Path) -> tuple[list[str], list[str]]:
    """(train prompts, held-out prompts): first 5-8 words of each review."""
    from rlhf.engine.data import dedup, hash_fraction, read_imdb, split_by_hash

    reviews = dedup(read_imdb(data_dir / "imdb" / "imdb_small.csv"))
    split = split_by_hash(reviews, {"train": 0.7, "test": 0.3}, salt="imdb-judge")

    def opening(text: str) -> str:
        words = text.split()
        n = 5 + int(hash_fraction(text, "prompt-length") * 4)  # 5..8 words, stable
        return " ".join(words[:n])

    return [opening(r.text) for r in split["train"]], [opening(r.text) for r in split["test"]]


def evaluate(
    policy: Any,
    ref: Any,
    tokenizer: Any,
    prompts: list[str],
    reward_fn: Any,
    judge: Any,
    args: argparse.Namespace,
    seed: int,
) -> Any:
    """`eval_samples` continuations of every held-out prompt, scored by the reward and
    the judge (rlhf.engine.policy_eval: per-prompt means, bootstrap intervals)."""
    from rlhf.engine.policy_eval import evaluate_policy

    return evaluate_policy(
        policy,
        ref,
        tokenizer,
        prompts,
        reward_fn,
        judge,
        max_new_tokens=args.max_new_tokens,
        samples_per_prompt=args.eval_samples,
        batch_size=32,
        seed=seed,
        show=args.samples,
        use_autocast=not args.no_autocast,
        reward_threshold=0.5 if args.reward == "prob" else 0.0,
    )


def _rounded(interval: tuple[float, float], digits: int) -> list[float]:
    return [round(interval[0], digits), round(interval[1], digits)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One seed (`--seed`), or every seed of `--seeds` with their mean and worst."""
    algorithm = getattr(args, "benchmark", None) or "ppo"
    resolve_defaults(args, algorithm)
    if not args.seeds:
        return run_seed(args, algorithm, args.seed, load_scorers(args))
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    scorers = load_scorers(args)
    out_root = args.out
    rows = []
    for seed in seeds:
        seed_args = argparse.Namespace(**vars(args))
        seed_args.out = str(Path(out_root) / f"seed-{seed}") if out_root else None
        rows.append(run_seed(seed_args, algorithm, seed, scorers))
        print(json.dumps({k: rows[-1][k] for k in SEED_SUMMARY}), file=sys.stderr, flush=True)
    gains = [row["judge_gain"] for row in rows]
    return {
        "algorithm": algorithm,
        "seeds": rows,
        "judge_gain_mean": round(sum(gains) / len(gains), 4),
        "judge_gain_min": min(gains),
        "kl_max": max(row["kl_per_sequence"] for row in rows),
        "minutes_max": max(row["minutes"] for row in rows),
        "reward_model": args.reward_model,
        "judge_model": args.judge_model,
    }


# Printed to stderr as each seed ends, so a long multi-seed run shows where it is.
SEED_SUMMARY = ("seed", "judge_gain", "judge_gain_interval", "kl_per_sequence", "minutes")


def load_scorers(args: argparse.Namespace) -> tuple[Any, Any]:
    """(reward classifier, held-out judge), built once and cached when not given."""
    from prepared import model_or_prepared

    from rlhf.engine.classifier import load_classifier

    use_autocast = not args.no_autocast
    args.reward_model = model_or_prepared(args.reward_model, "classifier-sst2", args.data_dir)
    args.judge_model = model_or_prepared(args.judge_model, "judge-imdb", args.data_dir)
    reward_clf = load_classifier(args.reward_model, device=args.device, autocast=use_autocast)
    judge = load_classifier(args.judge_model, device=args.device, autocast=use_autocast)
    return reward_clf, judge


def run_seed(
    args: argparse.Namespace, algorithm: str, seed: int, scorers: tuple[Any, Any]
) -> dict[str, Any]:
    import torch

    from rlhf.engine.algorithms.ppo import PPOConfig, train_ppo
    from rlhf.engine.algorithms.rloo import RLOOConfig, train_rloo
    from rlhf.engine.models import CausalLMWithValueHead, load_policy, load_tokenizer
    from rlhf.engine.policy_eval import paired_gain

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    use_autocast = not args.no_autocast
    train_prompts, eval_prompts = imdb_prompts(Path(args.data_dir))
    eval_prompts = eval_prompts[: args.eval_prompts]
    if len(eval_prompts) < 128:
        raise SystemExit(f"only {len(eval_prompts)} held-out prompts; the bar needs >= 128")
    reward_clf, judge = scorers

    def reward_fn(texts: list[str]) -> torch.Tensor:
        log_odds = reward_clf.positive_scores(texts)
        return torch.sigmoid(log_odds) if args.reward == "prob" else log_odds

    tokenizer = load_tokenizer(args.policy)
    policy = load_policy(args.policy, device=args.device)
    ref = load_policy(args.policy, device=args.device).eval().requires_grad_(False)

    scoring = (tokenizer, eval_prompts, reward_fn, judge, args, seed + 1)
    before = evaluate(policy, ref, *scoring)
    t_eval = time.perf_counter() - t0
    # Leave room for the final evaluation (about as long as the first one, plus slack); a
    # machine so slow that the evaluations fill the budget trains no step (not a crash).
    train_budget = max(0.0, args.minutes * 60 - (time.perf_counter() - t0) - 1.5 * t_eval - 30)
    if train_budget == 0:
        print(
            f"the evaluation took the whole --minutes {args.minutes:g} budget: no training step",
            file=sys.stderr,
            flush=True,
        )
    common = dict(
        total_steps=args.steps,
        max_new_tokens=args.max_new_tokens,
        learning_rate=args.learning_rate,
        init_kl_coef=args.kl_coef,
        kl_target=args.kl_target,
        kl_horizon=args.kl_horizon,
        kl_budget=args.kl_budget,
        kl_budget_smoothing=args.kl_budget_smoothing,
        kl_budget_retries=args.kl_budget_retries,
        kl_overshoot_factor=args.kl_overshoot_factor,
        min_kl_coef=args.min_kl_coef,
        seed=seed,
        device=args.device,
        autocast=use_autocast,
        output_dir=args.out,
        time_limit_s=train_budget,
        resume=False,
    )
    t_train = time.perf_counter()
    if algorithm == "ppo":
        model = CausalLMWithValueHead(policy)
        result = train_ppo(
            PPOConfig(batch_size=args.batch, mini_batch_size=args.batch, lam=args.lam, **common),
            model,
            tokenizer,
            reward_fn,
            train_prompts,
            ref_model=ref,
        )
        policy = model.lm
    else:
        result = train_rloo(
            RLOOConfig(estimator=algorithm, num_prompts=args.batch // args.k, k=args.k, **common),
            policy,
            tokenizer,
            reward_fn,
            train_prompts,
            ref_model=ref,
        )
    train_s = time.perf_counter() - t_train
    after = evaluate(policy, ref, *scoring)
    gain, gain_interval = paired_gain(
        before.per_prompt["judge_positive_rate"], after.per_prompt["judge_positive_rate"]
    )
    steps = result.steps
    history = result.history
    return {
        "algorithm": algorithm,
        "seed": seed,
        "judge_positive_rate_before": round(before.metrics["judge_positive_rate"], 4),
        "judge_positive_rate_after": round(after.metrics["judge_positive_rate"], 4),
        "judge_positive_rate_after_interval": _rounded(after.intervals["judge_positive_rate"], 4),
        "judge_gain": round(gain, 4),
        "judge_gain_interval": _rounded(gain_interval, 4),
        "reward_before": round(before.metrics["reward"], 4),
        "reward_after": round(after.metrics["reward"], 4),
        "reward_after_interval": _rounded(after.intervals["reward"], 4),
        "kl_per_sequence": round(after.metrics["kl_per_sequence"], 3),
        "kl_per_sequence_interval": _rounded(after.intervals["kl_per_sequence"], 3),
        "kl_per_sequence_before": round(before.metrics["kl_per_sequence"], 3),
        "ref_perplexity_ratio": round(
            after.metrics["ref_perplexity"] / before.metrics["ref_perplexity"], 3
        ),
        "distinct_2": round(after.metrics["distinct_2"], 3),
        "reward_hacking_rate_before": round(before.metrics["reward_hacking_rate"], 4),
        "reward_hacking_rate_after": round(after.metrics["reward_hacking_rate"], 4),
        "minutes": round((time.perf_counter() - t0) / 60, 2),
        "train_minutes": round(train_s / 60, 2),
        "steps": steps,
        "episodes": steps * args.batch,
        "seconds_per_step": round(train_s / max(steps, 1), 2),
        "stopped_on_kl_budget": result.stopped_on_budget,
        "kl_budget_overshoots": result.budget_overshoots,
        "final_kl_coef": round(result.kl_coef, 4),
        "final_batch_kl": round(result.final_kl, 3) if result.final_kl is not None else None,
        "restored_at_end": result.restored_at_end,
        "train_kl_last": round(history[-1]["kl_per_sequence"], 3) if history else None,
        "eval_prompts": len(eval_prompts),
        "eval_samples_per_prompt": args.eval_samples,
        "settings": {key: getattr(args, key) for key in KL_DEFAULTS[algorithm]},
        "samples": {
            "before": [s["text"] for s in before.samples],
            "after": [s["text"] for s in after.samples],
        },
    }
