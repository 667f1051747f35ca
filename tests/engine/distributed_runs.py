"""Small pre-training, PPO, RLOO and DPO runs on tiny models, for tests/engine/test_distributed.py.

The test calls ``run_all`` in its own (single) process and runs this file under
``torchrun --standalone --nproc_per_node 2``; both write what they trained to ``OUT``.
Each algorithm writes to ``OUT/rank<r>/<name>`` (so the test sees which ranks wrote),
except the resumed PPO run, which shares one directory as real runs do.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.engine import distributed
from rlhf.engine.algorithms.dpo import DPOConfig, train_dpo
from rlhf.engine.algorithms.ppo import PPOConfig, train_ppo
from rlhf.engine.algorithms.pretrain import PretrainConfig, pretrain
from rlhf.engine.algorithms.rloo import RLOOConfig, train_rloo
from rlhf.engine.models import tiny_causal_lm, tiny_char_tokenizer

ALPHABET = "abcdefgh "
PROMPTS = ["ab", "cd", "ef", "gh", "a b", "c d", "bead", "fed"]
COMMON: dict[str, Any] = dict(autocast=False, progress=False, checkpoint_every=2)
RL: dict[str, Any] = dict(max_new_tokens=6, score_full_text=False, learning_rate=3e-3, **COMMON)


class Interrupt(Exception):
    """Stands for a killed job (raised on every rank at the same step)."""


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str


def fraction_of_a(texts: list[str]) -> torch.Tensor:
    return torch.tensor([t.count("a") / max(1, len(t)) for t in texts])


def interrupted_after(calls: int):
    """The toy reward, raising Interrupt at its (calls + 1)-th call."""
    count = {"n": 0}

    def reward(texts: list[str]) -> torch.Tensor:
        count["n"] += 1
        if count["n"] > calls:
            raise Interrupt
        return fraction_of_a(texts)

    return reward


def toy_pairs(n: int) -> list[Pair]:
    rng = random.Random(0)
    word = lambda letters, k: "".join(rng.choice(letters) for _ in range(k))  # noqa: E731
    return [Pair(word("abcdefgh", 4), word("abc", 6), word("fgh", 6)) for _ in range(n)]


def tiny_lm(tok: Any) -> Any:
    return tiny_causal_lm(len(tok), hidden_size=32, num_layers=1, num_heads=2, seed=0)


def ppo_config(out: Path) -> PPOConfig:
    return PPOConfig(total_steps=4, batch_size=8, output_dir=str(out), **RL)


def run_all(out: Path) -> dict[str, list[dict[str, float]]]:
    """Train each algorithm once; return (and write) the histories."""
    tok = tiny_char_tokenizer(ALPHABET)
    mine = out / f"rank{distributed.rank()}"
    texts = ["abcabcabc " * 8, "defdefdef " * 8, "ghghgh " * 10] * 2
    histories = {
        "pretrain": pretrain(
            PretrainConfig(
                total_steps=4,
                batch_size=4,
                block_size=16,
                eval_fraction=0.0,
                learning_rate=1e-2,
                warmup_steps=1,
                output_dir=str(mine / "pretrain"),
                **COMMON,
            ),
            tiny_lm(tok),
            tok,
            texts,
        ).history,
        "ppo": train_ppo(
            ppo_config(mine / "ppo"), tiny_lm(tok), tok, fraction_of_a, PROMPTS
        ).history,
        "rloo": train_rloo(
            RLOOConfig(total_steps=3, num_prompts=4, k=2, output_dir=str(mine / "rloo"), **RL),
            tiny_lm(tok),
            tok,
            fraction_of_a,
            PROMPTS,
        ).history,
        "dpo": train_dpo(
            DPOConfig(
                batch_size=4,
                learning_rate=3e-3,
                warmup_steps=1,
                output_dir=str(mine / "dpo"),
                **COMMON,
            ),
            tiny_lm(tok),
            tok,
            toy_pairs(16),
        ).history,
    }
    # Killed during step 3 (one reward call per step), then started again: it resumes
    # from the step-2 checkpoint in the directory all ranks share.
    shared = out / "shared" / "ppo"
    with contextlib.suppress(Interrupt):
        train_ppo(ppo_config(shared), tiny_lm(tok), tok, interrupted_after(2), PROMPTS)
    histories["ppo_resumed"] = train_ppo(
        ppo_config(shared), tiny_lm(tok), tok, fraction_of_a, PROMPTS
    ).history
    (out / f"histories-rank{distributed.rank()}.json").write_text(json.dumps(histories))
    return histories


if __name__ == "__main__":
    assert int(os.environ.get("WORLD_SIZE", "1")) > 1, "run me under torchrun"
    torch.set_num_threads(1)
    run_all(Path(sys.argv[1]))
