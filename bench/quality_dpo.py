"""DPO bar: SmolLM2-135M on chat preference pairs; held-out implicit-reward pairwise accuracy.

Pairs: `chat-prefs/dpo_en_demo.json` (sharegpt style) and `hh/harmless-base-test.jsonl.gz`
(Anthropic HH harmless), each split 80/20 by a content hash (salt "dpo"); we train on
the 80% parts (HH capped by --hh-train) and evaluate on the 20% parts (HH capped by
--hh-eval). The implicit reward is beta * (log pi(y|x) - log ref(y|x)); before
training pi == ref so every pair ties (accuracy 0.5 by construction); we also report
the reference's own log-likelihood preference ("loglik accuracy") as a baseline.
Defaults: all 2067 training pairs, learning rate 2e-5, beta 0.1, 8 pairs a step, a 70-minute
training budget (about 0.85 epoch on one core here; about 80 minutes in all with the
comparison reward model).

    flock /tmp/rlhf-heavy.lock python bench/quality.py dpo --json
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--policy", default="smollm2")
    parser.add_argument(
        "--hh-train", type=int, default=None, help="HH training pairs (default: all 1813)"
    )
    parser.add_argument("--hh-eval", type=int, default=100, help="HH held-out pairs")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-prompt-tokens", type=int, default=128)
    parser.add_argument("--max-response-tokens", type=int, default=128)
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=70.0,
        help="training time budget, lazy reference passes included (~0.85 epoch here)",
    )
    parser.add_argument(
        "--reference-pass",
        choices=["upfront", "lazy"],
        default="lazy",
        help="reference log-probs of the training pairs: all first, or as each is drawn "
        "(only the pairs the time budget reaches)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-autocast", action="store_true")
    parser.add_argument("--out", default=None, help="run directory (metrics, final policy)")
    parser.add_argument(
        "--reward-model-minutes",
        type=float,
        default=6.0,
        help="also train a pairwise (Bradley-Terry) MiniLM reward model on the same training "
        "pairs for this long and report its accuracy on the same held-out pairs (0 = skip)",
    )


def load_pairs(
    data_dir: Path, hh_train: int | None, hh_eval: int
) -> dict[str, dict[str, list[Any]]]:
    from rlhf.engine.data import read_hh, read_sharegpt_prefs, split_by_hash

    demo = read_sharegpt_prefs(data_dir / "chat-prefs" / "dpo_en_demo.json")
    hh = read_hh(data_dir / "hh" / "harmless-base-test.jsonl.gz")
    # A few upstream HH pairs have an empty or identical answer: nothing to prefer.
    usable = lambda p: p.chosen.strip() and p.rejected.strip() and p.chosen != p.rejected  # noqa: E731
    demo = [p for p in demo if usable(p)]
    hh = [p for p in hh if usable(p)]
    demo_split = split_by_hash(demo, {"train": 0.8, "test": 0.2}, salt="dpo")
    hh_split = split_by_hash(hh, {"train": 0.8, "test": 0.2}, salt="dpo")
    return {
        "demo": demo_split,
        "hh": {"train": hh_split["train"][:hh_train], "test": hh_split["test"][:hh_eval]},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rlhf.engine.algorithms.dpo import (
        DPOConfig,
        dpo_metrics,
        encode_pair,
        evaluate_dpo,
        reference_logprobs,
        train_dpo,
    )
    from rlhf.engine.models import load_policy, load_tokenizer

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    pairs = load_pairs(Path(args.data_dir), args.hh_train, args.hh_eval)
    train = pairs["demo"]["train"] + pairs["hh"]["train"]
    held_out = {name: split["test"] for name, split in pairs.items()}
    tokenizer = load_tokenizer(args.policy, padding_side="right")
    policy = load_policy(args.policy, device=args.device)
    cfg = DPOConfig(
        beta=args.beta,
        epochs=args.epochs,
        batch_size=args.batch,
        learning_rate=args.learning_rate,
        max_prompt_tokens=args.max_prompt_tokens,
        max_response_tokens=args.max_response_tokens,
        seed=args.seed,
        reference_pass=args.reference_pass,
        device=args.device,
        autocast=not args.no_autocast,
        output_dir=args.out,
        resume=False,
        time_limit_s=args.train_minutes * 60,
    )
    # Reference log-probs of every held-out pair, by source, before any update.
    pad_id = tokenizer.pad_token_id
    encoded = {
        name: [encode_pair(tokenizer, p, cfg, i) for i, p in enumerate(ps)]
        for name, ps in held_out.items()
    }
    ref_logps = {
        name: reference_logprobs(policy, enc, pad_id, cfg) for name, enc in encoded.items()
    }
    before = {name: dpo_metrics(ref_logps[name], ref_logps[name], cfg.beta) for name in encoded}
    t_train = time.perf_counter()
    result = train_dpo(cfg, policy, tokenizer, train)
    train_minutes = (time.perf_counter() - t_train) / 60
    after = {
        name: evaluate_dpo(policy, encoded[name], ref_logps[name], pad_id, cfg) for name in encoded
    }

    def pooled(metrics: dict[str, dict[str, float]], key: str) -> float:
        total = sum(len(encoded[n]) for n in encoded)
        return sum(metrics[n][key] * len(encoded[n]) for n in encoded) / total

    out: dict[str, Any] = {
        "pairwise_accuracy_before": round(pooled(before, "pairwise_accuracy"), 4),
        "pairwise_accuracy_after": round(pooled(after, "pairwise_accuracy"), 4),
        "loglik_accuracy_before": round(pooled(before, "loglik_accuracy"), 4),
        "loglik_accuracy_after": round(pooled(after, "loglik_accuracy"), 4),
        "heldout_loss_before": round(pooled(before, "loss"), 4),
        "heldout_loss_after": round(pooled(after, "loss"), 4),
        "by_source": {
            name: {
                "pairs": len(encoded[name]),
                "pairwise_accuracy_after": round(after[name]["pairwise_accuracy"], 4),
                "loglik_accuracy_before": round(before[name]["loglik_accuracy"], 4),
                "reward_margin_after": round(after[name]["reward_margin"], 4),
            }
            for name in encoded
        },
        "train_pairs": len(train),
        "steps": result.steps,
        "epochs_done": round(result.steps * args.batch / len(train), 3),
        "train_minutes": round(train_minutes, 2),
        "minutes": round((time.perf_counter() - t0) / 60, 2),
        "final_train_loss": round(result.history[-1]["loss"], 4) if result.history else None,
    }
    if args.reward_model_minutes > 0:
        del policy
        out["reward_model"] = pairwise_reward_model(args, train, held_out)
    out["minutes"] = round((time.perf_counter() - t0) / 60, 2)
    return out


def pairwise_reward_model(
    args: argparse.Namespace, train: list[Any], held_out: dict[str, list[Any]]
) -> dict[str, Any]:
    """The same training pairs through a Bradley-Terry MiniLM reward model: the
    explicit-reward baseline for the implicit reward above, on the same held-out pairs."""
    from rlhf.engine.reward_training import (
        RewardModelTrainConfig,
        evaluate_reward_model,
        train_reward_model,
    )

    t0 = time.perf_counter()
    config = RewardModelTrainConfig(
        backbone="minilm",
        max_length=256,
        epochs=2.0,
        time_limit_s=60 * args.reward_model_minutes,
        autocast=args.device == "cpu" and not args.no_autocast,
        freeze_embeddings=True,
        seed=args.seed,
        device=args.device,
    )
    model = train_reward_model(config, train).classifier
    by_source = {name: evaluate_reward_model(model, pairs) for name, pairs in held_out.items()}
    total = sum(len(pairs) for pairs in held_out.values())
    pooled = sum(m["pairwise_accuracy"] * len(held_out[n]) for n, m in by_source.items()) / total
    return {
        "pairwise_accuracy": round(pooled, 4),
        "by_source": {n: round(m["pairwise_accuracy"], 4) for n, m in by_source.items()},
        "minutes": round((time.perf_counter() - t0) / 60, 2),
    }
