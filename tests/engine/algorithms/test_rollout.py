"""Shared helpers: masks, whitening, advantages, KL control, data cursor."""

from __future__ import annotations

import pytest
import torch

from rlhf.engine.algorithms.kl_control import AdaptiveKLController, KLBudget
from rlhf.engine.algorithms.rollout import (
    SamplingCopy,
    decode,
    encode_chat_prompt,
    hh_to_messages,
    left_pad,
    masked_whiten,
    response_mask_from,
    rollout_logprobs,
    sample,
    sample_categorical,
    token_logprobs,
)
from rlhf.engine.training import DataCursor, adamw, attention_kernel


def test_response_mask_stops_after_first_eos():
    response = torch.tensor([[5, 3, 7, 3], [5, 6, 7, 8]])
    assert response_mask_from(response, eos_token_id=3).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_masked_whiten_ignores_masked_entries():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    out = masked_whiten(values, mask)
    kept = out[mask.bool()]
    assert kept.mean().abs() < 1e-6
    assert torch.allclose(kept.var(unbiased=False), torch.tensor(1.0), atol=1e-4)
    assert out[~mask.bool()].eq(0).all()


def test_adaptive_kl_controller_moves_toward_target():
    ctl = AdaptiveKLController(0.1, target=4.0, horizon=32)
    assert ctl.update(8.0, n_episodes=32) == pytest.approx(0.12)  # error clipped to +0.2
    assert ctl.update(4.0, n_episodes=32) == pytest.approx(0.12)  # on target: unchanged
    assert ctl.update(2.0, n_episodes=16) == pytest.approx(0.12 * 0.9)  # below: lower beta
    fixed = AdaptiveKLController(0.1, target=None, horizon=32)
    assert fixed.update(100.0, 32) == 0.1
    restored = AdaptiveKLController(1.0, 1.0, 1.0)
    restored.load_state_dict(ctl.state_dict())
    assert restored.state_dict() == ctl.state_dict()


def test_kl_controller_floor_and_budget_overshoot():
    ctl = AdaptiveKLController(0.1, target=4.0, horizon=32, min_coef=0.05)
    for _ in range(20):
        ctl.update(0.0, n_episodes=32)  # far below target: beta decays ...
    assert ctl.value == pytest.approx(0.05)  # ... to the floor, not to zero
    assert ctl.budget_overshoot() == pytest.approx(0.1)  # at least the initial beta
    assert ctl.budget_overshoot() == pytest.approx(0.2) and ctl.overshoots == 2
    restored = AdaptiveKLController(1.0, 1.0, 1.0)
    restored.load_state_dict(ctl.state_dict())
    assert restored.state_dict() == ctl.state_dict()


def test_kl_controller_overshoot_factor():
    ctl = AdaptiveKLController(0.02, target=6.5, horizon=128, overshoot_factor=1.5)
    ctl.value = 0.04
    assert ctl.budget_overshoot() == pytest.approx(0.06)
    with pytest.raises(ValueError, match="overshoot_factor"):
        AdaptiveKLController(0.02, target=6.5, horizon=128, overshoot_factor=0.5)


def _set_weight(model: torch.nn.Linear, value: float) -> None:
    with torch.no_grad():
        model.weight.fill_(value)


def test_kl_budget_per_batch_restores_the_last_weights_within_budget():
    model = torch.nn.Linear(2, 1, bias=False)
    budget = KLBudget(8.0)
    _set_weight(model, 1.0)
    assert not budget.exceeded(7.9, model)
    _set_weight(model, 2.0)
    assert budget.exceeded(8.1, model)  # one batch past the budget is enough
    assert model.weight.eq(1.0).all()  # back to the weights of the 7.9 batch
    assert budget.exceeded(8.1, model)  # per batch, every batch is checked
    assert not KLBudget(None).exceeded(1e9, model)


