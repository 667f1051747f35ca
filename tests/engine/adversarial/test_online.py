"""Online (worst-of-k) adversarial training on the toy task."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rlhf.engine.adversarial import (
    AdversarialInputError,
    CharNgramSimilarity,
    HFClassifier,
    OnlineAdversarialConfig,
    WordAttackConfig,
    WordSubstitutionAttack,
    online_adversarial_training,
    robustness_report,
)
from rlhf.engine.adversarial.online import (
    SubstitutionSpace,
    pick_worst,
    sample_choices,
    token_swaps,
)

from .conftest import (
    HELD_OUT,
    LABELS,
    NEG,
    POS,
    SYNONYMS,
    make_attack,
    synonym_source,
    toy_data,
    train_toy,
)


def offline_swapper(max_edits: int = 2) -> WordSubstitutionAttack:
    """An attack used only for its substitution sets (its classifier is never called)."""
    return WordSubstitutionAttack(
        lambda texts: None, synonym_source, CharNgramSimilarity(), WordAttackConfig(max_edits)
    )


def test_pick_worst_takes_the_highest_loss_candidate_that_passes_similarity():
    owner = [0, 0, 0, 1, 1, 2]
    losses = np.array([0.2, 1.5, 0.9, 0.1, 0.3, 0.7])
    originals = ["a", "b", "c"]
    candidates = ["a0", "a1", "a2", "b0", "b1", "c0"]

    checked: list[str] = []

    def similarity(orig, pert):  # candidate "a1" is too far from its original
        checked.extend(pert)
        return np.array([0.1 if p == "a1" else 0.9 for p in pert])

    chosen, rejected = pick_worst(owner, losses, originals, candidates, similarity, 0.5)
    assert chosen == {0: 2, 1: 4, 2: 5}  # a1 (loss 1.5) fails similarity: a2 is next
    assert rejected == 1
    # in loss order, and only rows still without a passing candidate are checked again
    assert checked == ["a1", "b1", "c0", "a2"]
    chosen, rejected = pick_worst(owner, losses, originals, candidates, similarity, 0.0)
    assert chosen == {0: 1, 1: 4, 2: 5} and rejected == 0
    # a row whose checked candidates all fail gets no adversarial variant
    chosen, _ = pick_worst(owner, losses, originals, candidates, similarity, 0.5, checks=1)
    assert 0 not in chosen and chosen[1] == 4


def test_variants_come_only_from_label_preserving_substitutions():
    attack = offline_swapper(max_edits=2)
    text, label = "the great movie was good , truly", 1
    space = SubstitutionSpace(attack, text, label, {})
    assert [space.units[p] for p in space.positions] == ["great", "good"]
    # the dictionary offers antonyms first; the sentiment filter must drop every one
    for options in space.options:
        assert options and not set(options) & set(NEG)
    rng = random.Random(0)
    gains = [rng.random() * np.ones(len(o)) for o in space.options]
    choices = sample_choices(space, gains, 12, 4, 2, 8, 1.0, rng)
    assert choices and len({tuple(sorted(c.items())) for c in choices}) == len(choices)
    for choice in choices:
        out = space.apply(attack, choice).split()
        assert choice  # never the unchanged text (the budget is checked below)
        assert out[1] in ["great", *SYNONYMS["great"]] and out[4] in ["good", *SYNONYMS["good"]]
        assert out[0] == "the" and out[2:4] == ["movie", "was"] and out[5:] == [",", "truly"]
    # the edit budget binds: with two positions open, budget 2 uses both somewhere,
    # budget 1 never does
    assert max(len(c) for c in choices) == 2
    single = sample_choices(space, gains, 12, 4, 1, 8, 1.0, random.Random(0))
    assert single and all(len(c) == 1 for c in single)


def test_greedy_choices_follow_the_first_order_gains():
    attack = offline_swapper(max_edits=2)
    space = SubstitutionSpace(attack, "a great movie , a good plot , a fun cast", 1, {})
    assert len(space.positions) == 3
    gains = [np.array([0.1, 0.0, 0.2]), np.array([0.0, 3.0, 0.5]), np.array([1.0, 0.0, 0.0])]
    choices = sample_choices(space, gains, 2, 0, 2, 8, 1.0, random.Random(0))
    # the best variant on the best position, then the best two positions together
    assert choices == [{1: 1}, {1: 1, 2: 0}]


@pytest.mark.parametrize("backbone", ["bpe", "wordpiece"])
def test_token_swaps_point_at_the_substituted_token(toy_model, backbone):
    attack = offline_swapper()
    text = "the great movie was good , truly"
    space = SubstitutionSpace(attack, text, 1, {})
    if backbone == "bpe":
        tok = toy_model.tokenizer  # byte-level BPE: a token carries the leading space
    else:
        from transformers import AutoTokenizer

        from rlhf.engine.paths import minilm_dir

        tok = AutoTokenizer.from_pretrained(minilm_dir())  # WordPiece: the fast path
    ids = tok(text)["input_ids"]
    rows = iter(token_swaps(attack, space, tok, 32).tolist())
    found = 0
    for j, options in enumerate(space.options):
        for v in range(len(options)):
            t, old, new = next(rows)
            swapped = tok(space.apply(attack, {j: v}))["input_ids"]
            if t < 0:  # not a one-token change in this vocabulary
                assert len(swapped) != len(ids) or sum(map(int.__ne__, ids, swapped)) > 1
                continue
            found += 1
            assert ids[t] == old and swapped[t] == new
            assert swapped[:t] + swapped[t + 1 :] == ids[:t] + ids[t + 1 :]
    assert next(rows, None) is None and found > 0


def held_out(model):
    results = make_attack(model).attack_many(
        [r.text for r in HELD_OUT], [LABELS.index(r.label) for r in HELD_OUT]
    )
    return robustness_report(results)


def test_online_training_hardens_the_toy_classifier():
    model = train_toy(seed=1)  # its own copy: this test trains it further
    before = held_out(model)
    assert before.attack_success_rate > 0.2
    config = OnlineAdversarialConfig(variants_per_example=4, random_variants=1, learning_rate=2e-3,
                                     epochs=3, batch_size=16, max_length=32,
                                     warmup_ratio=0.0, freeze_embeddings=False,
                                     replay_per_batch=8, kl_weight=0.5)  # fmt: skip
    result = online_adversarial_training(model, toy_data(200, seed=3), make_attack(model), config,
                                         replay=toy_data(100, seed=6))  # fmt: skip
    stats = result.stats
    assert stats["share_with_variants"] > 0.9 and stats["variants_per_example"] > 1
    # the inner maximisation found variants the model got wrong at the start
    assert stats["worst_flip_rate"] > 0
    after = held_out(result.classifier)
    assert after.attack_success_rate <= before.attack_success_rate / 2
    assert after.clean_accuracy >= before.clean_accuracy - 0.05


def test_adversarial_examples_keep_the_true_label():
    """Train on a model that can only learn from variants: their labels must be true."""
    model = train_toy(seed=2)
    config = OnlineAdversarialConfig(variants_per_example=3, learning_rate=2e-3, epochs=2,
                                     batch_size=16, max_length=32, warmup_ratio=0.0,
                                     freeze_embeddings=False)  # fmt: skip
    result = online_adversarial_training(model, toy_data(120, seed=4), make_attack(model), config)
    clf = HFClassifier.from_text_classifier(result.classifier)
    positives = [f"the movie was {s}" for base in POS for s in SYNONYMS[base]]
    negatives = [f"the movie was {s}" for base in NEG for s in SYNONYMS[base]]
    # synonyms only ever appear in training as variants of their base word's text
    assert clf(positives)[:, 1].mean() > 0.5 > clf(negatives)[:, 1].mean()


def test_bad_config_is_a_clear_error():
    with pytest.raises(AdversarialInputError, match="random_variants"):
        OnlineAdversarialConfig(variants_per_example=2, random_variants=3)
    with pytest.raises(AdversarialInputError, match="max_edits"):
        OnlineAdversarialConfig(max_edits=0)


def test_replay_needs_a_replay_set(toy_model):
    config = OnlineAdversarialConfig(replay_per_batch=4, epochs=1)
    with pytest.raises(AdversarialInputError, match="replay"):
        online_adversarial_training(toy_model, toy_data(8, seed=5), offline_swapper(), config)


def test_chinese_character_attack_gives_substitution_sets():
    from rlhf.engine.adversarial import CharAttack, CharAttackConfig

    attack = CharAttack(lambda texts: None, config=CharAttackConfig(language="auto"))
    space = SubstitutionSpace(attack, "装修后还不错，房间很干净", 1, {})
    # every attackable character is a unit of its own; 不 (negation) is never touched
    assert len(space.units) == 12 and len(space.positions) >= 6
    assert "不" not in [space.units[p] for p in space.positions]
    assert all(len(v) == 1 for options in space.options for v in options)
