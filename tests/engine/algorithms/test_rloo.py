"""RLOO and GRPO on a tiny model."""

from __future__ import annotations

import pytest
import torch

from rlhf.engine.algorithms.rloo import RLOOConfig, grpo_advantages, rloo_advantages, train_rloo

from .conftest import PROMPTS, Interrupt, fraction_of_a, interrupting, same_weights

FAST = dict(
    num_prompts=4, k=4, max_new_tokens=8, score_full_text=False, autocast=False, progress=False
)


def test_leave_one_out_and_group_normalised_advantages():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0])
    adv = rloo_advantages(rewards, k=3)
    assert torch.allclose(adv[:3], torch.tensor([1 - 2.5, 2 - 2.0, 3 - 1.5]))
    assert torch.allclose(adv[3:], torch.tensor([6.0, -3.0, -3.0]))
    g = grpo_advantages(rewards, k=3)
    assert torch.allclose(g[:3], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-3)
    assert torch.allclose(g.view(2, 3).sum(1), torch.zeros(2), atol=1e-4)


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_reward_rises(tok, make_lm, estimator):
    cfg = RLOOConfig(
        estimator=estimator,
        total_steps=25,
        learning_rate=3e-3,
        init_kl_coef=0.01,
        kl_target=None,
        **FAST,
    )
    result = train_rloo(cfg, make_lm(), tok, fraction_of_a, PROMPTS)
    scores = [h["score"] for h in result.history]
    assert sum(scores[-5:]) / 5 > sum(scores[:5]) / 5 + 0.2


def test_bad_config_is_rejected(tok, make_lm):
    with pytest.raises(ValueError, match="k: need at least 2"):
        train_rloo(RLOOConfig(k=1), make_lm(), tok, fraction_of_a, PROMPTS)
    with pytest.raises(ValueError, match="estimator"):
        train_rloo(RLOOConfig(estimator="ppo"), make_lm(), tok, fraction_of_a, PROMPTS)
    with pytest.raises(ValueError, match="prompts\\[0\\]"):
        train_rloo(RLOOConfig(**FAST), make_lm(), tok, fraction_of_a, [""])


def test_reward_fn_shape_is_checked(tok, make_lm):
    with pytest.raises(ValueError, match="reward_fn returned 1 scores for 16 texts"):
        train_rloo(
            RLOOConfig(total_steps=1, **FAST), make_lm(), tok, lambda t: torch.zeros(1), PROMPTS
        )


def test_grpo_resume_with_two_epochs_reproduces_the_uninterrupted_run(tok, make_lm, tmp_path):
    cfg = dict(
        estimator="grpo",
        total_steps=4,
        epochs=2,
        mini_batch_size=8,
        learning_rate=3e-3,
        checkpoint_every=1,
        **FAST,
    )
    full = make_lm()
    train_rloo(RLOOConfig(output_dir=str(tmp_path / "a"), **cfg), full, tok, fraction_of_a, PROMPTS)
    with pytest.raises(Interrupt):
        train_rloo(
            RLOOConfig(output_dir=str(tmp_path / "b"), **cfg),
            make_lm(),
            tok,
            interrupting(fraction_of_a, 3),
            PROMPTS,
        )
    resumed = make_lm()
    train_rloo(
        RLOOConfig(output_dir=str(tmp_path / "b"), **cfg), resumed, tok, fraction_of_a, PROMPTS
    )
    assert same_weights(full, resumed)
