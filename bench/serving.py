"""Serving benchmark: Triton through the inference gRPC API against a plain-transformers
baseline that serves the same model one request at a time.

All sides get the same load in the same run: N client threads, each sending its calls
one after another. The baseline is a single worker behind a lock (what serving a model
with transformers and no batching amounts to), called in-process, so it pays no gRPC
cost at all. Latencies include queueing. Classification runs at `--clients`;
generation runs at each `--generate-concurrency` against two Triton services started
one after the other: dynamic batching (a batch runs to its longest row) and continuous
batching (requests join the running batch between decode steps).

    python bench/serving.py --json            # MiniLM classifier + SmolLM2-135M policy
    python bench/serving.py --quick --json    # tiny random models (smoke test, seconds)

Prints one JSON object: {"classify": {triton_rps, baseline_rps, ratio, triton_p99_ms,
baseline_p99_ms, ...}, "generate": {"c16": {"baseline": {rps, p50_ms, p99_ms},
"dynamic": {rps, ratio, p50_ms, p99_ms, mean_batch}, "continuous": {...}}, "c64": ...},
"config": {...}}; `ratio` is throughput over the baseline's at the same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SENTENCES = [
    "a gripping, beautifully acted film that stays with you",
    "the plot is thin and the jokes fall flat",
    "one of the most charming movies of the year",
    "i walked out halfway through, it was that dull",
    "an uneven but often funny comedy",
    "the soundtrack alone is worth the ticket",
    "a tedious mess with no sense of pacing",
    "warm, clever and surprisingly moving",
]
PROMPTS = [
    "Write one sentence about the sea.",
    "Give me a tip for learning Python.",
    "What is a good name for a cat?",
    "Describe a sunny morning.",
]


# ------------------------------------------------------------------------------ models
def classifier_dir(arg: str, workdir: Path) -> Path:
    """The classifier to serve: a directory, or "minilm" = MiniLM with a fresh 2-label head."""
    if arg != "minilm":
        return Path(arg)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.engine.paths import minilm_dir

    target = workdir / "minilm-classifier"
    model = AutoModelForSequenceClassification.from_pretrained(
        str(minilm_dir()),
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(target)
    return target


def policy_dir(arg: str) -> Path:
    from rlhf.engine.models import resolve_model_dir

    return resolve_model_dir(arg)


def render_prompts(policy: Path) -> list[str]:
    """Prompts in the policy's chat layout, so an instruct model answers instead of
    stopping at once; both sides get the same strings through plain generation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(policy))
    if not getattr(tokenizer, "chat_template", None):
        return list(PROMPTS)
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in PROMPTS
    ]


def native_bf16_dtype() -> str:
    """bfloat16 where matrix units take it natively, else float32 (emulated bf16 on an
    older CPU is slower than float32)."""
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32"


# --------------------------------------------------------------------------- load test
def percentile_ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(np.array(latencies) * 1000.0, q))


