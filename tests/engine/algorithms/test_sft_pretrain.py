"""SFT (loss on responses only) and pre-training from scratch on a tiny model."""

from __future__ import annotations

import pytest
import torch

from rlhf.engine.algorithms.pretrain import PretrainConfig, pack_blocks, pretrain
from rlhf.engine.algorithms.rollout import encode_chat_prompt
from rlhf.engine.algorithms.sft import SFTConfig, SFTExample, encode_sft, train_sft

from .conftest import Interrupt, same_weights

FAST = dict(batch_size=8, autocast=False, progress=False, warmup_steps=2)


def test_sft_loss_mask_covers_only_the_response(tok):
    ids, mask = encode_sft(tok, SFTExample("abc", "hhh"), SFTConfig())
    prompt_len = len(encode_chat_prompt(tok, "abc", use_chat_template=True))
    assert tok.decode(ids[:prompt_len]) == "<|user|>abc<eos><|assistant|>"
    assert mask[:prompt_len] == [0.0] * prompt_len
    assert tok.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "hhh<eos>"
    with pytest.raises(ValueError, match=r"examples\[0\].response"):
        train_sft(SFTConfig(**FAST), None, tok, [{"prompt": "a", "response": " "}])
    with pytest.raises(ValueError, match=r"examples\[0\]: expected keys"):
        train_sft(SFTConfig(**FAST), None, tok, [{"text": "a"}])


def test_sft_learns_the_response_mapping(tok, make_lm):
    examples = [
        {"prompt": p, "response": p[::-1] * 2} for p in ["abc", "bcd", "cde", "def", "efg", "fgh"]
    ]
    messages = [
        {"messages": [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "ba"}]}
    ]
    result = train_sft(
        SFTConfig(total_steps=40, learning_rate=1e-2, **FAST), make_lm(), tok, examples + messages
    )
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_pretrain_packs_blocks_and_lowers_perplexity(tok, make_lm):
    texts = ["abcabcabc " * 8, "defdefdef " * 8, "ghghgh " * 10] * 4
    blocks = pack_blocks(tok, texts, 16)
    assert all(len(b) == 16 for b in blocks)
    with pytest.raises(ValueError, match="fewer than one block"):
        pack_blocks(tok, ["ab"], 16)
    model = make_lm()
    cfg = PretrainConfig(
        total_steps=40, learning_rate=1e-2, block_size=16, eval_fraction=0.1, **FAST
    )
    result = pretrain(cfg, model, tok, texts)
    assert result.history[-1]["eval_perplexity"] < 3.0  # from ~len(vocab) = 16 at init
    assert result.history[0]["loss"] > 2.0


def test_pretrain_resume_reproduces_the_uninterrupted_run(tok, make_lm, tmp_path):
    texts = ["abcdefgh " * 20] * 3
    cfg = dict(
        total_steps=6,
        learning_rate=1e-2,
        block_size=16,
        eval_fraction=0.0,
        checkpoint_every=1,
        **FAST,
    )
    full = make_lm()
    pretrain(PretrainConfig(output_dir=str(tmp_path / "a"), **cfg), full, tok, texts)
    killed = make_lm()
    calls = {"n": 0}

    def bomb(_module, _inputs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise Interrupt

    handle = killed.register_forward_pre_hook(bomb)
    with pytest.raises(Interrupt):
        pretrain(PretrainConfig(output_dir=str(tmp_path / "b"), **cfg), killed, tok, texts)
    handle.remove()
    resumed = make_lm()
    result = pretrain(PretrainConfig(output_dir=str(tmp_path / "b"), **cfg), resumed, tok, texts)
    assert result.steps == 6 and same_weights(full, resumed)
    assert torch.equal(resumed.lm_head.weight, full.lm_head.weight)
