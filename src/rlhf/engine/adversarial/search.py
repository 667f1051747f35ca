"""The greedy search shared by the word and character attacks.

A text is cut into units (words, or characters for Chinese). For one labelled text:

1. importance: delete each attackable unit in turn; the drop of the true-class
   probability ranks the units (one batched model call);
2. most important unit first: build its label-preserving variants (subclass), score
   them all with the model (one batched call), compute sentence similarity for the most
   damaging few, keep the best variant that passes the similarity threshold and lowers
   the true-class probability (a label flip wins at once, the most similar flip first);
   with `beam_width` > 1 the best few partial edits are kept instead of one (a beam),
   each of them also free to leave the unit unchanged;
3. stop at the first flip or when the edit budget is spent.

The final text is re-checked (prediction, similarity, edit count) before the result is
called a success: a success always means a changed prediction under every constraint,
and the true label is never touched. With a query budget, an attack that runs out of
queries reports status "budget" and no success.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rlhf.engine.adversarial.base import (
    AdversarialInputError,
    AttackResult,
    Classifier,
    CountingClassifier,
    SimilarityModel,
    check_labels,
    check_texts,
)


@dataclass
class SearchConfig:
    """Budget and constraints common to every greedy attack."""

    max_edits: int = 3  # units (words / characters) changed at most
    min_similarity: float = 0.80  # similarity to the original, at least (0 disables)
    max_positions: int | None = None  # units tried in importance order; None = all
    similarity_checks: int = 12  # similarity computed for this many best variants per unit
    query_budget: int | None = None  # model queries (texts scored) per example; None = no cap
    beam_width: int = 1  # search states kept per position (1 = greedy; queries grow ~linearly)

    def __post_init__(self) -> None:
        if not 1 <= self.max_edits <= 50:
            raise AdversarialInputError(f"max_edits must be in 1..50, got {self.max_edits}")
        if not 0.0 <= self.min_similarity <= 1.0:
            raise AdversarialInputError(
                f"min_similarity must be in [0, 1], got {self.min_similarity}"
            )
        if self.similarity_checks < 1:
            raise AdversarialInputError("similarity_checks must be >= 1")
        if self.beam_width < 1:
            raise AdversarialInputError(f"beam_width must be >= 1, got {self.beam_width}")
        if self.query_budget is not None and self.query_budget < 2:
            raise AdversarialInputError("query_budget must be >= 2 (or None for no cap)")


class _BudgetExhausted(Exception):
    pass


@dataclass
class _State:
    """One beam entry: the units so far, the true-class probability, the edits made."""

    units: list[str]
    p: float
    changes: list[tuple[str, str]]


class GreedyAttack:
    """Base class: subclasses define `segment`, `join`, `attackable` and `variants`."""

    config: SearchConfig

    def __init__(
        self, classifier: Classifier, similarity: SimilarityModel, config: SearchConfig
    ) -> None:
        self.classifier = classifier
        self.similarity = similarity
        self.config = config

    # -- what a subclass provides ---------------------------------------------------------

    def segment(self, text: str) -> list[str]:
        raise NotImplementedError

    def join(self, units: list[str]) -> str:
        return "".join(units)

    def attackable(self, unit: str) -> bool:
        raise NotImplementedError

    def variants(self, unit: str, label: int) -> list[str]:
        """Label-preserving replacements for `unit` (never `unit` itself)."""
        raise NotImplementedError

    def prepare(self, text: str) -> None:
        """Set any per-text state `segment`/`variants` need (e.g. the language); none here.

        `attack` calls it; code that uses the substitution sets without attacking (online
        adversarial training) calls it before `segment`.
        """

    # -- the search -----------------------------------------------------------------------

    def attack(self, text: str, label: int) -> AttackResult:
        """Attack one text whose TRUE label is `label` (a class id)."""
        check_texts([text])
        model = CountingClassifier(self.classifier)
        result = AttackResult(text, text, int(label), -1, -1, False, "failed")
        try:
            self._search(result, model)
        except _BudgetExhausted:
            # out of queries before a verified flip: no success, the text is unchanged
            result.perturbed, result.changes, result.edits = text, [], 0
            result.predicted_after, result.similarity = result.predicted_before, 1.0
            result.success, result.status = False, "budget"
        result.queries = model.queries
        return result

    def _query(self, model: CountingClassifier, texts: list[str], reserve: int = 1) -> np.ndarray:
        """One batched model call; `reserve` queries stay free for the final re-check."""
        budget = self.config.query_budget
        if budget is not None and model.queries + len(texts) + reserve > budget:
            raise _BudgetExhausted
        return model(texts)

    def _search(self, result: AttackResult, model: CountingClassifier) -> None:
        cfg, text, label = self.config, result.original, result.label
        probs0 = self._query(model, [text])[0]
        result.predicted_before = result.predicted_after = int(np.argmax(probs0))
        if result.predicted_before != label:
            result.status = "skipped"  # already wrong: nothing to attack
            return

        units = self.segment(text)
        positions = [i for i, unit in enumerate(units) if self.attackable(unit)]
        if positions:
            # 1. importance: how much the true class loses when the unit is deleted
            deleted = [self.join(units[:i] + [""] + units[i + 1 :]) for i in positions]
            drop = probs0[label] - self._query(model, deleted)[:, label]
            positions = [positions[j] for j in np.argsort(-drop, kind="stable")]
        if cfg.max_positions is not None:
            positions = positions[: cfg.max_positions]

        # 2. beam search over substitutions, most important unit first (width 1 = greedy)
        current, changes = self._beam_search(model, text, label, units, positions,
                                             float(probs0[label]))  # fmt: skip

        # 3. re-check the final text before calling it a success
        perturbed = self.join(current)
        result.perturbed, result.changes, result.edits = perturbed, changes, len(changes)
        if changes:
            after = int(np.argmax(self._query(model, [perturbed], reserve=0)[0]))
            sim = float(self.similarity([text], [perturbed])[0])
            result.predicted_after, result.similarity = after, sim
            result.success = (
                after != label and sim >= cfg.min_similarity and len(changes) <= cfg.max_edits
            )
        result.status = "success" if result.success else "failed"

    def _beam_search(
        self,
        model: CountingClassifier,
        text: str,
        label: int,
        units: list[str],
        positions: list[int],
        p0: float,
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """Keep the `beam_width` states with the lowest true-class probability.

        At each position every beam state may stay as it is or take one variant of the
        unit; variants are scored in one batched call, the most damaging few per state
        get a similarity check, and a state survives only under the similarity threshold
        and the edit budget. The first similarity-passing label flip ends the search (the
        most similar flip wins).
        """
        cfg = self.config
        beam: list[_State] = [_State(list(units), p0, [])]
        for pos in positions:
            open_states = [st for st in beam if len(st.changes) < cfg.max_edits]
            if not open_states:
                break
            options = self.variants(units[pos], label)
            if not options:
                continue
            trials: list[tuple[_State, int, list[str]]] = []
            for st in open_states:
                for j, option in enumerate(options):
                    trials.append((st, j, st.units[:pos] + [option] + st.units[pos + 1 :]))
            texts = [self.join(t) for _, _, t in trials]
            probs = self._query(model, texts)
            p_label = probs[:, label]
            flipped = np.argmax(probs, axis=1) != label
            # per state: the most damaging variants that lower its probability
            checked: list[int] = []
            for st in open_states:
                mine = [i for i, (s, _, _) in enumerate(trials) if s is st and p_label[i] < st.p]
                mine.sort(key=lambda i: (not flipped[i], p_label[i]))
                checked.extend(mine[: cfg.similarity_checks])
            if not checked:
                continue
            sims = self.similarity([text] * len(checked), [texts[i] for i in checked])
            passing = [(i, s) for i, s in zip(checked, sims, strict=True)
                       if s >= cfg.min_similarity]  # fmt: skip
            flips = [(i, s) for i, s in passing if flipped[i]]
            if flips:
                i = max(flips, key=lambda item: item[1])[0]
                st, j, trial = trials[i]
                return trial, st.changes + [(units[pos], options[j])]
            grown = [
                _State(trials[i][2], float(p_label[i]),
                       trials[i][0].changes + [(units[pos], options[trials[i][1]])])
                for i, _ in passing
            ]  # fmt: skip
            pool: dict[str, _State] = {}
            for st in sorted(beam + grown, key=lambda st: st.p):
                pool.setdefault(self.join(st.units), st)
            beam = list(pool.values())[: cfg.beam_width]
        best = min(beam, key=lambda st: st.p)
        return best.units, best.changes

    def attack_many(
        self,
        texts: Sequence[str],
        labels: Sequence[int],
        progress: Callable[[int, AttackResult], None] | None = None,
    ) -> list[AttackResult]:
        """Attack every (text, true label); inputs are checked before any model call."""
        checker = getattr(self.classifier, "check", None)
        texts = checker(texts) if checker is not None else check_texts(texts)
        labels = check_labels(labels, len(texts), getattr(self.classifier, "n_classes", None))
        results = []
        for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
            results.append(self.attack(text, label))
            if progress is not None:
                progress(i, results[-1])
        return results
