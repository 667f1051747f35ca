"""Policy loading, tiny models, the value head and exact checkpoints."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rlhf.engine import checkpoint as ckpt
from rlhf.engine.models import (
    SMOLLM2_CACHE_NAME,
    CausalLMWithValueHead,
    ModelLoadError,
    load_policy,
    load_tokenizer,
    tiny_causal_lm,
    tiny_char_tokenizer,
)


@pytest.fixture()
def tiny(tmp_path):
    tok = tiny_char_tokenizer()
    lm = tiny_causal_lm(len(tok), hidden_size=32, num_layers=1)
    directory = tmp_path / "tiny"
    lm.save_pretrained(directory)
    tok.save_pretrained(directory)
    return lm, tok, directory


def test_char_tokenizer_round_trip_and_chat_template():
    tok = tiny_char_tokenizer()
    ids = tok("Hello, world!", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("Hello, world!")
    assert tok.decode(ids) == "Hello, world!"
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "<|user|>hi<eos><|assistant|>"
    chat_ids = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True
    )
    chat_ids = chat_ids["input_ids"] if not isinstance(chat_ids, list) else chat_ids
    assert tok.convert_ids_to_tokens(chat_ids[0]) == "<|user|>"


def test_tiny_model_is_seeded_and_reloads_identically(tiny):
    lm, tok, directory = tiny
    again = tiny_causal_lm(len(tok), hidden_size=32, num_layers=1)
    for a, b in zip(lm.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    loaded = load_policy(directory)
    ids = torch.tensor([tok("abc")["input_ids"]])
    assert torch.equal(lm(ids).logits, loaded(ids).logits)
    assert (directory / "model.safetensors").is_file()
    loaded_tok = load_tokenizer(directory)
    assert loaded_tok.padding_side == "left" and loaded_tok.pad_token == "<pad>"


def test_load_policy_errors_name_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_policy(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_policy(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_policy(tmp_path / "file.txt")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no weights"):
        load_policy(tmp_path / "noweights")


def test_smollm2_name_uses_the_safetensors_cache(tiny, tmp_path, monkeypatch):
    """A populated cache is loaded directly: no GGUF conversion happens."""
    lm, tok, _ = tiny
    monkeypatch.setenv("RLHF_CACHE_DIR", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / SMOLLM2_CACHE_NAME
    lm.save_pretrained(cached)
    tok.save_pretrained(cached)
    import rlhf.engine.models as models

    monkeypatch.setattr(models, "_smollm2_gguf_file", lambda: pytest.fail("converted again"))
    loaded = load_policy("smollm2")
    assert loaded.config.hidden_size == 32


def test_value_head_saves_next_to_a_loadable_lm(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    lm, tok, _ = tiny
    model = CausalLMWithValueHead(lm)
    torch.nn.init.normal_(model.v_head.weight)
    ids = torch.tensor([tok("abcd")["input_ids"]])
    logits, values = model(ids)
    assert logits.shape[:2] == values.shape == ids.shape
    model.save_pretrained(tmp_path / "vh")
    again = CausalLMWithValueHead.from_pretrained(tmp_path / "vh")
    assert torch.equal(again(ids)[1], values)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "vh")
    assert torch.equal(plain(ids).logits, logits)


def test_checkpoint_restores_modules_optimizer_and_rngs(tiny, tmp_path):
    lm, _, _ = tiny
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    lm(torch.tensor([[5, 6, 7]])).logits.sum().backward()
    opt.step()
    ckpt.seed_everything(3)
    path = ckpt.save_checkpoint(tmp_path / "run", 7, {"m": lm}, {"o": opt}, state={"cursor": 5})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    saved = {k: v.clone() for k, v in lm.state_dict().items()}

    other = tiny_causal_lm(lm.config.vocab_size, hidden_size=32, num_layers=1, seed=9)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    assert ckpt.latest_checkpoint(tmp_path / "run") == path
    restored = ckpt.load_checkpoint(path, {"m": other}, {"o": other_opt})
    assert restored == {"step": 7, "state": {"cursor": 5}}
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    for key, value in other.state_dict().items():
        assert torch.equal(value, saved[key])
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_checkpoint_keeps_the_last_two_and_rejects_a_wrong_dir(tiny, tmp_path):
    lm, _, _ = tiny
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path / "run", step, {"m": lm})
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert names == ["step-00000002", "step-00000003"]
    with pytest.raises(ckpt.CheckpointError, match="not a checkpoint"):
        ckpt.load_checkpoint(tmp_path, {"m": lm})
    with pytest.raises(ckpt.CheckpointError, match="no weights for module 'other'"):
        ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run"), {"other": lm})


@pytest.mark.slow
def test_smollm2_loads_from_the_wheel():
    model = load_policy("smollm2")
    tok = load_tokenizer("smollm2")
    assert model.config.hidden_size == 576
    assert "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )
