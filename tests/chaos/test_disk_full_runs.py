"""A run that ends while the state disk is full still ends visibly (found by
bench/chaos.py filling the artifact tmpfs mid-round: the trainer's PPO run hit ENOSPC,
then its FAILED record could not be written either, so it stayed RUNNING on disk and
no FAILED event went out)."""

from __future__ import annotations

import errno
import json
import time

from rlhf.runtime.runs import RunManager


def test_a_run_failing_on_a_full_disk_is_published_failed_and_saved_later(tmp_path):
    seen = []
    manager = RunManager(tmp_path, on_update=lambda r: seen.append(r.state))
    full = {"on": False}
    write = manager._write

    def flaky_write(record):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(record)

    manager._write = flaky_write  # type: ignore[method-assign]

    def work(ctx):
        full["on"] = True  # the disk fills during the run
        raise OSError(errno.ENOSPC, "No space left on device")

    record = manager.submit("train", work)
    manager.wait(record.run_id, timeout=10)
    assert manager.get(record.run_id).state == "failed"
    assert seen[-1] == "failed"  # the FAILED status went out although it was not saved
    path = tmp_path / f"{record.run_id}.json"
    assert json.loads(path.read_text())["state"] == "running"
    full["on"] = False  # the disk is freed: the final state reaches it
    deadline = time.monotonic() + 10
    while json.loads(path.read_text())["state"] != "failed":
        assert time.monotonic() < deadline, "the FAILED record was never written"
        time.sleep(0.2)
    assert not list(tmp_path.glob(".run-*.tmp"))
    manager.shutdown()
