"""PPO on a tiny model: reward rises, KL control adapts, budget stop, exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf.engine.algorithms.ppo import PPOConfig, gae, train_ppo
from rlhf.engine.models import CausalLMWithValueHead

from .conftest import PROMPTS, Interrupt, fraction_of_a, interrupting, same_weights

FAST = dict(
    batch_size=16,
    mini_batch_size=16,
    max_new_tokens=8,
    score_full_text=False,
    autocast=False,
    progress=False,
)


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    d2 = 1.0 - 0.7
    d1 = 0.0 + 0.7 - 0.6
    d0 = 0.0 + 0.6 - 0.5
    expected = torch.tensor([[d0 + 0.5 * (d1 + 0.5 * d2), d1 + 0.5 * d2, d2]])
    assert torch.allclose(adv, expected)
    assert torch.allclose(ret, expected + values)
    # a masked tail contributes nothing and is not bootstrapped from
    adv_m, _ = gae(rewards, values, torch.tensor([[1.0, 1.0, 0.0]]), 1.0, 0.5)
    assert adv_m[0, 2] == 0 and adv_m[0, 1] == pytest.approx(-0.6)


def test_ppo_raises_a_toy_reward(tok, make_lm):
    result = train_ppo(
        PPOConfig(total_steps=20, learning_rate=3e-3, init_kl_coef=0.01, kl_target=None, **FAST),
        make_lm(),
        tok,
        fraction_of_a,
        PROMPTS,
    )
    scores = [h["score"] for h in result.history]
    assert sum(scores[-4:]) / 4 > sum(scores[:4]) / 4 + 0.2
    assert result.history[-1]["kl_per_sequence"] > 0


def test_ppo_multi_epoch_minibatches_and_value_loss(tok, make_lm):
    result = train_ppo(
        PPOConfig(
            total_steps=6, learning_rate=1e-3, ppo_epochs=2, **{**FAST, "mini_batch_size": 8}
        ),
        make_lm(),
        tok,
        fraction_of_a,
        PROMPTS,
    )
    assert all(h["clipfrac"] >= 0 and h["vf_loss"] >= 0 for h in result.history)


def test_ppo_kl_controller_follows_the_batch_kl(tok, make_lm):
    """beta goes up after a batch above the KL target and down after one below it."""
    target = 0.05
    cfg = PPOConfig(
        total_steps=10,
        learning_rate=3e-3,
        init_kl_coef=0.01,
        kl_target=target,
        kl_horizon=16,
        **FAST,
    )
    result = train_ppo(cfg, make_lm(), tok, fraction_of_a, PROMPTS)
    betas = [h["kl_coef"] for h in result.history] + [result.kl_coef]
    kls = [h["kl_per_sequence"] for h in result.history]
    for kl, beta, next_beta in zip(kls, betas, betas[1:], strict=False):
        assert (next_beta > beta) == (kl > target), (kl, beta, next_beta)
    assert any(kl > target for kl in kls) and any(kl < target for kl in kls)


def test_ppo_stops_on_kl_budget_and_restores_weights_within_budget(tok, make_lm):
    lm = make_lm()
    initial = make_lm()
    cfg = PPOConfig(
        total_steps=40, learning_rate=1e-2, init_kl_coef=0.0, kl_target=None, kl_budget=0.5, **FAST
    )
    result = train_ppo(cfg, lm, tok, fraction_of_a, PROMPTS)
    assert result.stopped_on_budget and result.steps < 40
    assert all(h["kl_per_sequence"] <= 0.5 for h in result.history)
    assert not same_weights(lm, initial)


def test_ppo_kl_budget_on_a_moving_average(tok, make_lm):
    cfg = PPOConfig(
        total_steps=40,
        learning_rate=1e-2,
        init_kl_coef=0.0,
        kl_target=None,
        kl_budget=0.5,
        kl_budget_smoothing=0.5,
        **FAST,
    )
    result = train_ppo(cfg, make_lm(), tok, fraction_of_a, PROMPTS)
    assert result.stopped_on_budget and result.steps < 40
    average = None
    for h in result.history:  # the accepted batches' running average stayed within budget
        kl = h["kl_per_sequence"]
        average = kl if average is None else 0.5 * kl + 0.5 * average
        assert average <= 0.5


def test_ppo_survives_budget_overshoots_with_a_firmer_beta(tok, make_lm):
    common = dict(
        total_steps=40, learning_rate=1e-2, init_kl_coef=0.05, kl_target=None, kl_budget=0.5
    )
    once = train_ppo(PPOConfig(**common, **FAST), make_lm(), tok, fraction_of_a, PROMPTS)
    lm = make_lm()
    cfg = PPOConfig(kl_budget_retries=2, **common, **FAST)
    result = train_ppo(cfg, lm, tok, fraction_of_a, PROMPTS)
    assert once.stopped_on_budget and result.stopped_on_budget
    assert result.kl_coef == pytest.approx(0.05 * 2 * 2)  # doubled at each survived overshoot
    assert result.steps >= once.steps
    assert all(h["kl_per_sequence"] <= 0.5 for h in result.history)


def test_the_kept_weights_are_within_the_budget_when_the_last_update_overshoots(tok, make_lm):
    # A budget so tight that every update overshoots it: each step's weights are
    # rejected at the next check (restoring the start) until the steps run out; the
    # last update is then measured once more and undone too.
    lm, initial = make_lm(), make_lm()
    cfg = PPOConfig(
        total_steps=3,
        learning_rate=1e-2,
        init_kl_coef=0.0,
        kl_target=None,
        kl_budget=1e-6,
        kl_budget_retries=100,
        **FAST,
    )
    result = train_ppo(cfg, lm, tok, fraction_of_a, PROMPTS)
    assert result.steps == 3 and not result.stopped_on_budget
    assert result.final_kl is not None and result.final_kl > 1e-6
    assert result.restored_at_end
    assert same_weights(lm, initial)
    # Without a budget nothing is measured at the end.
    free = train_ppo(PPOConfig(total_steps=2, **FAST), make_lm(), tok, fraction_of_a, PROMPTS)
    assert free.final_kl is None and not free.restored_at_end


def test_ppo_resume_reproduces_the_uninterrupted_run(tok, make_lm, tmp_path):
    cfg = dict(total_steps=4, learning_rate=3e-3, checkpoint_every=1, **FAST)
    full = CausalLMWithValueHead(make_lm())
    train_ppo(PPOConfig(output_dir=str(tmp_path / "a"), **cfg), full, tok, fraction_of_a, PROMPTS)

    killed = CausalLMWithValueHead(make_lm())
    with pytest.raises(Interrupt):
        train_ppo(
            PPOConfig(output_dir=str(tmp_path / "b"), **cfg),
            killed,
            tok,
            interrupting(fraction_of_a, 2),
            PROMPTS,
        )
    resumed = CausalLMWithValueHead(make_lm())
    result = train_ppo(
        PPOConfig(output_dir=str(tmp_path / "b"), **cfg), resumed, tok, fraction_of_a, PROMPTS
    )
    assert result.steps == 4 and len(result.history) == 4
    assert same_weights(full, resumed)

    def losses(run):
        rows = [
            json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        ]
        return [
            (r["step"], r["score"], r["kl_per_sequence"], r["pg_loss"], r["vf_loss"]) for r in rows
        ]

    assert losses("b") == losses("a") and len(losses("a")) == 4
    assert (tmp_path / "b" / "final" / "model.safetensors").is_file()
    assert (tmp_path / "b" / "final" / "value_head.safetensors").is_file()
