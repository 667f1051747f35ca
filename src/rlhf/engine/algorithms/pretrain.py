"""Causal-LM pre-training from scratch: next-token prediction on packed text blocks.

Texts are tokenised, joined with EOS and cut into ``block_size`` blocks (no padding
waste); every token carries loss. The model is usually ``tiny_causal_lm`` built from
a config, with a tokenizer from ``tiny_char_tokenizer`` or one trained with the
``tokenizers`` library.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf.engine.algorithms.lm_training import LMTrainConfig, LMTrainResult, train_lm


@dataclass
class PretrainConfig(LMTrainConfig):
    """Pre-training settings (plus everything in LMTrainConfig)."""

    block_size: int = 128
    """Tokens per training block."""
    eval_fraction: float = 0.05
    """Fraction of blocks held out for perplexity (0 = none)."""


def pack_blocks(tokenizer: Any, texts: Sequence[str], block_size: int) -> list[list[int]]:
    """Tokenise, join with EOS and cut into full blocks of ``block_size`` tokens."""
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}]: expected a string, got {type(text).__name__}")
        if text.strip():
            stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
            if eos is not None:
                stream.append(eos)
    blocks = [
        stream[i : i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)
    ]
    if not blocks:
        raise ValueError(
            f"texts: {len(stream)} tokens in all, fewer than one block of {block_size}"
        )
    return blocks


def pretrain(
    config: PretrainConfig,
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> LMTrainResult:
    """Pre-train ``model`` in place on ``texts``; the last blocks are held out for perplexity."""
    blocks = pack_blocks(tokenizer, texts, config.block_size)
    n_eval = int(len(blocks) * config.eval_fraction) if len(blocks) > 1 else 0
    train_blocks, eval_blocks = blocks[: len(blocks) - n_eval], blocks[len(blocks) - n_eval :]
    examples = [(b, [1.0] * len(b)) for b in train_blocks]
    eval_examples = [(b, [1.0] * len(b)) for b in eval_blocks]
    return train_lm(
        config, model, tokenizer, examples, eval_examples, name="pretrain", on_step=on_step
    )