def run_load(call: Callable[[int, int], None], clients: int, requests: int) -> dict[str, float]:
    """`clients` threads, each making `requests` sequential calls; rps and latency."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(requests):
            started = time.perf_counter()
            call(c, r)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, c) for c in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    return {
        "rps": clients * requests / wall,
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "seconds": wall,
    }


# ----------------------------------------------------------------------------- triton
def _serve(overrides: dict, conn) -> None:  # noqa: ANN001 - multiprocessing pipe
    """Child process: the inference service as deployed (its own process, GIL and event
    loop), serving until SIGTERM; sends its port back once it is listening."""
    from rlhf.services.inference.server import attach, build_inference_service
    from rlhf.services.inference.settings import InferenceSettings

    from rlhf.runtime.grpc import GrpcServer
    from rlhf.runtime.settings import GrpcSettings, load_settings

    app = build_inference_service(load_settings(InferenceSettings, **overrides))

    async def serve() -> None:
        server = GrpcServer(GrpcSettings(port=0, shutdown_grace_s=1.0), "inference")
        await attach(server, app)
        conn.send((await server.start(), app.engine.client.url))
        await server.serve_until_signal()

    asyncio.run(serve())


def generate_requests(args: argparse.Namespace, clients: int) -> int:
    """Calls per client at a concurrency: `--generate-total` in all, at least 2 each."""
    return max(2, -(-args.generate_total // clients))


def bench_triton(
    args: argparse.Namespace,
    classifier: Path,
    policy: Path,
    workdir: Path,
    tasks: list[str],
    continuous: bool,
) -> dict:
    """One inference service (its own Triton) with the policy's batching chosen by
    `continuous`; classification at `--clients`, generation at each concurrency."""
    import multiprocessing

    import grpc

    from rlhf.v1 import inference_pb2, inference_pb2_grpc

    overrides = dict(
        artifact_dir=str(workdir / ("artifacts-continuous" if continuous else "artifacts")),
        bus="inprocess",
        serving={
            "dtype": args.dtype,
            "torch_threads": args.torch_threads,
            "subscribe_promotions": False,
            "classifier_batching": {
                "max_batch_size": 64,
                "preferred_batch_sizes": [16, 32],
                "max_queue_delay_us": args.classify_delay_us,
            },
            "policy_batching": {
                "max_batch_size": 32,
                "preferred_batch_sizes": [8, 16],
                "max_queue_delay_us": args.generate_delay_us,
                "continuous": continuous,
            },
            "models": [
                {"name": "bench-classifier", "version": "classifier-v1", "kind": "classifier",
                 "model_dir": str(classifier)},
                {"name": "bench-policy", "version": "policy-v1", "kind": "policy",
                 "model_dir": str(policy)},
            ],
        },
    )  # fmt: skip
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    service = context.Process(target=_serve, args=(overrides, child))
    service.start()
    if not parent.poll(600):
        service.kill()
        raise RuntimeError("inference service did not start within 600 s")
    port, triton_url = parent.recv()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    sampling = inference_pb2.SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    versions: set[str] = set()

    def classify(c: int, r: int) -> None:
        text = SENTENCES[(c + r) % len(SENTENCES)]
        reply = stub.Classify(inference_pb2.InferenceClassifyRequest(texts=[text]), timeout=120)
        versions.add(reply.model_version)

    def generate(c: int, r: int) -> None:
        prompt = args.prompts[(c + r) % len(args.prompts)]
        request = inference_pb2.GenerateRequest(prompts=[prompt], sampling=sampling)
        versions.add(stub.Generate(request, timeout=600).model_version)

    calls = {"classify": classify, "generate": generate}
    loads = {
        "classify": [(args.clients, args.classify_requests)],
        "generate": [(c, generate_requests(args, c)) for c in args.concurrency],
    }
    try:
        results: dict = {}
        for task in tasks:
            run_load(calls[task], 2, 2)  # warm-up: first calls compile kernels, open streams
            for clients, requests in loads[task]:
                before = triton_counts(triton_url)
                result = run_load(calls[task], clients, requests)
                after = triton_counts(triton_url)
                inferences = sum(after[m][0] - before[m][0] for m in after)
                executions = sum(after[m][1] - before[m][1] for m in after)
                result["mean_batch"] = inferences / max(executions, 1)
                results.setdefault(task, {})[clients] = result
    finally:
        channel.close()
        service.terminate()  # SIGTERM: graceful drain, then Triton stops
        service.join(120)
    results["versions"] = sorted(versions)
    return results


def triton_counts(url: str) -> dict[str, tuple[int, int]]:
    """(rows inferred, model executions) per Triton model, from Triton's own statistics:
    their ratio over a load phase is the mean batch the dynamic batcher formed."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(as_json=True).get("model_stats", [])
    finally:
        client.close()
    return {
        f"{m['name']}/{m.get('version', '')}": (
            int(m.get("inference_count", 0)),
            int(m.get("execution_count", 0)),
        )
        for m in stats
    }


