"""Robustness bar: attack a sentiment classifier, harden it by adversarial training, attack again.

    python bench/robustness.py --json [--model DIR] [--n 500]
    python bench/robustness.py --json --lang zh [--model DIR]

English: the SST-2 MiniLM classifier (--model; default: built once with the classifier
benchmark's recipe and cached, see bench/prepared.py), attacked on the first --n SST-2
dev sentences by the word-substitution attack (<= 3 words, MiniLM similarity >= 0.80,
substitutes from the model's own input embeddings).
Then adversarial training on SST-2 TRAIN sentences, either
  --scheme online (default): every batch gets, per text, the worst of k label-preserving
    variants from the attack's own substitution sets (first-order ranked, scored by the
    current model, similarity-checked), trained with the clean text, a TRADES-style KL
    term and replayed clean texts (rlhf.engine.adversarial.online), or
  --scheme offline: rounds of attack the current model -> add the successful
    adversarial texts with their TRUE labels -> mix replayed clean data -> fine-tune;
the hardened model is attacked afresh (a new attack on it) on the same dev sentences.
Bar: asr_before >= 0.40, asr_after <= asr_before / 2, clean accuracy (full dev) down by
<= 1.5 points.

Chinese (--lang zh): ChnSentiCorp; the model (--model, or a small BERT with a
tokenizer trained on ChnSentiCorp train, fine-tuned here) is attacked by the
character attack (<= 3 characters: same-pinyin homophones and look-alike characters,
char-bigram similarity >= 0.80), then hardened the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]

# Online hardening defaults per language, the measured configurations of
# docs/adversarial.md ("Measured"); any --online-* flag given overrides its entry.
ONLINE_DEFAULTS: dict[str, dict[str, float]] = {
    # SST-2: 2 passes over 10000 train sentences, TRADES KL weight 2.3 (~31 min of
    # training; ASR 0.554 -> 0.257, clean -0.57 points, 44.9 min in all. Weight 2 missed
    # the halving by one flip (0.279), weight 3 cost 2.64 clean points)
    "en": {
        "online_train": 10000,
        "online_epochs": 2.0,
        "online_kl": 2.3,
        "online_minutes": 36.0,
        "online_temperature": 1.0,
    },
    # ChnSentiCorp (2-layer BERT, long texts): 2 passes over 6000 train texts, KL weight 2
    "zh": {
        "online_train": 6000,
        "online_epochs": 2.0,
        "online_kl": 2.0,
        "online_minutes": 10.0,
        "online_temperature": 1.0,
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--lang", choices=("en", "zh"), default="en")
    p.add_argument("--model", default=None, help="classifier directory (trained if absent)")
    p.add_argument(
        "--data-dir", type=Path, default=None, help="default RLHF_DATA_DIR or ../shared/data"
    )
    p.add_argument("--n", type=int, default=500, help="dev examples attacked")
    p.add_argument("--max-edits", type=int, default=3)
    p.add_argument("--min-similarity", type=float, default=0.80)
    p.add_argument("--beam-width", type=int, default=1, help="attack search beam (1 = greedy)")
    p.add_argument("--train-beam-width", type=int, default=None,
                   help="beam of the attack on train texts (default --beam-width)")  # fmt: skip
    p.add_argument("--scheme", choices=("online", "offline"), default="online",
                   help="online (measured better, en and zh): worst-of-k label-preserving "
                   "variants on every batch; offline: rounds of attack -> add flips -> "
                   "fine-tune")  # fmt: skip
    p.add_argument("--online-train", type=int, default=None,
                   help="online: train texts fine-tuned on (default per language: "
                   "ONLINE_DEFAULTS)")  # fmt: skip
    p.add_argument("--online-epochs", type=float, default=None,
                   help="online: passes (default per language)")  # fmt: skip
    p.add_argument("--online-learning-rate", type=float, default=1e-4, help="online: learning rate")
    p.add_argument("--online-k", type=int, default=8, help="online: variants per example")
    p.add_argument("--online-random", type=int, default=2,
                   help="online: of the k variants, uniformly random ones")  # fmt: skip
    p.add_argument("--online-temperature", type=float, default=None,
                   help="online: softmax temperature over gains (per language)")  # fmt: skip
    p.add_argument("--online-top", type=int, default=8,
                   help="online: sampled variants pick among this many best positions")  # fmt: skip
    p.add_argument("--online-adv-weight", type=float, default=1.0,
                   help="online: weight of the worst variant's cross-entropy")  # fmt: skip
    p.add_argument("--online-kl", type=float, default=None,
                   help="online: weight of KL(clean || worst variant) (per language)")  # fmt: skip
    p.add_argument("--online-kl-detach", action="store_true",
                   help="online: the KL's clean side is a fixed target")  # fmt: skip
    p.add_argument("--online-replay", type=int, default=64,
                   help="online: extra clean SST-2/ChnSentiCorp train texts per batch")  # fmt: skip
    p.add_argument("--online-minutes", type=float, default=None,
                   help="online: fine-tuning wall-clock budget (per language)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=1, help="adversarial training rounds")
    p.add_argument("--attack-train", type=int, default=1000, help="train texts attacked per round")
    p.add_argument(
        "--clean-examples", type=int, default=8000, help="clean texts replayed per round"
    )
    p.add_argument("--adversarial-repeats", type=int, default=3)
    p.add_argument("--augment-examples", type=int, default=12000,
                   help="train texts given random label-preserving swaps per round")  # fmt: skip
    p.add_argument("--augment-edits", type=int, default=3)
    p.add_argument("--augment-choices", type=int, default=0,
                   help="a random swap draws from this many best variants (0 = all)")  # fmt: skip
    p.add_argument("--freeze-embeddings", choices=("yes", "no"), default="yes",
                   help="keep the word embeddings fixed while hardening (English; the "
                   "SST-2 classifier was trained that way)")  # fmt: skip
    p.add_argument("--epochs", type=float, default=1.0, help="fine-tuning passes per round")
    p.add_argument("--learning-rate", type=float, default=2e-5, help="fine-tuning learning rate")
    p.add_argument("--train-minutes", type=float, default=8.0, help="budget for a missing model")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy box)"
    )
    p.add_argument("--out", default=None, help="save datasets and the hardened model here")
    p.add_argument("--examples", type=int, default=5, help="adversarial examples in the output")
    p.add_argument("--attack-only", action="store_true",
                   help="probe: attack the model once, no adversarial training")  # fmt: skip
    args = p.parse_args(argv)
    for key, value in ONLINE_DEFAULTS[args.lang].items():
        if getattr(args, key) is None:
            setattr(args, key, type(value)(value))
    args.online_train = int(args.online_train)
    return args


def data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return args.data_dir
    return Path(os.environ.get("RLHF_DATA_DIR", REPO.parent / "shared" / "data"))


def log(msg: str) -> None:
    print(f"[robustness {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def accuracy(clf, records, labels) -> float:
    import numpy as np

    probs = clf([r.text for r in records])
    gold = np.array([labels.index(r.label) for r in records])
    return float((probs.argmax(axis=1) == gold).mean())


def fallback_dir(args) -> Path:
    """Where a quickly trained stand-in model goes: never over the --model path."""
    return Path(args.out or f"/tmp/rlhf-robustness-{args.lang}") / "base-model"


def load_or_train_en(args, train):
    from prepared import model_or_prepared

    from rlhf.engine.classifier import ClassifierTrainConfig, load_classifier, train_classifier

    path = Path(model_or_prepared(args.model, "classifier-sst2", data_dir(args)))
    if (path / "config.json").is_file():
        return load_classifier(path), str(path)
    log(f"{path} not found: fine-tuning MiniLM on SST-2 for {args.train_minutes} min")
    config = ClassifierTrainConfig(time_limit_s=60 * args.train_minutes, epochs=0.5, autocast=True)
    classifier = train_classifier(config, train).classifier
    return classifier, str(classifier.save(fallback_dir(args)))


def load_or_train_zh(args, train):
    from prepared import model_or_prepared

    from rlhf.engine.classifier import (
        ClassifierTrainConfig,
        load_classifier,
        tiny_classifier,
        train_classifier,
    )

    path = Path(model_or_prepared(args.model, "classifier-chnsenticorp", data_dir(args)))
    if (path / "config.json").is_file():
        return load_classifier(path), str(path)
    log(f"{path} not found: training a small BERT on ChnSentiCorp for {args.train_minutes} min")
    labels = ("negative", "positive")
    model = tiny_classifier(labels, [r.text for r in train], vocab_size=6000, hidden_size=128,
                            num_layers=2, num_heads=4, max_length=160)  # fmt: skip
    config = ClassifierTrainConfig(backbone="tiny", learning_rate=1e-3, epochs=6,
                                   batch_size=32, max_length=160,
                                   time_limit_s=60 * args.train_minutes)  # fmt: skip
    classifier = train_classifier(config, train, classifier=model).classifier
    return classifier, str(classifier.save(fallback_dir(args)))


def harden_offline(args, classifier, pool, make_attack, max_len, out_dir):
    """Rounds of attack -> add the flips (true labels) -> fine-tune (training.py)."""
    from rlhf.engine.adversarial import (
        AdversarialTrainingConfig,
        adversarial_training,
        finetune_text_classifier,
    )

    train_config = AdversarialTrainingConfig(
        rounds=args.rounds,
        attack_examples=args.attack_train,
        clean_examples=args.clean_examples,
        adversarial_repeats=args.adversarial_repeats,
        augment_examples=args.augment_examples,
        augment_edits=args.augment_edits,
        augment_choices=args.augment_choices or None,
        labels=("negative", "positive"),
        seed=0,
        output_dir=str(out_dir / "datasets") if out_dir else None,
    )
    retrain = finetune_text_classifier(
        backbone="minilm" if args.lang == "en" else "tiny",
        learning_rate=args.learning_rate * (1 if args.lang == "en" else 20),
        epochs=args.epochs,
        batch_size=32,
        max_length=max_len,
        autocast=args.lang == "en",
        warmup_ratio=0.1,
        freeze_embeddings=args.lang == "en" and args.freeze_embeddings == "yes",
    )
    log(f"adversarial training: {args.rounds} round(s) x {args.attack_train} attacked train texts")
    hardened = adversarial_training(classifier, pool, make_attack, retrain, train_config)
    rounds = [
        {
            "round": r.round,
            "train_asr": r.attack.attack_success_rate,
            "new_adversarial": r.new_adversarial,
            "train_examples": r.train_examples,
            "dataset_version": r.dataset_version,
            "minutes": r.minutes,
        }
        for r in hardened.rounds
    ]
    return hardened.model, {"scheme": "offline", "adversarial_rounds": rounds}


def harden_online(args, classifier, pool, replay, make_attack, max_len):
    """Worst-of-k label-preserving variants on every batch (online.py)."""
    from rlhf.engine.adversarial import OnlineAdversarialConfig, online_adversarial_training

    rng = random.Random(0)
    train = rng.sample(pool, min(args.online_train, len(pool)))
    config = OnlineAdversarialConfig(
        variants_per_example=args.online_k,
        random_variants=args.online_random,
        temperature=args.online_temperature,
        top_positions=args.online_top,
        adv_weight=args.online_adv_weight,
        kl_weight=args.online_kl,
        kl_detach_clean=args.online_kl_detach,
        replay_per_batch=args.online_replay,
        # tiny BERT: higher
        learning_rate=args.online_learning_rate * (1 if args.lang == "en" else 5),
        epochs=args.online_epochs,
        batch_size=32,
        max_length=max_len,
        warmup_ratio=0.06,
        freeze_embeddings=args.lang == "en" and args.freeze_embeddings == "yes",
        autocast=args.lang == "en",
        time_limit_s=None if args.online_minutes is None else 60 * args.online_minutes,
        seed=0,
    )
    log(f"online adversarial training: {len(train)} train texts x {args.online_epochs} epochs, "
        f"worst of {args.online_k} variants per example")  # fmt: skip
    # the attack only supplies candidate sets and the similarity check: no model queries
    result = online_adversarial_training(
        classifier, train, make_attack(classifier), config, replay=replay
    )
    log(f"online adversarial training done: {result.stats}")
    info = {
        "scheme": "online",
        "online": {
            "train_texts": len(train),
            "epochs": args.online_epochs,
            "variants_per_example": args.online_k,
            "random_variants": args.online_random,
            "temperature": args.online_temperature,
            "top_positions": args.online_top,
            "adv_weight": args.online_adv_weight,
            "kl_weight": args.online_kl,
            "kl_detach_clean": args.online_kl_detach,
            "replay_per_batch": args.online_replay,
            "learning_rate": config.learning_rate,
            **result.stats,
        },
    }
    return result.classifier, info


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from rlhf.engine.adversarial import (
        CharAttack,
        CharAttackConfig,
        CharNgramSimilarity,
        EmbeddingNeighbours,
        HFClassifier,
        MiniLMSimilarity,
        WordAttackConfig,
        WordSubstitutionAttack,
        robustness_report,
    )
    from rlhf.engine.data import read_chnsenticorp, read_sst2

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    root = data_dir(args)
    labels = ["negative", "positive"]
    if args.lang == "en":
        train = read_sst2(root / "sst2" / "train.tsv")
        dev = read_sst2(root / "sst2" / "dev.tsv")
        classifier, model_ref = load_or_train_en(args, train)
        similarity = MiniLMSimilarity()
        # the attack pool: full sentences of SST-2 train (it also holds short phrases)
        pool = [r for r in train if len(r.text.split()) >= 8]
    else:
        train = read_chnsenticorp(root / "chnsenticorp" / "train.tsv")
        dev = read_chnsenticorp(root / "chnsenticorp" / "dev.tsv")
        classifier, model_ref = load_or_train_zh(args, train)
        similarity = CharNgramSimilarity()
        pool = list(train)
    classifier.autocast = args.lang == "en"
    max_len = classifier.max_length
    tok = classifier.tokenizer
    fits = [
        len(ids) <= max_len for ids in tok([r.text for r in dev], truncation=False)["input_ids"]
    ]
    dev_fit = [r for r, ok in zip(dev, fits, strict=True) if ok]
    attacked = dev_fit[: args.n]
    log(
        f"model {model_ref}; attacking {len(attacked)} dev texts "
        f"({len(dev) - len(dev_fit)} over the model's length skipped)"
    )
    pool_fits = [
        len(ids) <= max_len for ids in tok([r.text for r in pool], truncation=False)["input_ids"]
    ]
    pool = [r for r, ok in zip(pool, pool_fits, strict=True) if ok]

    def make_attack(model, beam_width=None):
        clf = HFClassifier.from_text_classifier(model, batch_size=64)
        beam = beam_width or args.train_beam_width or args.beam_width
        if args.lang == "en":
            config = WordAttackConfig(max_edits=args.max_edits, min_similarity=args.min_similarity,
                                      beam_width=beam)  # fmt: skip
            candidates = EmbeddingNeighbours.from_model(
                clf.model,
                clf.tokenizer,
                top_k=config.candidates_per_word,
                min_cosine=config.min_cosine,
            )
            return WordSubstitutionAttack(clf, candidates, similarity, config)
        config = CharAttackConfig(max_edits=args.max_edits, min_similarity=args.min_similarity,
                                  language="zh", beam_width=beam)  # fmt: skip
        return CharAttack(clf, similarity, config)

    def attack_dev(model, tag):
        t0 = time.monotonic()
        done = []

        def progress(i, r):
            done.append(r.success)
            if (i + 1) % 50 == 0:
                log(f"{tag}: {i + 1}/{len(attacked)} attacked, {sum(done)} flips, "
                    f"{(time.monotonic() - t0) / (i + 1):.2f} s/example")  # fmt: skip

        results = make_attack(model, args.beam_width).attack_many(
            [r.text for r in attacked], [labels.index(r.label) for r in attacked], progress
        )
        return results, robustness_report(results)

    clean_before = accuracy(HFClassifier.from_text_classifier(classifier), dev, labels)
    results_before, before = attack_dev(classifier, "before")
    log(f"before: clean {clean_before:.4f}, ASR {before.attack_success_rate:.3f} {before}")
    if args.attack_only:
        successes = [r for r in results_before if r.success]
        return {
            "lang": args.lang,
            "model": model_ref,
            "examples_attacked": len(attacked),
            "clean_accuracy_before": clean_before,
            "asr_before": before.attack_success_rate,
            "max_edits": max((r.edits for r in successes), default=0),
            "min_similarity": min((r.similarity for r in successes), default=1.0),
            "mean_queries": before.mean_queries,
            "examples": [
                {"original": r.original, "perturbed": r.perturbed, "changes": r.changes}
                for r in successes[: args.examples]
            ],
            "minutes": (time.monotonic() - started) / 60,
        }

    out_dir = Path(args.out) if args.out else None
    if args.scheme == "online":
        replay = [r for r in train if r.text.strip()]
        model, hardening = harden_online(args, classifier, pool, replay, make_attack, max_len)
    else:
        model, hardening = harden_offline(args, classifier, pool, make_attack, max_len, out_dir)
    model.autocast = args.lang == "en"
    if out_dir:
        model.save(out_dir / "model")

    clean_after = accuracy(HFClassifier.from_text_classifier(model), dev, labels)

    results_after, after = attack_dev(model, "after")
    log(f"after: clean {clean_after:.4f}, ASR {after.attack_success_rate:.3f} {after}")
    if out_dir:
        # every attack result, for analysis (which texts flip, by how much, with what)
        out_dir.mkdir(parents=True, exist_ok=True)
        for tag, results in (("before", results_before), ("after", results_after)):
            with open(out_dir / f"attacks-{tag}.jsonl", "w", encoding="utf-8") as f:
                for r in results:
                    f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")

    successes = [r for r in results_before if r.success]
    random.Random(0).shuffle(successes)
    all_success = successes + [r for r in results_after if r.success]
    return {
        "lang": args.lang,
        "model": model_ref,
        "examples_attacked": len(attacked),
        "beam_width": args.beam_width,
        "clean_accuracy_before": clean_before,
        "asr_before": before.attack_success_rate,
        "robust_accuracy_before": before.robust_accuracy,
        "clean_accuracy_after": clean_after,
        "asr_after": after.attack_success_rate,
        "robust_accuracy_after": after.robust_accuracy,
        "clean_accuracy_drop_points": 100 * (clean_before - clean_after),
        "asr_ratio": after.attack_success_rate / before.attack_success_rate
        if before.attack_success_rate
        else None,
        "max_edits": max((r.edits for r in all_success), default=0),
        "mean_edits_before": before.mean_edits,
        "min_similarity": min((r.similarity for r in all_success), default=1.0),
        "mean_similarity_before": before.mean_similarity,
        "mean_queries_before": before.mean_queries,
        "mean_queries_after": after.mean_queries,
        "clean_accuracy_scope": f"all {len(dev)} dev texts (truncated to the model's length)",
        **hardening,
        "examples": [
            {
                "original": r.original,
                "perturbed": r.perturbed,
                "label": labels[r.label],
                "changes": r.changes,
                "similarity": round(r.similarity, 4),
            }
            for r in successes[: args.examples]
        ],  # fmt: skip
        "minutes": (time.monotonic() - started) / 60,
    }


if __name__ == "__main__":
    result = main()
    if "--json" in sys.argv:
        print(json.dumps(result, ensure_ascii=False, default=str))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value}")
