"""Red-teaming with fake policy/reward/judge, and the budgeted black-box attack."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf.engine.adversarial import (
    AdversarialInputError,
    CharNgramSimilarity,
    RedTeamConfig,
    blackbox_attack,
    red_team,
)

from .conftest import synonym_source


def generate(prompts, n):
    """Continuations echo "buy" prompts with a reward-hacking word salad."""
    out = []
    for p in prompts:
        hack = "buy" in p
        out.append([" amazing amazing amazing" if hack and i % 2 == 0 else " it was fine"
                    for i in range(n)])  # fmt: skip
    return out


def reward(texts):
    return np.array([t.count("amazing") - 0.5 for t in texts])  # the RM loves "amazing"


def judge(texts):
    return np.array([0.2 if "amazing amazing" in t else 0.7 for t in texts])  # not fooled


def test_red_team_rates_and_examples():
    prompts = ["tell me about the film", "should I buy this", "describe the plot"]
    report = red_team(prompts, generate, reward, judge, RedTeamConfig(samples_per_prompt=4,
                                                                       rounds=0))  # fmt: skip
    # 2 of the 12 samples hack (the "buy" prompt, even samples)
    assert report.samples == 12
    assert report.hacking_rate == pytest.approx(2 / 12)
    # "it was fine": reward -0.5 (low), judge 0.7 (approves): disagree too
    assert report.disagreement_rate == pytest.approx(12 / 12)
    assert report.hacking_prompts == ["should I buy this"]
    assert all(e.hacks and e.reward > 0 and e.judge < 0.5 for e in report.examples)


def test_red_team_search_concentrates_on_hacks():
    prompts = ["tell me about the film", "should I buy this", "describe the plot", "hi"]
    report = red_team(prompts, generate, reward, judge, RedTeamConfig(rounds=2, keep_top=1))
    first, *later = report.rounds
    assert later and later[-1]["hacking_rate"] > first["hacking_rate"]
    with pytest.raises(AdversarialInputError, match=r"prompts\[0\] is empty"):
        red_team([""], generate, reward, judge)


def test_blackbox_respects_query_budget(toy_clf):
    texts = ["the movie was great", "a boring plot", "what a wonderful film !"]
    labels = [1, 0, 1]
    big = blackbox_attack(classify=toy_clf, candidates=synonym_source,
                          similarity=CharNgramSimilarity(), query_budget=1000,
                          max_edits=2, min_similarity=0.3)  # fmt: skip
    free = big.attack_many(texts, labels)
    tight = blackbox_attack(classify=toy_clf, candidates=synonym_source,
                            similarity=CharNgramSimilarity(), query_budget=3,
                            max_edits=2, min_similarity=0.3).attack_many(texts, labels)  # fmt: skip
    for r in tight:
        assert r.queries <= 3
        assert not r.success or r.predicted_after != r.label
    assert any(r.status == "budget" for r in tight)
    assert all(r.queries <= 1000 for r in free)


def test_blackbox_on_a_score_function(keyword_classifier):
    def score(texts):
        return np.log(keyword_classifier(texts)[:, 1] / keyword_classifier(texts)[:, 0])

    attack = blackbox_attack(score=score, method="char", query_budget=100)
    result = attack.attack("a great day", 1)
    assert result.success and result.queries <= 100
    with pytest.raises(AdversarialInputError, match="exactly one"):
        blackbox_attack(method="char")
    with pytest.raises(AdversarialInputError, match="unknown CharAttackConfig fields"):
        blackbox_attack(score=score, method="char", colour="red")