def test_kl_budget_smoothing_rides_out_one_noisy_batch_but_not_a_trend():
    model = torch.nn.Linear(2, 1, bias=False)
    budget = KLBudget(8.0, smoothing=0.5)
    _set_weight(model, 1.0)
    assert not budget.exceeded(7.0, model)
    _set_weight(model, 2.0)
    assert not budget.exceeded(9.0, model)  # average 8.0: one spike is noise
    assert budget.smoothed == pytest.approx(8.0)
    _set_weight(model, 3.0)
    assert budget.exceeded(9.0, model)  # average 8.5: KL is really rising
    assert model.weight.eq(2.0).all()
    assert budget.smoothed == pytest.approx(8.0)  # the rejected batch is not averaged in
    # The restored weights were accepted: their next batch is averaged in, not checked.
    assert not budget.exceeded(9.0, model)
    assert budget.smoothed == pytest.approx(8.5)
    _set_weight(model, 4.0)
    assert budget.exceeded(8.6, model)  # updated weights are checked again
    assert model.weight.eq(2.0).all()
    restored = KLBudget(8.0, smoothing=0.5)
    restored.load_state_dict(budget.state_dict())
    assert restored.smoothed == budget.smoothed
    with pytest.raises(ValueError, match="smoothing"):
        KLBudget(8.0, smoothing=0.0)


def test_data_cursor_resumes_mid_epoch_and_reshuffles():
    full = DataCursor(size=5, seed=1)
    seq = full.take(12)
    part = DataCursor(size=5, seed=1)
    first = part.take(7)
    resumed = DataCursor(size=5, seed=1)
    resumed.load_state_dict(part.state_dict())
    assert first + resumed.take(5) == seq
    assert sorted(seq[:5]) == list(range(5)) and seq[:5] != seq[5:10]


def test_hh_prompt_becomes_chat_messages():
    from rlhf.engine.models import tiny_char_tokenizer

    tok = tiny_char_tokenizer()
    text = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant:"
    assert hh_to_messages(text) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    ids = encode_chat_prompt(tok, text, use_chat_template=True)
    assert tok.decode(ids) == "<|user|>hi<eos><|assistant|>hello<eos><|user|>bye<eos><|assistant|>"


def test_sampled_logprobs_match_the_generating_model(tok, make_lm):
    """KL(policy || itself) must be exactly zero: sampling and scoring agree."""
    lm = make_lm()
    ids = [tok("ab")["input_ids"], tok("abcd")["input_ids"]]
    torch.manual_seed(0)
    rollout = sample(lm, tok, ids, max_new_tokens=6, use_autocast=False)
    assert rollout.query[0, 0] == tok.pad_token_id  # left padded
    logp = rollout_logprobs(lm, rollout, use_autocast=False)
    assert (logp <= 0).all() and logp[rollout.response_mask.bool()].lt(0).all()
    assert torch.equal(
        logp - rollout_logprobs(lm, rollout, use_autocast=False), torch.zeros_like(logp)
    )


def test_greedy_decode_matches_generate_with_left_padding(tok, make_lm):
    """The KV-cached loop uses the same positions and masks as ``generate``."""
    lm = make_lm(seed=3).eval()
    query, query_mask = left_pad([tok("ab")["input_ids"], tok("abcdef")["input_ids"]], 0)
    ours = decode(lm, query, query_mask, 8, temperature=0.0, eos_token_id=None, pad_token_id=0)
    hf = lm.generate(
        input_ids=query,
        attention_mask=query_mask,
        max_new_tokens=8,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    assert torch.equal(ours, hf[:, query.shape[1] :])


def test_decode_pads_after_eos_and_stops_when_all_rows_finished(tok, make_lm):
    lm = make_lm(seed=1).eval()
    query, query_mask = left_pad([tok("ab")["input_ids"], tok("cd")["input_ids"]], 0)
    greedy = decode(lm, query, query_mask, 6, temperature=0.0, eos_token_id=None, pad_token_id=0)
    eos = int(greedy[0, 1])  # call row 0's second token EOS
    out = decode(lm, query, query_mask, 6, temperature=0.0, eos_token_id=eos, pad_token_id=0)
    ends = []
    for row, full in zip(out, greedy, strict=True):
        hits = (full == eos).nonzero()
        end = hits[0].item() + 1 if len(hits) else 6
        ends.append(end)
        assert torch.equal(row[:end], full[:end])  # same tokens up to and including EOS
        assert (row[end:] == 0).all()  # pad after it
    assert out.shape[1] == max(ends)  # stops once every row has finished


def test_sample_categorical_follows_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]]).repeat(20000, 1)
    torch.manual_seed(0)
    draws = sample_categorical(logits, temperature=1.0)
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.01)
    assert freq[4] == 0  # an (almost) impossible token is never drawn
    hot = sample_categorical(logits[:2000], temperature=0.5)
    assert (torch.bincount(hot, minlength=5).float() / 2000)[0] > freq[0]  # sharper
    assert torch.equal(sample_categorical(logits[:3], temperature=0.0), torch.zeros(3).long())


