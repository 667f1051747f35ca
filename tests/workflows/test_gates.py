"""Promotion gates judge what a user would read: a degenerate policy cannot pass."""

from __future__ import annotations

import copy

import pytest
import torch

from rlhf.engine.models import tiny_causal_lm, tiny_char_tokenizer
from rlhf.engine.policy_eval import compare_generations, evaluate_policy
from rlhf.pipelines import Gates
from rlhf.workflows.promotion import evaluate_gates, failed_gates

ALPHABET = "abcdefgh "
PROMPTS = ["ab", "cd", "ef", "gh", "a b", "c d", "bead", "fed"] * 2


@pytest.fixture(scope="module")
def tok():
    return tiny_char_tokenizer(ALPHABET)


def _generation(policy, reference, tok):
    evaluation = evaluate_policy(policy, reference, tok, PROMPTS, max_new_tokens=48, show=None)
    return evaluation.metrics, evaluation.samples


def test_a_looping_policy_fails_fluency_diversity_and_repetition(tok):
    reference = tiny_causal_lm(len(tok), hidden_size=32, num_layers=1, num_heads=2, seed=0)
    # The reference writes its own language: mostly "b", "c", "d" and spaces.
    with torch.no_grad():
        bias = torch.zeros(len(tok))
        bias[tok.convert_tokens_to_ids(list("bcd "))] = 4.0
        reference.lm_head.bias = torch.nn.Parameter(bias)
    reference.eval().requires_grad_(False)
    honest = copy.deepcopy(reference)
    looping = copy.deepcopy(reference)
    # The looping policy writes one word over and over ("a a aa a"): a gamed reward
    # looks so.
    with torch.no_grad():
        looping.lm_head.weight.zero_()
        bias = torch.full((len(tok),), -30.0)
        bias[tok.convert_tokens_to_ids(["a", " "])] = 30.0
        looping.lm_head.bias = torch.nn.Parameter(bias)
    before, _ = _generation(reference, reference, tok)
    same, _ = _generation(honest, reference, tok)
    loop, samples = _generation(looping, reference, tok)
    assert all(set(s["response"]) <= {"a", " "} for s in samples)

    gates = Gates()  # the defaults every spec starts from
    passed = evaluate_gates(gates, compare_generations(before, same))
    assert {"fluency", "distinct_2", "repetition", "empty_answers"} <= passed.keys()
    assert all(passed.values()), (passed, same)

    metrics = compare_generations(before, loop)
    assert metrics["ref_perplexity_ratio"] > 1.5
    assert metrics["distinct_2"] < 0.5, metrics
    assert metrics["repetition_rate"] > metrics["repetition_rate_before"], metrics
    failed = evaluate_gates(gates, metrics)
    assert not failed["fluency"] and not failed["distinct_2"]
    why = failed_gates(failed, metrics)
    assert "fluency (ref_perplexity_ratio=" in why and "distinct_2 (distinct_2=" in why


def test_preference_gates_read_pairwise_accuracy_and_win_rate():
    gates = Gates(tolerance=0.0)
    better = {"pairwise_accuracy_before": 0.5, "pairwise_accuracy_after": 0.62, "win_rate": 0.55}
    assert evaluate_gates(gates, better) == {"pairwise_not_worse": True, "win_rate": True}
    worse = {"pairwise_accuracy_before": 0.5, "pairwise_accuracy_after": 0.41, "win_rate": 0.3}
    result = evaluate_gates(gates, worse)
    assert result == {"pairwise_not_worse": False, "win_rate": False}
    assert "win_rate (win_rate=0.3)" in failed_gates(result, worse)
    assert evaluate_gates(Gates(min_win_rate=None, pairwise_not_worse=False), worse) == {}


def test_reward_hacking_gate_bounds_the_rise_in_reward_judge_disagreement():
    gates = Gates()
    honest = {"reward_hacking_rate_before": 0.12, "reward_hacking_rate_after": 0.2}
    assert evaluate_gates(gates, honest) == {"reward_hacking": True}
    hacked = {"reward_hacking_rate_before": 0.12, "reward_hacking_rate_after": 0.45}
    result = evaluate_gates(gates, hacked)
    assert result == {"reward_hacking": False}
    assert failed_gates(result, hacked) == (
        "reward_hacking (reward_hacking_rate_before=0.12, reward_hacking_rate_after=0.45)"
    )
    assert evaluate_gates(Gates(max_reward_hacking_increase=None), hacked) == {}


def test_one_retrain_plan_for_every_service():
    from rlhf.pipelines import load_pipeline
    from rlhf.workflows.promotion import retrain_plan

    chat, zh, classify = (load_pipeline(n) for n in ("chat-en", "sentiment-zh", "classify"))
    assert (retrain_plan(chat).reward_kind, retrain_plan(chat).policy) == ("reward", True)
    assert retrain_plan(zh).reward_first and retrain_plan(zh).policy
    assert retrain_plan(classify).reward_kind == "classifier" and not retrain_plan(classify).policy