# --------------------------------------------------------------------------- baseline
def bench_baseline(args: argparse.Namespace, classifier: Path, policy: Path) -> dict:
    """The same models with plain transformers, one request at a time (a lock)."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    torch.set_num_threads(args.torch_threads)  # same as each Triton model process
    dtype = getattr(torch, args.dtype)
    lock = threading.Lock()
    results: dict[str, dict] = {}

    tokenizer = AutoTokenizer.from_pretrained(str(classifier))
    model = AutoModelForSequenceClassification.from_pretrained(str(classifier), dtype=dtype).eval()

    def classify(c: int, r: int) -> None:
        text = SENTENCES[(c + r) % len(SENTENCES)]
        with lock, torch.inference_mode():
            enc = tokenizer([text], truncation=True, max_length=256, return_tensors="pt")
            model(**enc).logits.softmax(-1)

    if "classify" in args.tasks:
        run_load(classify, 1, 4)
        results["classify"] = {
            args.clients: run_load(classify, args.clients, args.classify_requests)
        }
    if "generate" not in args.tasks:
        return results

    tokenizer = AutoTokenizer.from_pretrained(str(policy))
    lm = AutoModelForCausalLM.from_pretrained(str(policy), dtype=dtype).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def generate(c: int, r: int) -> None:
        prompt = args.prompts[(c + r) % len(args.prompts)]
        with lock, torch.inference_mode():
            enc = tokenizer([prompt], return_tensors="pt", add_special_tokens=True)
            lm.generate(
                **enc, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=pad
            )

    run_load(generate, 1, 1)
    results["generate"] = {
        c: run_load(generate, c, generate_requests(args, c)) for c in args.concurrency
    }
    return results


# -------------------------------------------------------------------------------- main
def summary(triton: dict, baseline: dict) -> dict:
    return {
        "triton_rps": round(triton["rps"], 2),
        "baseline_rps": round(baseline["rps"], 2),
        "ratio": round(triton["rps"] / baseline["rps"], 2),
        "triton_p99_ms": round(triton["p99_ms"], 1),
        "baseline_p99_ms": round(baseline["p99_ms"], 1),
        "triton_p50_ms": round(triton["p50_ms"], 1),
        "baseline_p50_ms": round(baseline["p50_ms"], 1),
        "triton_mean_batch": round(triton["mean_batch"], 2),
    }


def generate_summary(dynamic: dict, continuous: dict, baseline: dict) -> dict:
    """Per concurrency: the baseline, then each Triton mode with its ratio to it."""

    def side(result: dict) -> dict:
        return {
            "rps": round(result["rps"], 2),
            "ratio": round(result["rps"] / base["rps"], 2),
            "p50_ms": round(result["p50_ms"], 1),
            "p99_ms": round(result["p99_ms"], 1),
        }

    report = {}
    for clients, base in baseline.items():
        report[f"c{clients}"] = {
            "baseline": {k: round(base[k], 2) for k in ("rps", "p50_ms", "p99_ms")},
            # Triton's rows per execute(): the batch the dynamic batcher formed.
            "dynamic": {
                **side(dynamic[clients]),
                "mean_batch": round(dynamic[clients]["mean_batch"], 2),
            },
            "continuous": side(continuous[clients]),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="tiny random models (smoke test)")
    parser.add_argument("--classifier", default="minilm", help='directory or "minilm"')
    parser.add_argument("--policy", default="smollm2", help='directory or "smollm2"')
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--classify-requests", type=int, default=24, help="per client")
    parser.add_argument(
        "--generate-concurrency",
        default="1,16,64",
        help="comma-separated client counts for generation",
    )
    parser.add_argument(
        "--generate-total",
        type=int,
        default=16,
        help="generation calls per concurrency (at least 2 per client)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--classify-delay-us",
        type=int,
        default=20000,
        help="classifier queue delay: time for a batch to reach 16 rows (one AMX tile)",
    )
    parser.add_argument("--generate-delay-us", type=int, default=20000)
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="both sides alike; auto = bfloat16 where the hardware multiplies it natively "
        "(CUDA, or a CPU with AMX/AVX512-BF16), else float32",
    )
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="intra-op threads, both sides alike"
    )
    parser.add_argument(
        "--only", choices=["classify", "generate"], help="run one task (default: both)"
    )
    args = parser.parse_args(argv)
    args.tasks = [args.only] if args.only else ["classify", "generate"]
    args.concurrency = [int(c) for c in args.generate_concurrency.split(",")]
    if args.dtype == "auto":
        args.dtype = native_bf16_dtype()

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-serving-") as tmp:
        workdir = Path(tmp)
        if args.quick:
            from tests.serving.tiny_models import build_tiny_classifier, build_tiny_policy

            classifier = build_tiny_classifier(workdir / "tiny-classifier")
            policy = build_tiny_policy(workdir / "tiny-policy")
        else:
            classifier = classifier_dir(args.classifier, workdir)
            policy = policy_dir(args.policy)
        args.prompts = render_prompts(policy)
        triton = bench_triton(args, classifier, policy, workdir, args.tasks, continuous=False)
        continuous = {}
        if "generate" in args.tasks:
            continuous = bench_triton(args, classifier, policy, workdir, ["generate"], True)
        baseline = bench_baseline(args, classifier, policy)
    report: dict = {}
    if "classify" in args.tasks:
        clients = args.clients
        report["classify"] = summary(triton["classify"][clients], baseline["classify"][clients])
    if "generate" in args.tasks:
        report["generate"] = generate_summary(
            triton["generate"], continuous["generate"], baseline["generate"]
        )
    report["config"] = {
        "clients": args.clients,
        "classify_requests_per_client": args.classify_requests,
        "generate_concurrency": args.concurrency,
        "generate_requests_per_client": {c: generate_requests(args, c) for c in args.concurrency},
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
        "classify_delay_us": args.classify_delay_us,
        "generate_delay_us": args.generate_delay_us,
        "torch_threads": args.torch_threads,
        "classifier": "tiny" if args.quick else str(args.classifier),
        "policy": "tiny" if args.quick else str(args.policy),
        "served_versions": triton["versions"],
    }
    if args.json:
        print(json.dumps(report))
        return 0
    if "classify" in report:
        row = report["classify"]
        print(
            f"classify  triton {row['triton_rps']:7.2f} rps p99 {row['triton_p99_ms']:8.1f} ms"
            f" | baseline {row['baseline_rps']:7.2f} rps p99 {row['baseline_p99_ms']:8.1f} ms"
            f" | ratio {row['ratio']:.2f}"
        )
    for key, row in report.get("generate", {}).items():
        print(
            f"generate {key:>4s} baseline {row['baseline']['rps']:6.2f} rps"
            + "".join(
                f" | {mode} {row[mode]['rps']:6.2f} rps x{row[mode]['ratio']:.2f}"
                f" p99 {row[mode]['p99_ms']:8.1f} ms"
                for mode in ("dynamic", "continuous")
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
