"""`rlhf stage run` under torchrun (what a stage's Kubernetes Job runs): rank-aware.

Two ranks (gloo, CPU) train a tiny pre-training stage and a tiny DPO stage (evaluated
before and after) from the request file a trainer would write; rank 0 alone saves the
one model directory, evaluates, writes the progress and result files and discards the
run's checkpoints, so no two ranks race on the same files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.engine.data import LabeledText, PreferencePair, save_dataset
from rlhf.engine.models import tiny_causal_lm, tiny_char_tokenizer
from rlhf.pipelines import parse_pipeline
from rlhf.workflows import stage_jobs

ALPHABET = "abcdefgh "
COMMON = {"autocast": False, "checkpoint_every": 1, "learning_rate": 1e-2, "warmup_steps": 1}
SPEC = {
    "name": "tiny",
    "task": "chat",
    "datasets": {
        "texts": {"format": "text", "path": "texts.txt"},
        "pairs": {"format": "jsonl", "path": "pairs.jsonl"},
    },
    "stages": [
        {
            "name": "pretrain",
            "kind": "pretrain",
            "data": "texts",
            "executor": {"kind": "job", "workers": 2},
            "config": {
                "total_steps": 3, "batch_size": 4, "block_size": 16, "eval_fraction": 0.0,
                "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}, **COMMON,
            },
        },
        {
            "name": "dpo",
            "kind": "dpo",
            "data": "pairs",
            "executor": {"kind": "job", "workers": 2},
            "config": {
                "batch_size": 4, "max_prompt_tokens": 16, "max_response_tokens": 16, **COMMON,
            },
        },
    ],
}  # fmt: skip


def files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def torchrun_stage(request_file: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", "2", "--no-python",
         str(bin_dir / "rlhf"), "stage", "run", "--request", str(request_file)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stage-data")
    tok = tiny_char_tokenizer(ALPHABET)
    tok.save_pretrained(root / "tokenizer")
    policy = tiny_causal_lm(len(tok), hidden_size=32, num_layers=1, num_heads=2, seed=0)
    policy.save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    texts = [LabeledText(t, "text") for t in ["abcabcabc " * 8, "defdefdef " * 8] * 4]
    save_dataset(root / "texts", {"train": texts})
    pairs = [PreferencePair(p, "abcab", "hgfhg") for p in ["ab", "cd", "ef", "gh"] * 3]
    save_dataset(root / "pairs", {"train": pairs[:8], "validation": pairs[8:]})
    return {"root": root}


@pytest.mark.parametrize("stage", ["pretrain", "dpo"])
def test_two_ranks_write_one_model_from_rank_0(data, stage, tmp_path) -> None:
    root = data["root"]
    out = tmp_path / "models" / stage
    inputs = {"tokenizer_dir": str(root / "tokenizer")} if stage == "pretrain" else {}
    if stage == "dpo":
        inputs["policy_dir"] = str(root / "policy")
    request = stage_jobs.StageRequest(
        spec=parse_pipeline(SPEC).model_dump(mode="json"),
        stage=stage,
        datasets={"texts": str(root / "texts"), "pairs": str(root / "pairs")},
        out_dir=str(out),
        inputs=inputs,
    )
    request.save(out / stage_jobs.REQUEST_FILE)
    done = torchrun_stage(out / stage_jobs.REQUEST_FILE)
    assert done.returncode == 0, done.stderr[-4000:]

    # One result line: rank 0's (the other rank trains and exits quietly).
    printed = [line for line in done.stdout.splitlines() if line.startswith('{"model_dir"')]
    assert len(printed) == 1 and json.loads(printed[0])["model_dir"] == str(out / "model")
    result = stage_jobs.load_result(out)
    assert result.model_dir == out / "model" and result.metrics["steps"] > 0
    assert sorted(p.name for p in tmp_path.rglob("model") if p.is_dir()) == ["model"]
    assert (out / "model" / "config.json").is_file()
    # The run's checkpoints and final/ went once the model was saved; its log stays,
    # written by rank 0 alone: each step once (plus a final evaluation row).
    run_files = files(out / "run")
    assert run_files == ["metrics.jsonl"], run_files
    steps = [json.loads(line)["step"] for line in (out / "run" / "metrics.jsonl").open()]
    n = int(result.metrics["steps"])
    assert sorted(set(steps)) == list(range(1, n + 1)) and len(steps) <= n + 1, steps
    progress = json.loads((out / stage_jobs.PROGRESS_FILE).read_text())
    assert progress["step"] == progress["total_steps"]
    if stage == "dpo":  # evaluated before and after, on rank 0
        assert {"kl_per_sequence_after", "pairwise_accuracy_after"} & set(result.metrics)
