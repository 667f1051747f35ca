"""Gradient accumulation: micro-batches step like the whole batch, in less memory."""

from __future__ import annotations

import pytest

from rlhf.engine.algorithms.dpo import DPOConfig, train_dpo
from rlhf.engine.algorithms.sft import SFTConfig, train_sft

from .conftest import same_weights
from .test_dpo import toy_pairs

COMMON = dict(autocast=False, progress=False, learning_rate=1e-3, warmup_steps=1)


@pytest.mark.parametrize("parts", [2, 3])
def test_dpo_micro_batches_give_the_whole_batch_update(tok, make_lm, parts):
    pairs = toy_pairs(24)
    whole, split = make_lm(), make_lm()
    cfg = dict(epochs=1, batch_size=8, use_chat_template=False, **COMMON)
    a = train_dpo(DPOConfig(**cfg), whole, tok, pairs)
    b = train_dpo(DPOConfig(gradient_accumulation_steps=parts, **cfg), split, tok, pairs)
    assert [h["loss"] for h in b.history] == pytest.approx([h["loss"] for h in a.history])
    assert [h["accuracy"] for h in b.history] == [h["accuracy"] for h in a.history]
    assert same_weights(whole, split, atol=1e-5)


def test_sft_micro_batches_weigh_each_token_once(tok, make_lm):
    # Responses of different lengths: a plain mean of micro-batch means would differ.
    examples = [{"prompt": p, "response": p[::-1] * n} for n, p in enumerate(["ab", "cd", "ef"], 1)]
    whole, split = make_lm(), make_lm()
    cfg = dict(total_steps=4, batch_size=6, use_chat_template=False, **COMMON)
    a = train_sft(SFTConfig(**cfg), whole, tok, examples * 2)
    b = train_sft(SFTConfig(gradient_accumulation_steps=2, **cfg), split, tok, examples * 2)
    assert [h["loss"] for h in b.history] == pytest.approx([h["loss"] for h in a.history])
    assert same_weights(whole, split, atol=1e-5)
