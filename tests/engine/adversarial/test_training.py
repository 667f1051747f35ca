"""An adversarial-training round on the toy task: versioned dataset, true labels, lower ASR."""

from __future__ import annotations

from rlhf.engine.adversarial import (
    AdversarialTrainingConfig,
    CharNgramSimilarity,
    WordSubstitutionAttack,
    adversarial_preference_pairs,
    adversarial_training,
    finetune_text_classifier,
    robustness_report,
)
from rlhf.engine.data import PreferencePair, dataset_version, load_dataset

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


def held_out_asr(model) -> float:
    results = make_attack(model).attack_many(
        [r.text for r in HELD_OUT], [LABELS.index(r.label) for r in HELD_OUT]
    )
    return robustness_report(results).attack_success_rate


def test_adversarial_round_makes_versioned_dataset_and_lowers_asr(tmp_path):
    model = train_toy(seed=1)  # its own copy: this test trains it further
    asr_before = held_out_asr(model)
    pool = toy_data(200, seed=3)
    config = AdversarialTrainingConfig(rounds=1, attack_examples=120, clean_examples=120,
                                       adversarial_repeats=2, labels=LABELS,
                                       output_dir=str(tmp_path))  # fmt: skip
    retrain = finetune_text_classifier(backbone="tiny", learning_rate=2e-3, epochs=3, batch_size=16,
                                       max_length=32, warmup_ratio=0.0)  # fmt: skip
    result = adversarial_training(model, pool, make_attack, retrain, config)

    (record,) = result.rounds
    assert record.new_adversarial > 0 and record.attack.attack_success_rate > 0
    # the dataset on disk is the versioned one, and adversarial texts keep TRUE labels
    saved = load_dataset(record.dataset_dir)
    assert dataset_version(saved["train"]) == record.dataset_version
    positive_synonyms = {s for base in POS for s in SYNONYMS[base]}
    negative_synonyms = {s for base in NEG for s in SYNONYMS[base]}
    assert saved["adversarial"]
    for example in saved["adversarial"]:
        words = set(example.text.split())
        # the synonym that flipped the model carries the sentiment of the TRUE label
        expected = "positive" if words & positive_synonyms else "negative"
        assert not (words & positive_synonyms and words & negative_synonyms)
        assert example.label == expected
    asr_after = held_out_asr(result.model)
    assert asr_after < asr_before


def test_preference_pairs_from_attacks():
    pairs = [PreferencePair("q1", "good answer", "bad answer"), PreferencePair("q2", "a", "b")]
    from rlhf.engine.adversarial import AttackResult

    results = [
        AttackResult("bad answer", "bad answr", 0, 0, 1, True, "success", 1, 0.9),
        AttackResult("b", "b", 0, 0, 0, False, "failed"),
    ]
    (pair,) = adversarial_preference_pairs(results, pairs)
    assert pair == PreferencePair("q1", "good answer", "bad answr")


def test_random_swaps_use_only_label_preserving_variants():
    import random

    from rlhf.engine.adversarial.training import random_swaps

    # the swaps never query the model: only the attack's filtered variants are used
    swapper = WordSubstitutionAttack(lambda texts: None, synonym_source, CharNgramSimilarity())
    rng = random.Random(0)
    out = random_swaps(swapper, "the great movie was good", 1, 2, rng)
    words = out.split()
    assert out != "the great movie was good" and len(words) == 5
    assert words[1] in ["great", *SYNONYMS["great"]] and words[4] in ["good", *SYNONYMS["good"]]


def test_random_swaps_draw_from_the_first_choices_or_all():
    import random

    from rlhf.engine.adversarial.training import random_swaps

    def many(word):
        return [(f"{word}{c}", 0.9) for c in "abcfghjkmn"] if word == "movie" else []

    swapper = WordSubstitutionAttack(lambda texts: None, many, CharNgramSimilarity())
    rng = random.Random(0)
    first = {random_swaps(swapper, "movie", 1, 1, rng, choices=2) for _ in range(60)}
    every = {random_swaps(swapper, "movie", 1, 1, rng, choices=None) for _ in range(200)}
    assert first == {"moviea", "movieb"}
    assert every == {f"movie{c}" for c in "abcfghjkmn"}
