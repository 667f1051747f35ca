"""DPO on a tiny model with toy preference pairs."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
import torch

from rlhf.engine.algorithms.dpo import (
    DPOConfig,
    dpo_loss,
    encode_pair,
    full_sequence_logprobs,
    pairwise_accuracy_from,
    reference_logprobs,
    sequence_logprobs,
    shared_prompt_logprobs,
    train_dpo,
)

from .conftest import Interrupt, same_weights


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str


def toy_pairs(n: int, seed: int = 0) -> list[Pair]:
    """Chosen answers use letters a-c, rejected ones f-h."""
    rng = random.Random(seed)
    word = lambda letters, k: "".join(rng.choice(letters) for _ in range(k))  # noqa: E731
    return [Pair(word("abcdefgh", 4), word("abc", 6), word("fgh", 6)) for _ in range(n)]


FAST = dict(
    batch_size=8, learning_rate=3e-3, beta=0.1, autocast=False, progress=False, warmup_steps=1
)


def test_dpo_loss_and_accuracy_formulas():
    zero = torch.zeros(3)
    loss, c, r = dpo_loss(zero, zero, zero, zero, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    loss, c, r = dpo_loss(
        torch.tensor([2.0]), torch.tensor([-2.0]), torch.zeros(1), torch.zeros(1), beta=0.5
    )
    assert c.item() == 1.0 and r.item() == -1.0
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-2.0))))
    assert (
        pairwise_accuracy_from(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])) == 0.5
    )


def test_pair_encoding_masks_and_truncation(tok):
    cfg = DPOConfig(max_prompt_tokens=3, max_response_tokens=4, use_chat_template=False)
    enc = encode_pair(tok, Pair("abcdef", "aaaaaa", "bb"), cfg)
    assert tok.decode(enc.prompt) == "def"  # left-truncated
    assert enc.chosen[-1] == tok.eos_token_id and len(enc.chosen) == 4
    with pytest.raises(ValueError, match=r"pairs\[0\].rejected"):
        encode_pair(tok, Pair("a", "b", " "), cfg)


def test_sequence_logprobs_sum_exactly_the_response_tokens(tok, make_lm):
    """Against the plain full-sequence log-softmax: prompts of different lengths (so
    the kept-logits window starts at the shortest prompt) and responses with EOS."""
    lm = make_lm(seed=2).eval()
    cfg = DPOConfig(autocast=False, use_chat_template=False)
    pairs = [
        encode_pair(tok, Pair("abcdefg", "ab", "cdefgh"), cfg),
        encode_pair(tok, Pair("ab", "hgfedcba", "a"), cfg),
    ]
    chosen, rejected = sequence_logprobs(lm, pairs, tok.pad_token_id, cfg)
    for i, pair in enumerate(pairs):
        for response, got in ((pair.chosen, chosen[i]), (pair.rejected, rejected[i])):
            ids = torch.tensor([pair.prompt + response])
            with torch.no_grad():
                logp = lm(input_ids=ids).logits[0, :-1].log_softmax(-1)
            start = len(pair.prompt) - 1  # the column predicting the first response token
            want = logp[start:].gather(1, ids[0, start + 1 :, None]).sum()
            assert got.item() == pytest.approx(want.item(), abs=1e-4)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_shared_prompt_pass_gives_the_whole_sequence_logprobs_and_gradients(tok, make_lm, attn):
    """Prompts of different lengths (left-padded in pass 1), answers of different
    lengths (right-padded in pass 2): the same sums, and the same gradient, as running
    each prompt+answer whole."""
    lm = make_lm(seed=3)
    cfg = DPOConfig(autocast=False, use_chat_template=False, attn_implementation=attn)
    pairs = [
        encode_pair(tok, Pair("abcdefg", "ab", "cdefgh"), cfg),
        encode_pair(tok, Pair("ab", "hgfedcba", "a"), cfg),
        encode_pair(tok, Pair("cab", "bead", "fed"), cfg),
    ]
    grads = []
    for fn in (shared_prompt_logprobs, full_sequence_logprobs):
        lm.zero_grad()
        chosen, rejected = fn(lm, pairs, tok.pad_token_id, cfg)
        (chosen.sum() - 2 * rejected.sum()).backward()
        grads.append(
            (chosen.detach(), rejected.detach(), [p.grad.clone() for p in lm.parameters()])
        )
    (c1, r1, g1), (c2, r2, g2) = grads
    assert torch.allclose(c1, c2, atol=1e-4) and torch.allclose(r1, r2, atol=1e-4)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(g1, g2, strict=True))
    assert any(a.abs().sum() > 0 for a in g1)
    # An empty prompt has no column to predict the first answer token from: the whole
    # sequence path is used (sequence_logprobs dispatches).
    empty = [encode_pair(tok, Pair("", "ab", "cd"), cfg)]
    want = full_sequence_logprobs(lm, empty, tok.pad_token_id, cfg)
    assert torch.equal(sequence_logprobs(lm, empty, tok.pad_token_id, cfg)[0], want[0])


def test_reference_logprobs_batch_by_length_but_keep_the_input_order(tok, make_lm):
    lm = make_lm(seed=4).eval()
    cfg = DPOConfig(autocast=False, use_chat_template=False, eval_batch_size=2)
    texts = [("abcdefgh", "abcdefgh", "a"), ("a", "b", "c"), ("abcd", "ab", "abcdef")]
    pairs = [encode_pair(tok, Pair(*t), cfg) for t in texts + texts[::-1]]
    table = reference_logprobs(lm, pairs, tok.pad_token_id, cfg)
    for i, pair in enumerate(pairs):  # each pair alone: no batching, no reordering
        c, r = sequence_logprobs(lm, [pair], tok.pad_token_id, cfg)
        assert table[i].tolist() == pytest.approx([c.item(), r.item()], abs=1e-4)


def test_heldout_pairwise_accuracy_rises(tok, make_lm):
    pairs = toy_pairs(96)
    result = train_dpo(DPOConfig(epochs=2, **FAST), make_lm(), tok, pairs[:64], pairs[64:])
    assert result.eval_before["pairwise_accuracy"] == 0.5  # policy == reference: all ties
    assert result.eval_after["pairwise_accuracy"] >= 0.9
    assert result.eval_after["loss"] < result.eval_before["loss"]
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_lazy_reference_pass_trains_like_the_upfront_one(tok, make_lm):
    """Same pairs, same seed: computing each pair's reference log-probs when it is
    first drawn (from a frozen copy) gives the run the up-front table gives."""
    pairs = toy_pairs(24)
    upfront, lazy = make_lm(), make_lm()
    a = train_dpo(DPOConfig(epochs=2, **FAST), upfront, tok, pairs)
    b = train_dpo(DPOConfig(epochs=2, reference_pass="lazy", **FAST), lazy, tok, pairs)
    assert len(b.history) == len(a.history) == 6
    for row_a, row_b in zip(a.history, b.history, strict=True):
        assert row_b["loss"] == pytest.approx(row_a["loss"], abs=1e-4)
    assert same_weights(upfront, lazy, atol=1e-4)
    with pytest.raises(ValueError, match="reference_pass"):
        train_dpo(DPOConfig(reference_pass="sometimes", **FAST), make_lm(), tok, pairs)


def test_dpo_resume_reproduces_the_uninterrupted_run(tok, make_lm, tmp_path):
    pairs = toy_pairs(32)
    full = make_lm()
    train_dpo(DPOConfig(epochs=1, output_dir=str(tmp_path / "a"), **FAST), full, tok, pairs)
    first = make_lm()
    cfg = DPOConfig(epochs=1, output_dir=str(tmp_path / "c"), checkpoint_every=2, **FAST)
    # Kill after 2 steps: the optimizer raises on its 3rd step.
    calls = {"n": 0}

    def bomb(*_args, **_kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise Interrupt

    opt_step = torch.optim.AdamW.step
    torch.optim.AdamW.step = lambda self, *a, **k: (bomb(), opt_step(self, *a, **k))[1]
    try:
        with pytest.raises(Interrupt):
            train_dpo(cfg, first, tok, pairs)
    finally:
        torch.optim.AdamW.step = opt_step
    resumed = make_lm()
    result = train_dpo(cfg, resumed, tok, pairs)
    assert result.steps == 4
    assert same_weights(full, resumed)
