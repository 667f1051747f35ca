"""SIGTERM stops `rlhf serve` within its grace period even when a run's worker is stuck
where it cannot see the stop (issue 20: a read from a hung network filesystem; a FIFO or
a device is refused before any read), and the run is left for resume, not failed.

The service runs in a real subprocess (the interpreter's exit joins worker threads, so
only a real process shows whether it exits); its run blocks on an Event that never
fires, standing for the hung read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from rlhf.runtime.runs import RunManager

GRACE_S = 1.0

SERVICE = textwrap.dedent(
    """
    import sys
    import threading
    from pathlib import Path

    import rlhf.services.dataprep.server as dataprep
    from rlhf.cli.serve import run_service

    real_register = dataprep.register

    def register(server, ctx):
        service = real_register(server, ctx)

        def hung(run):
            Path(sys.argv[1]).write_text(run.run_id)
            threading.Event().wait()  # never returns, never reports progress

        ctx.runs.submit("prepare-hung", hung, params={"kind": "prepare"})
        return service

    dataprep.register = register
    sys.exit(run_service("dataprep", port=0))
    """
)


def test_sigterm_exits_within_the_grace_period_and_leaves_a_stuck_run_for_resume(tmp_path):
    started = tmp_path / "started"
    env = {
        **os.environ,
        "RLHF_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "RLHF_BUS": "inprocess",
        "RLHF_RUN_SHUTDOWN_GRACE_S": str(GRACE_S),
        "RLHF_GRPC__SHUTDOWN_GRACE_S": "0.5",
    }
    proc = subprocess.Popen([sys.executable, "-c", SERVICE, str(started)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None, "the service died before its run started"
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.1)
        run_id = started.read_text()
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)  # before the fix: never (the exit joined the worker)
        took = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
    assert took < GRACE_S + 10, took

    state_dir = tmp_path / "artifacts" / "state" / "dataprep" / "runs"
    runs = RunManager(state_dir)
    record = runs.get(run_id)
    assert record.state == "pending", record
    assert record.message.startswith("interrupted"), record.message
    assert record.attempts == 1  # a worker stuck past the grace period counts
    runs.resume_incomplete(lambda rec: lambda ctx: {"resumed": True})
    final = runs.wait(run_id, timeout=10)
    assert (final.state, final.result, final.attempts) == ("succeeded", {"resumed": True}, 2)
    runs.shutdown()


def test_a_run_that_reports_stops_at_once_and_its_attempt_is_not_counted(tmp_path):
    runs = RunManager(tmp_path)
    running = threading.Event()

    def work(ctx):
        running.set()
        while True:
            ctx.report()  # raises RunCancelled once the shutdown asked it to stop
            time.sleep(0.01)

    record = runs.submit("ppo", work)
    assert running.wait(5)
    assert runs.shutdown(grace_s=5) == []
    saved = RunManager(tmp_path).get(record.run_id)
    assert (saved.state, saved.attempts) == ("pending", 0)
    assert saved.message.startswith("interrupted")
