"""Word-substitution attack: greedy by importance, under an edit budget.

Substitutes come from the attacked model's own input-embedding neighbourhood (cosine
nearest neighbours over whole-word vocabulary entries), filtered so the swap keeps the
true label: no stopwords or negations, no antonyms or sentiment flips under the VADER
reference lexicon, matching -ly/-ing/-ed endings. Sentence similarity (MiniLM, default
>= 0.80) and the edit budget (default 3 words) bound the search; see `search.py` for the
greedy loop and the final re-check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlhf.engine.adversarial.base import AdversarialInputError, Classifier, SimilarityModel
from rlhf.engine.adversarial.lexicon import (
    NEGATIONS,
    STOPWORDS,
    substitution_preserves_sentiment,
)
from rlhf.engine.adversarial.search import GreedyAttack, SearchConfig


@dataclass
class WordAttackConfig(SearchConfig):
    """Word-substitution knobs (plus the budget/constraints of `SearchConfig`)."""

    candidates_per_word: int = 50  # embedding neighbours considered per word
    min_cosine: float = 0.20  # neighbours must be at least this close in embedding space
    sentiment_filter: bool = True  # reject substitutes that flip sentiment (VADER lexicon)
    same_inflection: bool = True  # -ly/-ing/-ed endings must match (cheap POS heuristic)
    label_polarity: tuple[int, ...] | None = (-1, 1)  # polarity of each class id, or None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.candidates_per_word < 1:
            raise AdversarialInputError("candidates_per_word must be >= 1")


_TOKEN = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)
_INFLECTIONS = ("ly", "ing", "ed")


def split_words(text: str) -> list[str]:
    """Whitespace tokens with their separators: "".join(split_words(t)) == t."""
    return re.split(r"(\s+)", text)


def word_core(token: str) -> tuple[str, str, str]:
    """("(", "word", "),") for "(word),": punctuation stays put when the word changes."""
    m = _TOKEN.match(token)
    assert m is not None
    return m.group(1), m.group(2), m.group(3)


def match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def is_substitutable(word: str) -> bool:
    w = word.lower()
    return w.isalpha() and w.isascii() and len(w) > 1 and w not in STOPWORDS and w not in NEGATIONS


class EmbeddingNeighbours:
    """Candidate substitutes: cosine nearest neighbours in a model's input-embedding table.

    Only whole-word vocabulary entries (no "##" pieces, alphabetic, not stopwords) are
    candidates; a word that the tokenizer splits into pieces has no neighbours.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        vocab: Sequence[str],
        *,
        top_k: int = 50,
        min_cosine: float = 0.20,
    ) -> None:
        if embeddings.shape[0] != len(vocab):
            raise AdversarialInputError(
                f"embedding table has {embeddings.shape[0]} rows for {len(vocab)} vocab entries"
            )
        self.top_k = top_k
        self.min_cosine = min_cosine
        self.index = {tok: i for i, tok in enumerate(vocab)}
        keep = np.array([is_substitutable(t) for t in vocab])
        self.ids = np.flatnonzero(keep)
        self.words = [vocab[i] for i in self.ids]
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        self.unit = (embeddings / np.maximum(norms, 1e-12)).astype(np.float32)
        self.candidate_unit = self.unit[self.ids]
        self._cache: dict[str, list[tuple[str, float]]] = {}

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, **kwargs: Any) -> EmbeddingNeighbours:
        """From a transformers model (its input embeddings) and its tokenizer."""
        weight = model.get_input_embeddings().weight.detach().float().cpu().numpy()
        vocab = tokenizer.convert_ids_to_tokens(list(range(weight.shape[0])))
        return cls(weight, vocab, **kwargs)

    def __call__(self, word: str) -> list[tuple[str, float]]:
        key = word.lower()
        if key not in self._cache:
            row = self.index.get(key)
            if row is None:
                self._cache[key] = []
            else:
                sims = self.candidate_unit @ self.unit[row]
                order = np.argsort(-sims)[: self.top_k + 1]
                self._cache[key] = [
                    (self.words[j], float(sims[j]))
                    for j in order
                    if self.words[j] != key and sims[j] >= self.min_cosine
                ][: self.top_k]
        return self._cache[key]


#: word -> [(substitute, closeness)], best first.
CandidateSource = Callable[[str], list[tuple[str, float]]]


class WordSubstitutionAttack(GreedyAttack):
    """Greedy word substitution under an edit budget and a similarity constraint."""

    config: WordAttackConfig

    def __init__(
        self,
        classifier: Classifier,
        candidates: CandidateSource,
        similarity: SimilarityModel,
        config: WordAttackConfig | None = None,
    ) -> None:
        super().__init__(classifier, similarity, config or WordAttackConfig())
        self.candidates = candidates

    def segment(self, text: str) -> list[str]:
        return split_words(text)

    def attackable(self, unit: str) -> bool:
        return not unit.isspace() and is_substitutable(word_core(unit)[1])

    def allowed(self, word: str, candidate: str, label: int) -> bool:
        """The label-preservation filters for one substitution."""
        cfg = self.config
        w, c = word.lower(), candidate.lower()
        if c == w or not is_substitutable(c):
            return False
        if cfg.same_inflection:
            for suffix in _INFLECTIONS:
                if w.endswith(suffix) != c.endswith(suffix):
                    return False
        if cfg.sentiment_filter:
            polarity = None
            if cfg.label_polarity is not None and label < len(cfg.label_polarity):
                polarity = cfg.label_polarity[label]
            if not substitution_preserves_sentiment(w, c, polarity):
                return False
        return True

    def variants(self, unit: str, label: int) -> list[str]:
        lead, core, trail = word_core(unit)
        subs = self.candidates(core)[: self.config.candidates_per_word]
        return [lead + match_case(core, c) + trail for c, _ in subs if self.allowed(core, c, label)]
