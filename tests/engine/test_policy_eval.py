"""Policy evaluation: several samples per prompt, averaged per prompt, with intervals."""

from __future__ import annotations

import pytest
import torch

from rlhf.engine.classifier import Prediction
from rlhf.engine.models import tiny_causal_lm, tiny_char_tokenizer
from rlhf.engine.policy_eval import bootstrap_interval, evaluate_policy, paired_gain

ALPHABET = "abcdefgh "
PROMPTS = ["ab", "cd", "ef", "gh", "a b", "c d"]


class CountingJudge:
    """Calls a text positive when its response has more a's than b's."""

    def predict(self, texts):
        return [
            Prediction("positive" if t.count("a") > t.count("b") else "negative", 1.0, {})
            for t in texts
        ]


@pytest.fixture(scope="module")
def setup():
    tok = tiny_char_tokenizer(ALPHABET)
    policy = tiny_causal_lm(len(tok), hidden_size=32, num_layers=1, num_heads=2, seed=0)
    reference = tiny_causal_lm(len(tok), hidden_size=32, num_layers=1, num_heads=2, seed=1)
    return tok, policy.eval(), reference.eval()


def _evaluate(setup, **kwargs):
    tok, policy, reference = setup
    reward = lambda texts: torch.tensor([float(len(t)) for t in texts])  # noqa: E731
    options = {"max_new_tokens": 8, "batch_size": 5, "seed": 7} | kwargs
    return evaluate_policy(policy, reference, tok, PROMPTS, reward, CountingJudge(), **options)


def test_figures_are_means_of_per_prompt_means_with_intervals(setup):
    result = _evaluate(setup, samples_per_prompt=4, reward_threshold=5.0)
    for name in ("kl_per_sequence", "reward", "judge_positive_rate", "reward_hacking_rate"):
        values = result.per_prompt[name]
        assert len(values) == len(PROMPTS)
        assert result.metrics[name] == pytest.approx(sum(values) / len(values))
        low, high = result.intervals[name]
        assert low <= result.metrics[name] <= high
    # A prompt's judge figure is the share of its 4 samples called positive.
    assert all(v in (0.0, 0.25, 0.5, 0.75, 1.0) for v in result.per_prompt["judge_positive_rate"])
    assert [s["prompt"] for s in result.samples] == PROMPTS[:3]
    assert {"ref_perplexity", "distinct_2", "repetition_rate", "empty_rate"} <= set(result.metrics)


def test_the_same_seed_gives_the_same_samples(setup):
    first, second = _evaluate(setup, show=None), _evaluate(setup, show=None)
    assert first.samples == second.samples and first.metrics == second.metrics
    assert _evaluate(setup, seed=8, show=None).samples != first.samples


def test_bad_arguments_are_refused(setup):
    with pytest.raises(ValueError, match="samples_per_prompt"):
        _evaluate(setup, samples_per_prompt=0)


def test_bootstrap_interval_narrows_with_more_prompts():
    generator = torch.Generator().manual_seed(0)
    few = torch.bernoulli(torch.full((40,), 0.7), generator=generator).tolist()
    many = torch.bernoulli(torch.full((640,), 0.7), generator=generator).tolist()
    low_few, high_few = bootstrap_interval(few)
    low_many, high_many = bootstrap_interval(many)
    assert high_many - low_many < (high_few - low_few) / 2
    assert low_many < 0.7 < high_many


def test_paired_gain_removes_the_spread_between_prompts():
    before = [0.0, 1.0, 0.0, 1.0, 0.5, 0.25] * 10
    after = [b + 0.1 for b in before]
    gain, (low, high) = paired_gain(before, after)
    assert gain == pytest.approx(0.1)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)
    with pytest.raises(ValueError, match="prompts"):
        paired_gain([1.0], [1.0, 2.0])


def test_reward_hacking_counts_reward_positive_judge_negative(setup):
    # Every text is longer than 1 character (reward positive); the judge calls a text
    # positive on more a's than b's: the hacking rate is one minus the judge's rate.
    result = _evaluate(setup, samples_per_prompt=2, reward_threshold=1.0)
    hacking = result.metrics["reward_hacking_rate"]
    assert hacking == pytest.approx(1 - result.metrics["judge_positive_rate"])
    assert "reward_hacking_rate" not in _evaluate(setup).metrics  # no threshold: not measured
