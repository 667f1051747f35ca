"""Evaluation metrics: classification, preferences, rewards, KL, perplexity, text overlap.

Pure functions over plain lists / tensors so the trainer, the services' promotion gates
and the benchmarks compute every figure the same way. `HeldOutJudge` wraps a
classifier trained on a different source than the reward model: when the reward rises
and the judge does not, the policy is hacking the reward.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def confusion_matrix(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> list[list[int]]:
    """matrix[i][j] = number of examples with true label labels[i] predicted labels[j]."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items, y_pred {len(y_pred)}")
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(y_true, y_pred, strict=True):
        for name, value in (("true", t), ("predicted", p)):
            if value not in index:
                raise ValueError(f"{name} label {value!r} is not one of {list(labels)}")
        matrix[index[t]][index[p]] += 1
    return matrix


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix.

    A class never predicted (or never present) gets precision (recall) 0, as in
    scikit-learn's `zero_division=0`.
    """
    if not y_true:
        raise ValueError("cannot compute metrics on an empty set")
    labels = list(labels) if labels is not None else sorted(set(y_true) | set(y_pred))
    matrix = confusion_matrix(y_true, y_pred, labels)
    per_class = {}
    for i, label in enumerate(labels):
        tp = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        actual = sum(matrix[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    correct = sum(matrix[i][i] for i in range(len(labels)))
    return {
        "accuracy": correct / len(y_true),
        "macro_precision": sum(c["precision"] for c in per_class.values()) / len(labels),
        "macro_recall": sum(c["recall"] for c in per_class.values()) / len(labels),
        "macro_f1": sum(c["f1"] for c in per_class.values()) / len(labels),
        "per_class": per_class,
        "labels": labels,
        "confusion_matrix": matrix,
        "n": len(y_true),
    }


def pairwise_accuracy(chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> float:
    """Share of pairs where the chosen response scores strictly higher (ties count 0.5)."""
    if len(chosen_scores) != len(rejected_scores) or not chosen_scores:
        raise ValueError("need two equally long, non-empty score lists")
    total = 0.0
    for c, r in zip(chosen_scores, rejected_scores, strict=True):
        total += 1.0 if c > r else 0.5 if c == r else 0.0
    return total / len(chosen_scores)


def mean_reward(rewards: Sequence[float]) -> float:
    if not len(rewards):
        raise ValueError("no rewards")
    return float(sum(float(r) for r in rewards) / len(rewards))


def kl_from_logprobs(
    policy_logprobs: Any, ref_logprobs: Any, mask: Any | None = None
) -> dict[str, float]:
    """Estimate KL(policy || ref) from log-probs of tokens *sampled from the policy*.

    Inputs are [batch, tokens] tensors of log pi(token) and log ref(token); `mask` marks
    generated tokens (1) vs padding (0). Per token the unbiased estimator
    log pi - log ref is used (its mean over samples is the KL); per sequence it is
    summed over the sequence's tokens. Returns the mean per-sequence KL, the mean
    per-token KL (total over all tokens / token count) and the k3 estimator
    (exp(r) - 1 - r, r = log ref - log pi; non-negative, lower variance) per sequence.
    """
    import torch

    logp = torch.as_tensor(policy_logprobs, dtype=torch.float64)
    logq = torch.as_tensor(ref_logprobs, dtype=torch.float64)
    if logp.shape != logq.shape or logp.dim() != 2:
        raise ValueError(
            f"need two [batch, tokens] tensors, got {tuple(logp.shape)} and {tuple(logq.shape)}"
        )
    m = torch.ones_like(logp) if mask is None else torch.as_tensor(mask, dtype=torch.float64)
    diff = (logp - logq) * m
    log_ratio = (logq - logp) * m
    k3 = (torch.exp(log_ratio) - 1 - log_ratio) * m
    tokens = m.sum()
    if tokens == 0:
        raise ValueError("mask selects no tokens")
    per_sequence = diff.sum(dim=1)
    return {
        "kl_per_sequence": float(per_sequence.mean()),
        "kl_per_token": float(diff.sum() / tokens),
        "kl_k3_per_sequence": float(k3.sum(dim=1).mean()),
        "tokens": int(tokens),
    }


def perplexity(token_logprobs: Any, mask: Any | None = None) -> float:
    """exp(mean negative log-likelihood per token) from [batch, tokens] log-probs."""
    import torch

    logp = torch.as_tensor(token_logprobs, dtype=torch.float64)
    m = torch.ones_like(logp) if mask is None else torch.as_tensor(mask, dtype=torch.float64)
    if m.sum() == 0:
        raise ValueError("mask selects no tokens")
    return float(torch.exp(-(logp * m).sum() / m.sum()))


def distinct_n(texts: Sequence[str], n: int = 2, tokenize=None) -> float:
    """Distinct-n: unique n-grams / total n-grams over all texts (diversity of samples).

    Texts are split on whitespace, or per CJK character when `tokenize` is
    `rlhf.engine.tokenization.pretokenize`.
    """
    tokenize = tokenize or str.split
    total = 0
    unique: set[tuple[str, ...]] = set()
    for text in texts:
        tokens = tokenize(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def repetition_rate(texts: Sequence[str], n: int = 3, tokenize=None) -> float:
    """Mean over texts of the share of n-grams already seen earlier in the same text.

    0 for text that never repeats itself; a policy stuck in a loop ("great great great
    ...") approaches 1. Texts shorter than n words count as 0.
    """
    tokenize = tokenize or str.split
    rates = []
    for text in texts:
        tokens = tokenize(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        rates.append(1 - len(set(grams)) / len(grams) if grams else 0.0)
    return sum(rates) / len(rates) if rates else 0.0


def text_quality(responses: Sequence[str]) -> dict[str, float]:
    """What a reader would notice in generated responses: diversity (distinct-2 over
    all of them), self-repetition (trigrams) and empty answers. Words are split as in
    `pretokenize` (CJK per character), so the figures mean the same in both languages."""
    from rlhf.engine.tokenization import pretokenize

    return {
        "distinct_2": distinct_n(responses, 2, tokenize=pretokenize),
        "repetition_rate": repetition_rate(responses, 3, tokenize=pretokenize),
        "empty_rate": (
            sum(not pretokenize(r) for r in responses) / len(responses) if responses else 0.0
        ),
    }


def bleu(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    tokenize: str = "13a",
) -> float:
    """Corpus BLEU (sacrebleu, 0-100). `references`: one per hypothesis, or several lists.

    Use tokenize="zh" for Chinese.
    """
    import sacrebleu

    if not hypotheses:
        raise ValueError("no hypotheses")
    refs = [list(references)] if isinstance(references[0], str) else [list(r) for r in references]
    for r in refs:
        if len(r) != len(hypotheses):
            raise ValueError(f"{len(hypotheses)} hypotheses but a reference list of {len(r)}")
    return float(sacrebleu.corpus_bleu(list(hypotheses), refs, tokenize=tokenize).score)


def rouge(
    hypotheses: Sequence[str],
    references: Sequence[str],
    types: Sequence[str] = ("rouge1", "rouge2", "rougeL"),
) -> dict[str, float]:
    """Mean ROUGE F-measures (rouge-score, English tokenisation with stemming)."""
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError("need equally many, non-empty hypotheses and references")
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=True)
    sums = Counter()
    for hyp, ref in zip(hypotheses, references, strict=True):
        for name, score in scorer.score(ref, hyp).items():
            sums[name] += score.fmeasure
    return {name: sums[name] / len(hypotheses) for name in types}


@dataclass
class HeldOutJudge:
    """A second opinion on generated text: a classifier trained on another data source.

    The reward model (e.g. trained on SST-2 sentences) is what the policy optimises;
    the judge (e.g. trained only on IMDB reviews) is never optimised against, so a rise
    in reward without a rise in the judge's positive rate flags reward hacking.
    """

    classifier: Any  # rlhf.engine.classifier.TextClassifier
    positive_label: str = "positive"

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> HeldOutJudge:
        from rlhf.engine.classifier import load_classifier

        return cls(load_classifier(directory, device=device))

    def positive_rate(self, texts: Sequence[str], batch_size: int = 32) -> float:
        """Share of texts the judge labels positive."""
        predictions = self.classifier.predict(list(texts), batch_size=batch_size)
        return sum(p.label == self.positive_label for p in predictions) / max(len(texts), 1)

    def evaluate(self, texts: Sequence[str], batch_size: int = 32) -> dict[str, float]:
        """Positive rate and mean positive log-odds of the judge on `texts`."""
        scores = self.classifier.positive_scores(list(texts), batch_size=batch_size)
        return {
            "judge_positive_rate": float((scores > 0).float().mean()),
            "judge_mean_score": float(scores.mean()),
            "n": len(texts),
        }

    def agreement(self, reward_scores: Sequence[float], texts: Sequence[str]) -> float:
        """Share of texts where the reward's sign (> 0 = positive) matches the judge."""
        judge = self.classifier.positive_scores(list(texts))
        agree = sum(
            (float(r) > 0) == (float(j) > 0) for r, j in zip(reward_scores, judge, strict=True)
        )
        return agree / max(len(texts), 1)


def log_odds(p: float, eps: float = 1e-6) -> float:
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))
