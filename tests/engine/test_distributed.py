"""Data-parallel training: 2 ranks under torchrun (gloo, CPU) train like one process.

Pre-training, PPO (with sampling), RLOO and DPO on tiny models: the loss curves of
``torchrun --standalone --nproc_per_node 2`` match one process with the same global
batch, both ranks log the same numbers, only rank 0 writes (one set of checkpoints,
final/ and metrics.jsonl, as one process writes), and a 2-rank run killed mid-way
resumes from its checkpoint to the uninterrupted run's numbers exactly. About 45 s on
2 busy cores (one single-process pass and one torchrun launch, shared by the tests).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from distributed_runs import run_all

from rlhf.engine import distributed

WORKER = Path(__file__).with_name("distributed_runs.py")
CURVES = {
    "pretrain": ("loss", "grad_norm", "lr"),
    "ppo": ("score", "kl_per_sequence", "pg_loss", "vf_loss", "kl_coef", "response_tokens"),
    "rloo": ("score", "kl_per_sequence", "loss", "kl_coef"),
    "dpo": ("loss", "accuracy", "reward_margin", "grad_norm"),
}


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(single-process histories and directory, 2-rank histories per rank and directory)."""
    single_dir = tmp_path_factory.mktemp("single")
    assert not distributed.active()
    single = run_all(single_dir)
    multi_dir = tmp_path_factory.mktemp("torchrun")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(WORKER), str(multi_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((multi_dir / f"histories-rank{r}.json").read_text()) for r in (0, 1)]
    return single, single_dir, ranks, multi_dir


@pytest.mark.parametrize("name", sorted(CURVES))
def test_two_ranks_follow_the_single_process_curve(runs, name):
    single, _, ranks, _ = runs
    assert len(ranks[0][name]) == len(single[name]) > 0
    for step, (one, two) in enumerate(zip(single[name], ranks[0][name], strict=True)):
        for key in CURVES[name]:
            assert close(one[key], two[key]), (name, step, key, one[key], two[key])


def test_both_ranks_log_the_same_numbers(runs):
    _, _, ranks, _ = runs
    for name, keys in CURVES.items():
        for a, b in zip(ranks[0][name], ranks[1][name], strict=True):
            assert all(a[k] == b[k] for k in keys), name


def test_only_rank_0_writes_the_one_process_files(runs):
    _, single_dir, _, multi_dir = runs
    assert files_under(multi_dir / "rank1") == []
    for name in CURVES:
        written = files_under(multi_dir / "rank0" / name)
        assert written == files_under(single_dir / "rank0" / name), name
        assert "final/config.json" in written and "checkpoints/latest" in written
        lines = (multi_dir / "rank0" / name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == list(range(1, len(lines) + 1))


def test_a_killed_two_rank_run_resumes_exactly(runs):
    _, _, ranks, multi_dir = runs
    for history in ranks:
        resumed, uninterrupted = history["ppo_resumed"], history["ppo"]
        assert len(resumed) == len(uninterrupted)
        for a, b in zip(resumed, uninterrupted, strict=True):
            assert all(a[k] == b[k] for k in CURVES["ppo"])
    assert (multi_dir / "shared" / "ppo" / "final" / "config.json").is_file()
