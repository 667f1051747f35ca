"""Budgeted black-box attacks: the target is only a `Classify` or `Score` callable.

Nothing of the target model is read: substitutes come from a public surrogate (the
pretrained MiniLM's input-embedding neighbourhood) or from character perturbations, and
every text sent to the target counts against a per-example query budget. When the
budget runs out before a verified label flip, the example reports status "budget" and
no success.

    attack = blackbox_attack(classify=stub_probabilities, method="word",
                             similarity=MiniLMSimilarity(), query_budget=200)
    results = attack.attack_many(texts, labels)
"""

from __future__ import annotations

from dataclasses import fields

from rlhf.engine.adversarial.base import (
    AdversarialInputError,
    Classifier,
    ScoreFn,
    SimilarityModel,
    classifier_from_scores,
)
from rlhf.engine.adversarial.char import CharAttack, CharAttackConfig
from rlhf.engine.adversarial.search import GreedyAttack
from rlhf.engine.adversarial.similarity import MiniLMSimilarity
from rlhf.engine.adversarial.word import (
    CandidateSource,
    EmbeddingNeighbours,
    WordAttackConfig,
    WordSubstitutionAttack,
)

METHODS = ("word", "char")


def surrogate_neighbours(similarity: MiniLMSimilarity, **kwargs) -> EmbeddingNeighbours:
    """Substitutes from the pretrained MiniLM's input embeddings (not the target's)."""
    return EmbeddingNeighbours.from_model(similarity.model, similarity.tokenizer, **kwargs)


def blackbox_attack(
    *,
    classify: Classifier | None = None,
    score: ScoreFn | None = None,
    score_threshold: float = 0.0,
    method: str = "word",
    similarity: SimilarityModel | None = None,
    candidates: CandidateSource | None = None,
    query_budget: int = 200,
    **config_fields,
) -> GreedyAttack:
    """A word or char attack that sees the target only through `classify` or `score`.

    `classify(texts) -> probabilities (n, classes)`; or `score(texts) -> (n,)` rewards,
    read as class 1 when above `score_threshold`. Other keyword arguments are fields of
    `WordAttackConfig` / `CharAttackConfig` (e.g. max_edits=3, min_similarity=0.8).
    """
    if (classify is None) == (score is None):
        raise AdversarialInputError("pass exactly one of classify= or score=")
    if method not in METHODS:
        raise AdversarialInputError(f"method must be one of {METHODS}, got {method!r}")
    if query_budget < 2:
        raise AdversarialInputError(f"query_budget must be >= 2, got {query_budget}")
    target = classify if classify is not None else classifier_from_scores(score, score_threshold)
    config_cls = WordAttackConfig if method == "word" else CharAttackConfig
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(config_fields) - known)
    if unknown:
        raise AdversarialInputError(f"unknown {config_cls.__name__} fields: {unknown}")
    config = config_cls(query_budget=query_budget, **config_fields)
    if method == "char":
        return CharAttack(target, similarity, config)
    if similarity is None:
        similarity = MiniLMSimilarity()
    if candidates is None:
        if not isinstance(similarity, MiniLMSimilarity):
            raise AdversarialInputError(
                "a word attack needs candidates= (or a MiniLMSimilarity to borrow them from)"
            )
        candidates = surrogate_neighbours(
            similarity, top_k=config.candidates_per_word, min_cosine=config.min_cosine
        )
    return WordSubstitutionAttack(target, candidates, similarity, config)
