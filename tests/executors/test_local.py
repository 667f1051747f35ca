"""The local process executor: same spec and status callback as the Kubernetes one."""

from __future__ import annotations

import sys

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
