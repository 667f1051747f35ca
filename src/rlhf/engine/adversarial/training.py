"""Adversarial training: attack -> add the flips with their TRUE labels -> retrain -> repeat.

One round:

1. attack a fresh sample of the training pool with an attack built on the CURRENT model
   (its own embedding neighbourhood, so each round sees the new model's weaknesses);
2. every successful adversarial text joins the adversarial set with the label of the
   text it came from (never the model's wrong prediction);
3. the round's training set = all adversarial examples so far + a fresh sample of clean
   examples (replay keeps clean accuracy), saved as a versioned dataset (content hash);
4. fine-tune the current model on it (not from scratch).

After the last round the caller attacks the new model afresh (held-out data) to measure
the hardening. For pairwise reward models `adversarial_preference_pairs` turns successful
attacks on rejected responses into new (chosen, rejected=perturbed) pairs.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhf.engine.adversarial.base import AdversarialInputError, AttackResult
from rlhf.engine.adversarial.metrics import RobustnessReport, robustness_report
from rlhf.engine.adversarial.search import GreedyAttack
from rlhf.engine.data import LabeledText, PreferencePair, dataset_version, save_dataset

log = logging.getLogger(__name__)

#: Builds an attack against the given (current) model.
AttackFactory = Callable[[Any], GreedyAttack]
#: Fine-tunes the given model on labelled texts and returns the new model.
Retrain = Callable[[Any, list[LabeledText]], Any]


@dataclass
class AdversarialTrainingConfig:
    """How many rounds, how much is attacked and how much clean data is replayed."""

    rounds: int = 1  # attack -> retrain cycles
    attack_examples: int = 1000  # training-pool texts attacked per round
    clean_examples: int = 4000  # clean texts mixed into each round's training set
    adversarial_repeats: int = 1  # times each adversarial text appears in a round's set
    augment_examples: int = 0  # pool texts given random label-preserving swaps per round
    augment_edits: int = 2  # units swapped per augmented text (same filters as the attack)
    augment_choices: int | None = 10  # a swap draws from this many best variants (None = all)
    labels: tuple[str, ...] = ("negative", "positive")  # class id -> label name
    seed: int = 0  # which texts are attacked / replayed
    output_dir: str | None = None  # each round's dataset goes to output_dir/round-<k>/

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise AdversarialInputError(f"rounds must be >= 1, got {self.rounds}")
        if self.attack_examples < 1:
            raise AdversarialInputError("attack_examples must be >= 1")
        if self.clean_examples < 0 or self.adversarial_repeats < 1:
            raise AdversarialInputError("clean_examples >= 0 and adversarial_repeats >= 1")


@dataclass
class RoundRecord:
    """What one round did: attack metrics on the training sample and the dataset made."""

    round: int
    attack: RobustnessReport
    new_adversarial: int
    adversarial_total: int
    train_examples: int
    dataset_version: str
    dataset_dir: str | None
    minutes: float


@dataclass
class AdversarialTrainingResult:
    model: Any
    rounds: list[RoundRecord] = field(default_factory=list)
    adversarial: list[LabeledText] = field(default_factory=list)

    def summary(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rounds]


def adversarial_examples(
    results: Sequence[AttackResult], labels: Sequence[str]
) -> list[LabeledText]:
    """Successful attacks as labelled texts carrying the ORIGINAL (true) label."""
    return [LabeledText(r.perturbed, labels[r.label]) for r in results if r.success]


def adversarial_preference_pairs(
    results: Sequence[AttackResult], pairs: Sequence[PreferencePair]
) -> list[PreferencePair]:
    """For pairwise RMs: `results[i]` attacked `pairs[i].rejected` (true label 0 = bad).

    A success means the RM now rates the perturbed rejected response as good; it becomes
    a new rejected response against the same chosen one.
    """
    if len(results) != len(pairs):
        raise AdversarialInputError(f"{len(results)} attack results for {len(pairs)} pairs")
    return [
        PreferencePair(pair.prompt, pair.chosen, r.perturbed)
        for r, pair in zip(results, pairs, strict=True)
        if r.success
    ]


def random_swaps(
    attack: GreedyAttack,
    text: str,
    label: int,
    edits: int,
    rng: random.Random,
    choices: int | None = 10,
) -> str:
    """`edits` random label-preserving substitutions, drawn from the attack's own variants.

    No model query: this teaches invariance to the whole substitution neighbourhood, not
    only to the swaps the greedy search happened to find.
    """
    units = attack.segment(text)
    positions = [i for i, unit in enumerate(units) if attack.attackable(unit)]
    rng.shuffle(positions)
    changed = 0
    for pos in positions:
        if changed >= edits:
            break
        options = attack.variants(units[pos], label)
        if options:
            units[pos] = rng.choice(options[:choices] if choices else options)
            changed += 1
    return attack.join(units)


def adversarial_training(
    model: Any,
    pool: Sequence[LabeledText],
    make_attack: AttackFactory,
    retrain: Retrain,
    config: AdversarialTrainingConfig | None = None,
) -> AdversarialTrainingResult:
    """Run `config.rounds` of attack -> augment -> fine-tune, starting from `model`."""
    config = config or AdversarialTrainingConfig()
    if not pool:
        raise AdversarialInputError("the training pool is empty")
    label_ids = {name: i for i, name in enumerate(config.labels)}
    for i, record in enumerate(pool):
        if record.label not in label_ids:
            raise AdversarialInputError(
                f"pool[{i}] has label {record.label!r}, not one of {list(config.labels)}"
            )
    rng = random.Random(config.seed)
    order = list(range(len(pool)))
    rng.shuffle(order)
    cursor = 0
    result = AdversarialTrainingResult(model)
    for k in range(1, config.rounds + 1):
        started = time.monotonic()
        # 1. attack a fresh sample with an attack built on the current model
        take = order[cursor : cursor + config.attack_examples]
        cursor += len(take)
        if not take:
            raise AdversarialInputError("the training pool is exhausted; lower attack_examples")
        attack = make_attack(result.model)
        results = attack.attack_many(
            [pool[i].text for i in take], [label_ids[pool[i].label] for i in take]
        )
        report = robustness_report(results)
        # 2. successful flips keep their true labels
        new = adversarial_examples(results, config.labels)
        result.adversarial.extend(new)
        # 3. mix with replayed clean data (and optional random swaps); version the dataset
        replay = rng.sample(range(len(pool)), min(config.clean_examples, len(pool)))
        clean = [pool[i] for i in replay]
        augmented = []
        if config.augment_examples:
            picks = rng.sample(range(len(pool)), min(config.augment_examples, len(pool)))
            for i in picks:
                text = random_swaps(attack, pool[i].text, label_ids[pool[i].label],
                                    config.augment_edits, rng, config.augment_choices)  # fmt: skip
                if text != pool[i].text:
                    augmented.append(LabeledText(text, pool[i].label))
        train = clean + augmented + result.adversarial * config.adversarial_repeats
        rng.shuffle(train)
        version = dataset_version(train)
        directory = None
        if config.output_dir:
            directory = str(Path(config.output_dir) / f"round-{k}")
            splits = {"train": train}
            if result.adversarial:
                splits["adversarial"] = list(result.adversarial)
            save_dataset(
                directory,
                splits,
                name=f"adversarial-round-{k}",
                metadata={"round": k, "attack": report.to_dict(), "seed": config.seed},
            )
        # 4. fine-tune the current model on it
        result.model = retrain(result.model, train)
        record = RoundRecord(
            round=k,
            attack=report,
            new_adversarial=len(new),
            adversarial_total=len(result.adversarial),
            train_examples=len(train),
            dataset_version=version,
            dataset_dir=directory,
            minutes=(time.monotonic() - started) / 60,
        )
        log.info(
            "adversarial round %d: ASR %.3f on %d, +%d adversarial, dataset %s",
            k,
            report.attack_success_rate,
            report.examples,
            len(new),
            version[:19],
        )
        result.rounds.append(record)
    return result


def finetune_text_classifier(**train_fields: Any) -> Retrain:
    """A `Retrain` for rlhf.engine.classifier.TextClassifier: continue fine-tuning it.

    Keyword arguments are `ClassifierTrainConfig` fields (learning_rate, epochs, batch_size, ...).
    """
    from rlhf.engine.classifier import ClassifierTrainConfig, train_classifier

    def retrain(model: Any, train: list[LabeledText]) -> Any:
        config = ClassifierTrainConfig(labels=tuple(model.labels), **train_fields)
        return train_classifier(config, train, classifier=model).classifier

    return retrain
