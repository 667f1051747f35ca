"""A toy sentiment task where a tiny classifier is brittle in a known way.

The classifier is trained only on "base" adjectives; their synonyms are in its tokenizer
(own token ids) but never in its training data, so their embeddings stay random and a
synonym swap flips some predictions. A dictionary candidate source offers those
synonyms, plus antonyms that the sentiment filter must reject.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from rlhf.engine.adversarial import (
    CharNgramSimilarity,
    HFClassifier,
    WordAttackConfig,
    WordSubstitutionAttack,
)
from rlhf.engine.classifier import ClassifierTrainConfig, tiny_classifier, train_classifier
from rlhf.engine.data import LabeledText

POS = ["great", "good", "wonderful", "excellent", "fun"]
NEG = ["bad", "awful", "terrible", "boring", "dull"]
SYNONYMS = {
    "great": ["superb", "splendid", "marvelous"],
    "good": ["lovely", "nice", "fantastic"],
    "wonderful": ["marvelous", "splendid", "lovely"],
    "excellent": ["outstanding", "superb", "terrific"],
    "fun": ["lovely", "nice", "terrific"],
    "bad": ["lousy", "poor", "pathetic"],
    "awful": ["dreadful", "horrible", "dire"],
    "terrible": ["horrible", "lousy", "dreadful"],
    "boring": ["pathetic", "poor", "dire"],
    "dull": ["dire", "lousy", "poor"],
}
ANTONYMS = {w: NEG[:3] for w in POS} | {w: POS[:3] for w in NEG}
NOUNS = ["movie", "film", "story", "plot", "show", "cast", "script"]
TEMPLATES = ["the {n} was {a}", "a {a} {n}", "what a {a} {n} !", "the {n} is {a} , truly"]
LABELS = ("negative", "positive")


def toy_data(n: int, seed: int) -> list[LabeledText]:
    rng = random.Random(seed)
    adjectives = {0: NEG, 1: POS}
    out = []
    for _ in range(n):
        y = rng.randrange(2)
        text = rng.choice(TEMPLATES).format(n=rng.choice(NOUNS), a=rng.choice(adjectives[y]))
        out.append(LabeledText(text, LABELS[y]))
    return out


def synonym_source(word: str) -> list[tuple[str, float]]:
    """Dictionary candidates: antonyms first (must be filtered out), then synonyms."""
    w = word.lower()
    return [(c, 0.9) for c in ANTONYMS.get(w, [])] + [(c, 0.8) for c in SYNONYMS.get(w, [])]


HELD_OUT = toy_data(40, seed=9)
"""Toy texts no test trains on."""


def make_attack(model) -> WordSubstitutionAttack:
    """The word attack every adversarial-training test uses on the toy task."""
    return WordSubstitutionAttack(
        HFClassifier.from_text_classifier(model),
        synonym_source,
        CharNgramSimilarity(),
        WordAttackConfig(max_edits=2, min_similarity=0.3),
    )


def train_toy(seed: int = 0):
    train = toy_data(400, seed)
    synonym_texts = [f"the movie was {s}" for subs in SYNONYMS.values() for s in subs]
    model = tiny_classifier(LABELS, [r.text for r in train] + synonym_texts, seed=seed,
                            max_length=32)  # fmt: skip
    config = ClassifierTrainConfig(backbone="tiny", learning_rate=3e-3, epochs=4, batch_size=16,
                                   max_length=32, seed=seed, warmup_ratio=0.0)  # fmt: skip
    return train_classifier(config, train, classifier=model).classifier


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models are overhead-bound: one thread avoids spin-waiting on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_model():
    """A trained tiny classifier (shared; tests must not train it further)."""
    return train_toy()


@pytest.fixture
def keyword_classifier():
    """p(positive) from keyword counts: an exact, model-free target for search tests."""

    def classify(texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            score = sum(t.count(w) for w in ("great", "好", "棒")) - sum(
                t.count(w) for w in ("awful", "差", "烂")
            )
            p = 1 / (1 + np.exp(-2.0 * score))
            out.append([1 - p, p])
        return np.array(out)

    return classify


@pytest.fixture
def toy_clf(toy_model) -> HFClassifier:
    return HFClassifier.from_text_classifier(toy_model)
