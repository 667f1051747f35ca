"""Word-substitution attack on a tiny trained classifier: flips within budget, constraints."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf.engine.adversarial import (
    AdversarialInputError,
    CharNgramSimilarity,
    EmbeddingNeighbours,
    HFClassifier,
    WordAttackConfig,
    WordSubstitutionAttack,
    robustness_report,
)
from rlhf.engine.adversarial.lexicon import substitution_preserves_sentiment
from rlhf.engine.adversarial.word import match_case, split_words, word_core

from .conftest import LABELS, POS, SYNONYMS, synonym_source, toy_data

EVAL = toy_data(40, seed=5)


def attack_eval(clf, **config):
    config = {"max_edits": 2, "min_similarity": 0.3} | config
    attack = WordSubstitutionAttack(
        clf, synonym_source, CharNgramSimilarity(), WordAttackConfig(**config)
    )
    texts, labels = [r.text for r in EVAL], [LABELS.index(r.label) for r in EVAL]
    return attack.attack_many(texts, labels)


def test_attack_finds_flips_within_budget_and_every_success_is_real(toy_clf):
    results = attack_eval(toy_clf)
    report = robustness_report(results)
    assert report.clean_accuracy > 0.9
    assert report.successes > 0, "the synonym swap should flip some predictions"
    again = toy_clf([r.perturbed for r in results]).argmax(axis=1)
    for r, pred in zip(results, again, strict=True):
        assert r.edits <= 2
        if r.success:
            # a success is a changed prediction, re-checked here on the returned text
            assert r.predicted_before == r.label and pred != r.label == r.predicted_before
            assert r.similarity >= 0.3
            # the true label is never touched; substitutes are synonyms, never antonyms
            assert all(new in SYNONYMS[old] for old, new in r.changes)
        else:
            assert r.status in ("failed", "skipped")


def test_failed_attack_reports_no_success_when_only_antonyms_exist(toy_clf):
    def antonyms_only(word):
        return [(c, 0.9) for c, _ in synonym_source(word) if c not in sum(SYNONYMS.values(), [])]

    attack = WordSubstitutionAttack(toy_clf, antonyms_only, CharNgramSimilarity(),
                                    WordAttackConfig(min_similarity=0.0))  # fmt: skip
    results = attack.attack_many([r.text for r in EVAL], [LABELS.index(r.label) for r in EVAL])
    assert not any(r.success for r in results)
    assert all(r.perturbed == r.original and r.edits == 0 for r in results)


def test_similarity_constraint_is_respected(toy_clf):
    strict = attack_eval(toy_clf, min_similarity=0.97)
    assert not any(r.success for r in strict)

    class Fixed:
        def __call__(self, a, b):
            return np.array([0.79] * len(a))

    attack = WordSubstitutionAttack(toy_clf, synonym_source, Fixed(), WordAttackConfig())
    results = attack.attack_many([r.text for r in EVAL], [LABELS.index(r.label) for r in EVAL])
    assert not any(r.success for r in results) and all(r.edits == 0 for r in results)
    loose = attack_eval(toy_clf, min_similarity=0.6)
    assert all(r.similarity >= 0.6 for r in loose if r.success)


def test_misclassified_examples_are_skipped_not_counted(toy_clf):
    text = EVAL[0].text
    wrong = 1 - LABELS.index(EVAL[0].label)
    attack = WordSubstitutionAttack(toy_clf, synonym_source, CharNgramSimilarity())
    result = attack.attack(text, wrong)
    assert result.status == "skipped" and not result.success and result.label == wrong


def test_bad_input_is_a_clear_error(toy_clf):
    attack = WordSubstitutionAttack(toy_clf, synonym_source, CharNgramSimilarity())
    with pytest.raises(AdversarialInputError, match=r"texts\[1\] is empty"):
        attack.attack_many(["a great movie", "  "], [1, 1])
    with pytest.raises(AdversarialInputError, match=r"texts\[0\] has \d+ tokens"):
        attack.attack_many(["great " * 200], [1])
    with pytest.raises(AdversarialInputError, match="labels has 1 entries for 2 texts"):
        attack.attack_many(["a great movie", "a bad movie"], [1])
    with pytest.raises(AdversarialInputError, match=r"labels\[0\] = 7"):
        attack.attack_many(["a great movie"], [7])
    with pytest.raises(AdversarialInputError, match="not a saved model directory"):
        HFClassifier.from_pretrained("/nonexistent/model-v9")
    with pytest.raises(AdversarialInputError, match="max_edits"):
        WordAttackConfig(max_edits=0)


def test_embedding_neighbours_whole_words_by_cosine():
    vocab = ["[PAD]", "good", "great", "##ood", "the", "bad", "fine", "x"]
    emb = np.array([[0, 0], [1, 0], [0.9, 0.1], [1, 0], [1, 0.01], [0.8, 0.3], [0.5, 0.5], [1, 0]])
    nn = EmbeddingNeighbours(emb, vocab, top_k=3, min_cosine=0.5)
    words = [w for w, _ in nn("good")]
    assert words == ["great", "bad", "fine"]  # no "##ood", no stopword "the", no 1-letter "x"
    assert nn("unknownword") == []


def test_label_preservation_filters():
    assert substitution_preserves_sentiment("good", "great")
    assert not substitution_preserves_sentiment("good", "bad")
    assert not substitution_preserves_sentiment("boring", "exciting")
    assert not substitution_preserves_sentiment("often", "rarely")
    assert not substitution_preserves_sentiment("movie", "not")
    assert not substitution_preserves_sentiment("great", "okay") or True  # both positive in VADER
    # a neutral word may not turn into one polar against the true label
    assert not substitution_preserves_sentiment("movie", "disaster", label_polarity=1)
    assert all(substitution_preserves_sentiment(w, s) for w in POS for s in SYNONYMS[w])


def test_tokens_keep_punctuation_and_case():
    assert "".join(split_words("Hello,  (world)!")) == "Hello,  (world)!"
    assert word_core("(Great),") == ("(", "Great", "),")
    assert match_case("Great", "superb") == "Superb" and match_case("GREAT", "ok") == "OK"


def test_inflected_words_take_their_stems_polarity():
    from rlhf.engine.adversarial.lexicon import polarity, stems

    assert "fine" in stems("finest") and "harsh" in stems("harshly") and "big" in stems("biggest")
    assert polarity("finest") == 1 and polarity("harshly") == -1
    assert polarity("unfunny") == -1  # not in VADER: opposite of "funny"
    # "at its finest" -> "at its slightest": a polar word drained to a neutral one
    assert not substitution_preserves_sentiment("finest", "slightest")
    # a neutral word turned into one polar against a positive label
    assert not substitution_preserves_sentiment("profoundly", "harshly", label_polarity=1)


def test_morphological_antonyms_are_rejected():
    from rlhf.engine.adversarial.lexicon import is_antonymish

    for a, b in [("likable", "unlikable"), ("appropriate", "inappropriate"),
                 ("careful", "careless"), ("meaningfully", "meaninglessly"),
                 ("revoked", "renewed")]:  # fmt: skip
        assert is_antonymish(a, b) and is_antonymish(b, a)
        assert not substitution_preserves_sentiment(a, b)
    assert not is_antonymish("movie", "film") and not is_antonymish("in", "inn")


def test_beam_search_finds_a_flip_that_greedy_misses():
    # p(true class 1) for each text: greedy takes "alphax" (the most damaging first edit)
    # and is stuck; a beam of 2 also keeps "alphay", whose second edit flips the label.
    table = {"alpha beta": 0.9, " beta": 0.5, "alpha ": 0.8, "alphax beta": 0.6,
             "alphay beta": 0.7, "alpha betax": 0.8, "alphax betax": 0.55,
             "alphay betax": 0.3}  # fmt: skip

    def classify(texts):
        return np.array([[1 - table[t], table[t]] for t in texts])

    def candidates(word):
        return {"alpha": [("alphax", 0.9), ("alphay", 0.8)], "beta": [("betax", 0.9)]}[word]

    class Same:
        def __call__(self, a, b):
            return np.ones(len(a))

    def run(beam_width):
        config = WordAttackConfig(max_edits=2, beam_width=beam_width)
        return WordSubstitutionAttack(classify, candidates, Same(), config).attack("alpha beta", 1)

    greedy, beam = run(1), run(2)
    assert not greedy.success and greedy.perturbed == "alphax betax"
    assert beam.success and beam.perturbed == "alphay betax" and beam.predicted_after == 0
    assert beam.changes == [("alpha", "alphay"), ("beta", "betax")]
    with pytest.raises(AdversarialInputError, match="beam_width"):
        WordAttackConfig(beam_width=0)
