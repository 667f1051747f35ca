"""Throughput and quality of our GRPO (or RLOO) loop against TRL's trainer of the same name.

Both runs use the same policy (SmolLM2-135M-Instruct), reward (the SST-2 MiniLM
classifier's P(positive) of prompt+completion), training prompts (IMDB review
openings), batch (8 prompts x 4 samples), 32 new tokens, sampling at temperature 1
without top-k/top-p, precision (bf16 on a CPU that multiplies it natively, else float32),
learning rate, KL coefficient and number of steps; they run one after the other in this
process. Throughput counts training episodes (prompt+completion pairs) per second of
``train()`` wall time. Afterwards each policy continues the same held-out prompts and
the IMDB judge scores them.

Ten steps move the judge by a few points, about as much as one seed differs from the
next, so the pair runs once per seed (``--seeds``, default 5: seeds 0-4), every
evaluation samples with the same fixed seed (common random numbers), and the
quality keys are means over seeds; ``per_seed`` keeps the individual runs. Throughput
is total episodes over total ``train()`` seconds.

    flock /tmp/rlhf-heavy.lock python bench/ppo_vs_trl.py --json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Idle OpenMP threads must sleep, not spin: on a shared 2-core machine spinning
# threads made SmolLM2 generation ~10x slower. Read by libgomp when torch loads, so it
# is set here, before any torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).parent))

from prepared import model_or_prepared  # noqa: E402
from quality_rl import DEFAULT_DATA, imdb_prompts  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--algorithm", choices=["grpo", "rloo"], default="grpo")
    p.add_argument("--data-dir", default=os.environ.get("RLHF_DATA_DIR", str(DEFAULT_DATA)))
    p.add_argument("--policy", default="smollm2")
    p.add_argument(
        "--reward-model",
        default=None,
        help="reward classifier dir; default: built once and cached (bench/prepared.py)",
    )
    p.add_argument(
        "--judge-model",
        default=None,
        help="held-out judge dir; default: built once and cached (bench/prepared.py)",
    )
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--k", type=int, default=4, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--beta", type=float, default=0.05, help="KL coefficient (fixed in both)")
    p.add_argument("--eval-prompts", type=int, default=256, help="held-out prompts judged")
    p.add_argument(
        "--trl-gradient-checkpointing",
        choices=["default", "on", "off"],
        default="default",
        help="TRL turns it on by default; 'off' measures TRL without it",
    )
    p.add_argument("--skip-trl", action="store_true", help="measure ours only")
    p.add_argument("--seed", type=int, default=0, help="first training seed")
    p.add_argument("--seeds", type=int, default=5, help="training seeds per side")
    p.add_argument("--eval-seed", type=int, default=1, help="sampling seed of every evaluation")
    p.add_argument("--eval-samples", type=int, default=4, help="continuations per held-out prompt")
    return p.parse_args(argv)


def run_ours(args, tokenizer, reward_fn, prompts, ref) -> tuple[Any, dict[str, Any]]:
    """``ref`` is the frozen reference, built outside the timed region as TRL builds
    its own in the trainer's constructor (its clock runs around ``train()`` only)."""
    from rlhf.engine.algorithms.rloo import RLOOConfig, train_rloo
    from rlhf.engine.models import load_policy

    policy = load_policy(args.policy)
    cfg = RLOOConfig(
        estimator=args.algorithm,
        total_steps=args.steps,
        num_prompts=args.prompts_per_step,
        k=args.k,
        max_new_tokens=args.max_new_tokens,
        learning_rate=args.learning_rate,
        init_kl_coef=args.beta,
        kl_target=None,
        seed=args.seed,
        autocast=True,
        progress=False,
    )
    t0 = time.perf_counter()
    result = train_rloo(cfg, policy, tokenizer, reward_fn, prompts, ref_model=ref)
    seconds = time.perf_counter() - t0
    h = result.history
    breakdown = {
        key: round(statistics.median(row[f"time_{key}_s"] for row in h), 2)
        for key in ("generate", "reference", "update", "step")
    }
    return policy, {"seconds": seconds, "steps": result.steps, "median_s": breakdown}


