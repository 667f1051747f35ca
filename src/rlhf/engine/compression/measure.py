"""What a compressed model is worth, measured beside its source in the same run.

- `size_mb`: the weight files on disk;
- `compare_speed`: latency (one text per call) and throughput (a fixed batch, one call
  in flight) of several models, interleaved round by round so that a shared, noisy CPU
  slows every side alike; medians are reported;
- `peak_rss_mb`: the peak resident memory of a fresh process that loads a model and
  scores a batch (a process of its own, so one model's peak cannot hide another's).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def size_mb(model_dir: str | Path) -> float:
    """Megabytes of weight files in a saved model directory."""
    files = [p for p in Path(model_dir).iterdir() if p.suffix in WEIGHT_SUFFIXES]
    return sum(p.stat().st_size for p in files) / 2**20


def compare_speed(
    runners: dict[str, Callable[[list[str]], Any]],
    texts: Sequence[str],
    batch_size: int = 32,
    rounds: int = 3,
    batches_per_round: int = 2,
    latency_calls: int = 16,
) -> dict[str, dict[str, float]]:
    """Per runner: `throughput` (texts/s at `batch_size`, concurrency 1) and
    `latency_p50_ms` / `latency_p90_ms` (one text per call), measured interleaved."""
    texts = list(texts)
    if not texts:
        raise ValueError("speed measurement needs texts (got none)")
    batches = [
        [texts[(start + i) % len(texts)] for i in range(batch_size)]
        for start in range(0, batch_size * batches_per_round, batch_size)
    ]
    for run in runners.values():  # warm-up: first calls allocate and pick kernels
        run(batches[0][:2])
    rates: dict[str, list[float]] = {name: [] for name in runners}
    latencies: dict[str, list[float]] = {name: [] for name in runners}
    per_round = max(1, latency_calls // rounds)
    for r in range(rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            for batch in batches:
                run(batch)
            rates[name].append(batch_size * len(batches) / (time.perf_counter() - started))
            for i in range(per_round):
                text = texts[(r * per_round + i) % len(texts)]
                tick = time.perf_counter()
                run([text])
                latencies[name].append(1000 * (time.perf_counter() - tick))
    out = {}
    for name in runners:
        ordered = sorted(latencies[name])
        out[name] = {
            "throughput": statistics.median(rates[name]),
            "latency_p50_ms": statistics.median(ordered),
            "latency_p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        }
    return out


def _peak_in_this_process(kind: str, model_dir: str, texts: list[str]) -> float:
    import torch

    if kind == "classifier":
        from rlhf.engine.compression.classifiers import load_classifier

        load_classifier(model_dir).logits(texts)
    else:
        from transformers import AutoTokenizer

        from rlhf.engine.compression.policy import load_policy

        model = load_policy(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        with torch.no_grad():
            model(**tokenizer(texts[:1], return_tensors="pt"))
    # VmHWM, not getrusage: Linux carries ru_maxrss across exec, so a child of a big
    # process would report its parent's peak.
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb(kind: str, model_dir: str | Path, texts: Sequence[str], threads: int = 1) -> float:
    """Peak RSS (MB) of a fresh process that loads `model_dir` and runs `texts` once.

    Includes the interpreter, torch and transformers (about the same for every model),
    so compare models by the difference."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads))}
    done = subprocess.run(
        [sys.executable, "-m", "rlhf.engine.compression.measure", kind, str(model_dir)],
        input=json.dumps(list(texts)),
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"peak memory of {model_dir}: {done.stderr.strip()[-500:]}")
    return float(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # the child of peak_rss_mb: texts as JSON on stdin
    import json
    import sys

    print(_peak_in_this_process(sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())))