def test_attention_kernel_switches_for_the_block_and_restores(tok, make_lm):
    lm = make_lm()
    lm.set_attn_implementation("sdpa")
    ids = torch.tensor([tok("abcd")["input_ids"]])
    sdpa_logits = lm(input_ids=ids).logits
    with attention_kernel(lm, "auto", "cpu"):
        assert lm.config._attn_implementation == "eager"
        eager_logits = lm(input_ids=ids).logits
    assert lm.config._attn_implementation == "sdpa"
    assert torch.allclose(eager_logits, sdpa_logits, atol=1e-5)  # same maths, other kernel
    with attention_kernel(lm, None, "cpu"):
        assert lm.config._attn_implementation == "sdpa"
    with attention_kernel(lm, "auto", "cuda"):  # auto leaves non-CPU devices alone
        assert lm.config._attn_implementation == "sdpa"


def test_adamw_uses_the_fused_kernel_on_cpu():
    params = [torch.nn.Parameter(torch.ones(3))]
    assert adamw(params, "cpu", lr=1e-3).defaults["fused"] is True


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_logprobs_match_log_softmax_in_value_and_gradient(dtype):
    """The fused log-prob is the plain gather(log_softmax) maths, chunked (150 rows >
    one 64-row chunk) and on a non-contiguous slice, as the policy forward passes it."""
    torch.manual_seed(0)
    full = (torch.randn(3, 51, 97) * 4).to(dtype)
    target = torch.randint(0, 97, (3, 50))
    weights = torch.randn(3, 50)
    plain_in = full.clone().requires_grad_(True)
    plain = plain_in[:, :-1].float().log_softmax(-1).gather(2, target.unsqueeze(-1)).squeeze(-1)
    (plain * weights).sum().backward()
    fused_in = full.clone().requires_grad_(True)
    fused = token_logprobs(fused_in[:, :-1], target)
    (fused * weights).sum().backward()
    assert fused.dtype == torch.float32 and fused.shape == (3, 50)
    assert torch.allclose(fused, plain, atol=1e-5)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert fused_in.grad.dtype == dtype
    assert torch.allclose(fused_in.grad.float(), plain_in.grad.float(), atol=tol)
    assert fused_in.grad[:, -1].eq(0).all()  # the sliced-off position gets no gradient


def test_sampling_copy_is_bf16_on_cpu_autocast_and_tracks_the_policy(tok, make_lm, monkeypatch):
    from rlhf.engine import training

    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)  # any test machine
    lm = make_lm()
    assert SamplingCopy(lm, "cpu", use_autocast=False).model() is lm  # nothing to gain
    sampler = SamplingCopy(lm, "cpu", use_autocast=True)
    copy = sampler.model()
    assert sampler.active and copy is not lm
    assert all(p.dtype == torch.bfloat16 for p in copy.parameters())
    floats = [b for b in copy.buffers() if b.is_floating_point()]
    assert all(b.dtype == torch.float32 for b in floats)  # RoPE frequencies stay exact
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.5)  # an optimizer step
    refreshed = sampler.model()
    for mine, theirs in zip(refreshed.parameters(), lm.parameters(), strict=True):
        assert torch.equal(mine, theirs.to(torch.bfloat16))
    ids = [tok("ab")["input_ids"], tok("abcd")["input_ids"]]
    rollout = sample(refreshed, tok, ids, max_new_tokens=5, use_autocast=False)
    assert rollout.response.shape[0] == 2  # it samples
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)  # AVX2: emulated
    assert not SamplingCopy(lm, "cpu", use_autocast=True).active  # float32 is faster there
