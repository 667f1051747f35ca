"""Metrics checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.engine.evaluation import (
    HeldOutJudge,
    bleu,
    classification_metrics,
    confusion_matrix,
    distinct_n,
    kl_from_logprobs,
    mean_reward,
    pairwise_accuracy,
    perplexity,
    rouge,
)
from rlhf.engine.tokenization import pretokenize

LABELS = ["negative", "positive"]


def test_classification_metrics_by_hand():
    y_true = ["positive", "positive", "positive", "negative", "negative"]
    y_pred = ["positive", "positive", "negative", "negative", "positive"]
    m = classification_metrics(y_true, y_pred, LABELS)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    # positive: precision 2/3, recall 2/3; negative: precision 1/2, recall 1/2.
    assert m["per_class"]["positive"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["negative"]["recall"] == pytest.approx(1 / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_never_predicted_class_scores_zero():
    m = classification_metrics(["negative", "positive"], ["positive", "positive"], LABELS)
    assert m["per_class"]["negative"]["precision"] == 0.0
    assert m["macro_f1"] == pytest.approx((0 + 2 * 0.5 * 1 / 1.5) / 2)
    with pytest.raises(ValueError, match="'neutral' is not one of"):
        confusion_matrix(["neutral"], ["positive"], LABELS)


def test_pairwise_accuracy_and_mean_reward():
    assert pairwise_accuracy([2.0, 0.0, 1.0, 3.0], [1.0, 1.0, 1.0, 0.0]) == pytest.approx(2.5 / 4)
    assert mean_reward([1.0, 2.0, 6.0]) == 3.0
    with pytest.raises(ValueError):
        pairwise_accuracy([1.0], [])


def test_kl_per_sequence_and_per_token():
    policy = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.5], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    kl = kl_from_logprobs(policy, ref, mask)
    # seq 1: 0.5 + 0 + 1.0 = 1.5; seq 2: 1.0 (padding ignored).
    assert kl["kl_per_sequence"] == pytest.approx((1.5 + 1.0) / 2)
    assert kl["kl_per_token"] == pytest.approx(2.5 / 4)
    assert kl["tokens"] == 4
    k3 = sum(math.exp(-d) - 1 + d for d in (0.5, 0.0, 1.0, 1.0)) / 2
    assert kl["kl_k3_per_sequence"] == pytest.approx(k3)
    same = kl_from_logprobs(policy, policy)
    assert same["kl_per_sequence"] == 0.0 and same["kl_k3_per_sequence"] == 0.0


def test_perplexity():
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.5, 1.0]]))
    mask = torch.tensor([[1, 1], [1, 0]])
    assert perplexity(logp, mask) == pytest.approx(
        math.exp(-(math.log(0.5) * 2 + math.log(0.25)) / 3)
    )
    assert perplexity(torch.zeros(1, 4)) == pytest.approx(1.0)


def test_distinct_n_english_and_chinese():
    assert distinct_n(["a b a b", "a b c"], n=1) == pytest.approx(3 / 7)
    assert distinct_n(["a b a b", "a b c"], n=2) == pytest.approx(3 / 5)
    assert distinct_n(["好好好"], n=1, tokenize=pretokenize) == pytest.approx(1 / 3)
    assert distinct_n([], n=2) == 0.0


def test_bleu_and_rouge():
    hyp = ["the cat sat on the mat"]
    assert bleu(hyp, ["the cat sat on the mat"]) == pytest.approx(100.0)
    partial = bleu(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert 0.0 < partial < 100.0
    scores = rouge(["the cat sat"], ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # precision 1, recall 1/2
    assert bleu(["我爱电影"], ["我爱电影"], tokenize="zh") == pytest.approx(100.0)


class _FakeClassifier:
    """Stands in for a TextClassifier: 'good' in the text means positive."""

    def positive_scores(self, texts, batch_size=32):
        return torch.tensor([2.0 if "good" in t else -2.0 for t in texts])

    def predict(self, texts, batch_size=32):
        from rlhf.engine.classifier import Prediction

        return [Prediction("positive" if "good" in t else "negative", 0.9, {}) for t in texts]


def test_held_out_judge_flags_disagreement():
    judge = HeldOutJudge(_FakeClassifier())
    texts = ["good film", "bad film", "good good", "meh"]
    assert judge.positive_rate(texts) == 0.5
    assert judge.evaluate(texts)["judge_positive_rate"] == 0.5
    # A reward that calls everything positive agrees with the judge only half the time.
    assert judge.agreement([1.0, 1.0, 1.0, 1.0], texts) == 0.5


def test_repetition_rate_and_text_quality():
    from rlhf.engine.evaluation import repetition_rate, text_quality

    assert repetition_rate(["the film was good and the cast was fine"]) == 0.0
    looping = "great great great great great great"  # 4 trigrams, 1 distinct
    assert repetition_rate([looping]) == pytest.approx(0.75)
    assert repetition_rate(["好好好好好"], tokenize=list) == pytest.approx(2 / 3)
    quality = text_quality(["a fine film", "", "好 电影 好 电影 好 电影"])
    assert quality["empty_rate"] == pytest.approx(1 / 3)
    assert 0 < quality["distinct_2"] < 1 and quality["repetition_rate"] > 0
