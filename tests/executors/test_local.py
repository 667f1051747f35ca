"""The local process executor: same spec and status callback as the Kubernetes one."""

from __future__ import annotations

import sys
from pathlib import Path

from rlhf.executors import JobPhase, LocalProcessExecutor, TrainingJobSpec


def spec(run_id: str, code: str) -> TrainingJobSpec:
    return TrainingJobSpec(
        run_id=run_id, run_config="/unused.yaml", program=[sys.executable, "-c", code]
    )


def test_success_and_failure_are_reported() -> None:
    ex = LocalProcessExecutor()
    seen = []
    ex.submit(spec("ok", "import os; assert os.environ['RLHF_RUN_ID'] == 'ok'"))
    assert ex.watch("ok", seen.append, timeout_s=60).phase is JobPhase.SUCCEEDED
    ex.submit(spec("bad", "raise SystemExit(3)"))
    final = ex.watch("bad", seen.append, timeout_s=60)
    assert final.phase is JobPhase.FAILED and "exit code 3" in final.message
    assert [s.phase for s in seen][-1] is JobPhase.FAILED


def test_cancel_stops_the_process() -> None:
    ex = LocalProcessExecutor()
    ex.submit(spec("slow", "import time; time.sleep(60)"))
    assert ex.status("slow").phase is JobPhase.RUNNING
    ex.cancel("slow")
    assert ex.status("slow").phase is JobPhase.CANCELLED


def test_multi_process_runs_use_torchrun() -> None:
    s = TrainingJobSpec(run_id="r", run_config="/c.yaml", nproc_per_node=2)
    assert LocalProcessExecutor(torchrun="torchrun").command(s)[:5] == [
        "torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "--no-python",
    ]  # fmt: skip
    single = TrainingJobSpec(run_id="r", run_config="/c.yaml")
    assert LocalProcessExecutor().command(single) == ["rlhf", "train", "--run-config", "/c.yaml"]


def test_torchrun_command_really_starts_n_workers(tmp_path) -> None:
    """The command line the executors build, run by the real torchrun (2 CPU workers)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    check = (
        "import os, pathlib; "
        "assert os.environ['WORLD_SIZE'] == '2', os.environ['WORLD_SIZE']; "
        f"out = pathlib.Path({str(tmp_path)!r}, 'rank' + os.environ['RANK']); "
        "out.write_text(os.environ['RLHF_RUN_ID'])"
    )
    ex = LocalProcessExecutor(torchrun=str(torchrun))
    ex.submit(
        TrainingJobSpec(
            run_id="ddp",
            run_config="/c.yaml",
            nproc_per_node=2,
            program=[sys.executable, "-c", check],
        )
    )
    assert ex.watch("ddp", lambda s: None, timeout_s=120).phase is JobPhase.SUCCEEDED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0", "rank1"]
    assert (tmp_path / "rank1").read_text() == "ddp"