def run_trl(args, tokenizer, reward_fn, prompts) -> tuple[Any, dict[str, Any]]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from rlhf.engine.models import load_policy
    from rlhf.engine.training import cpu_bf16

    policy = load_policy(args.policy)
    n = args.prompts_per_step * args.k

    def trl_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return reward_fn([p + c for p, c in zip(prompts, completions, strict=True)]).tolist()

    step_times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_a, **_k):
            self.t = time.perf_counter()

        def on_step_end(self, *_a, **_k):
            step_times.append(time.perf_counter() - self.t)

    common = dict(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        max_steps=args.steps,
        per_device_train_batch_size=n,
        gradient_accumulation_steps=1,
        num_generations=args.k,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=args.learning_rate,
        beta=args.beta,
        # bf16 where the CPU multiplies it natively, as our loop's autocast=True does;
        # emulated bf16 (AVX2-only CPUs) would slow TRL ~10x and flatter the ratio.
        bf16=cpu_bf16("cpu", True),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=args.seed,
        num_iterations=1,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
    )
    if args.trl_gradient_checkpointing != "default":
        common["gradient_checkpointing"] = args.trl_gradient_checkpointing == "on"
    config_cls, trainer_cls = (
        (GRPOConfig, GRPOTrainer) if args.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    )
    config = config_cls(**common)
    dataset = Dataset.from_dict({"prompt": prompts})
    trainer = trainer_cls(
        model=policy,
        reward_funcs=trl_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    t0 = time.perf_counter()
    # Trainer prints its log dicts to stdout; keep stdout for the one JSON object.
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train()
    seconds = time.perf_counter() - t0
    policy = trainer.model
    return policy, {
        "seconds": seconds,
        "steps": len(step_times),
        "median_s": {"step": round(statistics.median(step_times), 2) if step_times else None},
        "gradient_checkpointing": bool(config.gradient_checkpointing),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from rlhf.engine.classifier import load_classifier
    from rlhf.engine.models import load_policy, load_tokenizer
    from rlhf.engine.policy_eval import evaluate_policy

    args = parse_args(argv)
    if args.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    train_prompts, eval_prompts = imdb_prompts(Path(args.data_dir))
    eval_prompts = eval_prompts[: args.eval_prompts]
    args.reward_model = model_or_prepared(args.reward_model, "classifier-sst2", args.data_dir)
    args.judge_model = model_or_prepared(args.judge_model, "judge-imdb", args.data_dir)
    reward_clf = load_classifier(args.reward_model, autocast=True)
    judge = load_classifier(args.judge_model, autocast=True)

    def reward_fn(texts: list[str]) -> torch.Tensor:
        return torch.sigmoid(reward_clf.positive_scores(texts))

    tokenizer = load_tokenizer(args.policy)
    ref = load_policy(args.policy).eval().requires_grad_(False)

    def evaluate(model: Any) -> dict[str, float]:
        return evaluate_policy(
            model,
            ref,
            tokenizer,
            eval_prompts,
            reward_fn,
            judge,
            max_new_tokens=args.max_new_tokens,
            samples_per_prompt=args.eval_samples,
            batch_size=32,
            seed=args.eval_seed,
            use_autocast=True,
        ).metrics

    before = evaluate(ref)

    sides = ["ours"] if args.skip_trl else ["ours", "trl"]
    per_seed: list[dict[str, Any]] = []
    for seed in range(args.seed, args.seed + args.seeds):
        seed_args = argparse.Namespace(**{**vars(args), "seed": seed})
        row: dict[str, Any] = {"seed": seed}
        for side in sides:
            torch.manual_seed(seed)
            if side == "ours":
                policy, timing = run_ours(seed_args, tokenizer, reward_fn, train_prompts, ref)
            else:
                tokenizer_trl = load_tokenizer(args.policy)
                policy, timing = run_trl(seed_args, tokenizer_trl, reward_fn, train_prompts)
            policy.eval()
            scores = evaluate(policy)
            del policy
            gc.collect()
            row[side] = {
                "seconds": round(timing["seconds"], 1),
                "median_step_s": timing["median_s"],
                "judge_positive_rate": round(scores["judge_positive_rate"], 4),
                "reward": round(scores["reward"], 4),
                "kl_per_sequence": round(scores["kl_per_sequence"], 3),
            }
            if side == "trl":
                row[side]["gradient_checkpointing"] = timing["gradient_checkpointing"]
        per_seed.append(row)
        print(f"[ppo_vs_trl] seed {seed}: {json.dumps(row)}", file=sys.stderr, flush=True)

    episodes = args.steps * args.prompts_per_step * args.k * args.seeds
    judge_before = before["judge_positive_rate"]
    result: dict[str, Any] = {
        "algorithm": args.algorithm,
        "steps": args.steps,
        "seeds": args.seeds,
        "batch": f"{args.prompts_per_step}x{args.k}",
        "max_new_tokens": args.max_new_tokens,
        "eval_prompts": len(eval_prompts),
        "judge_positive_rate_before": round(judge_before, 4),
        "reward_before": round(before["reward"], 4),
    }
    for side in sides:
        seconds = sum(row[side]["seconds"] for row in per_seed)
        judge_rate = statistics.mean([row[side]["judge_positive_rate"] for row in per_seed])
        result.update(
            {
                f"{side}_episodes_per_s": round(episodes / seconds, 3),
                f"{side}_seconds_per_step": round(seconds / (args.steps * args.seeds), 2),
                f"{side}_judge_positive_rate": round(judge_rate, 4),
                f"{side}_judge_gain": round(judge_rate - judge_before, 4),
                f"{side}_reward": round(
                    statistics.mean([row[side]["reward"] for row in per_seed]), 4
                ),
                f"{side}_kl_per_sequence": round(
                    statistics.mean([row[side]["kl_per_sequence"] for row in per_seed]), 3
                ),
            }
        )
    if not args.skip_trl:
        result["ratio"] = round(result["ours_episodes_per_s"] / result["trl_episodes_per_s"], 3)
        result["judge_gain_at_least_trl"] = result["ours_judge_gain"] >= result["trl_judge_gain"]
    result["per_seed"] = per_seed
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value}")
    return result


if __name__ == "__main__":
    main()
