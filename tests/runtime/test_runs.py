import threading

import pytest

from rlhf.runtime.runs import RunManager


def test_run_succeeds_with_progress_and_is_persisted(tmp_path):
    updates = []
    manager = RunManager(tmp_path, on_update=lambda r: updates.append((r.state, r.step)))

    def work(ctx):
        for step in range(1, 4):
            ctx.report(step, 3, loss=1.0 / step)
        ctx.add_artifact("file:///out", "model")
        return {"answer": 42}

    record = manager.submit("sft", work, params={"lr": 0.1})
    done = manager.wait(record.run_id, timeout=10)
    assert done.state == "succeeded" and done.result == {"answer": 42}
    assert ("running", 3) in updates
    status = done.to_proto()
    assert status.step == 3 and status.metrics["loss"] == 1 / 3
    assert status.artifacts[0].uri == "file:///out"
    manager.shutdown()
    reloaded = RunManager(tmp_path)
    assert reloaded.get(record.run_id).state == "succeeded"


def test_request_id_is_idempotent_and_failures_are_visible(tmp_path):
    manager = RunManager(tmp_path)
    first = manager.submit("x", lambda ctx: {}, request_id="req-1")
    again = manager.submit("x", lambda ctx: {}, request_id="req-1")
    assert first.run_id == again.run_id

    def boom(ctx):
        raise ValueError("bad data in line 3")

    failed = manager.wait(manager.submit("x", boom).run_id, timeout=10)
    assert failed.state == "failed" and "bad data in line 3" in failed.message
    manager.shutdown()


def test_cancel_stops_work_at_next_report(tmp_path):
    manager = RunManager(tmp_path)
    started = threading.Event()

    def slow(ctx):
        started.set()
        while True:
            ctx.report(1)
            ctx.cancelled.wait(0.01)

    record = manager.submit("ppo", slow)
    assert started.wait(5)
    manager.cancel(record.run_id, "user asked")
    assert manager.wait(record.run_id, timeout=10).state == "cancelled"
    manager.shutdown()


def test_incomplete_runs_resume_after_restart(tmp_path):
    manager = RunManager(tmp_path)
    gate = threading.Event()
    running = threading.Event()

    def blocked(ctx):
        running.set()
        gate.wait(30)

    record = manager.submit("ppo", blocked)
    assert running.wait(5)
    # Simulate a crash: the state file says running, the new process resumes it.
    manager._futures.clear()
    restarted = RunManager(tmp_path)
    assert restarted.get(record.run_id).state == "running"
    resumed = restarted.resume_incomplete(lambda rec: lambda ctx: {"resumed": ctx.run_id})
    assert [r.run_id for r in resumed] == [record.run_id]
    final = restarted.wait(record.run_id, timeout=10)
    assert final.state == "succeeded" and final.result == {"resumed": record.run_id}
    assert final.attempts == 2
    gate.set()
    manager.shutdown()
    restarted.shutdown()


def test_a_run_that_keeps_killing_its_process_is_failed_not_resumed_forever(tmp_path):
    import json

    from rlhf.runtime.runs import MAX_ATTEMPTS

    manager = RunManager(tmp_path)
    record = manager.submit("ppo", lambda ctx: {"ok": True})
    manager.wait(record.run_id, timeout=10)
    manager.shutdown()
    # The state file of a run whose process died MAX_ATTEMPTS times while it ran.
    path = tmp_path / f"{record.run_id}.json"
    saved = json.loads(path.read_text())
    saved.update(state="running", attempts=MAX_ATTEMPTS)
    path.write_text(json.dumps(saved))
    restarted = RunManager(tmp_path)
    ran = []
    assert restarted.resume_incomplete(lambda rec: lambda ctx: ran.append(ctx.run_id)) == []
    final = restarted.get(record.run_id)
    assert final.state == "failed" and f"gave up after {MAX_ATTEMPTS} attempts" in final.message
    assert ran == []
    restarted.shutdown()


def test_requests_beyond_the_queue_limit_are_refused_events_are_not(tmp_path):
    import pytest

    from rlhf.runtime.runs import MAX_QUEUED_RUNS, RunQueueFull

    manager = RunManager(tmp_path)
    gate = threading.Event()
    for _ in range(MAX_QUEUED_RUNS):
        manager.submit("ppo", lambda ctx: gate.wait(30), bounded=True)
    with pytest.raises(RunQueueFull, match="retry"):
        manager.submit("ppo", lambda ctx: None, bounded=True)
    assert manager.submit("ppo", lambda ctx: None).state in ("pending", "running")
    gate.set()
    manager.shutdown()


def test_run_metrics_show_states_progress_reward_and_kl(tmp_path):
    from rlhf.runtime.metrics import REGISTRY

    manager = RunManager(tmp_path, service="metrics-test")
    reported, release = threading.Event(), threading.Event()

    def work(ctx):
        ctx.report(3, 10, score=0.7, kl_per_sequence=2.5)
        reported.set()
        release.wait(10)

    record = manager.submit("ppo", work)
    assert reported.wait(10)
    running = {"service": "metrics-test", "stage": "ppo", "run_id": record.run_id}
    sample = lambda name, labels: REGISTRY.get_sample_value(name, labels)  # noqa: E731
    assert sample("rlhf_runs", {"service": "metrics-test", "state": "running"}) == 1
    assert sample("rlhf_run_step", running) == 3
    assert sample("rlhf_run_total_steps", running) == 10
    assert sample("rlhf_run_reward", running) == pytest.approx(0.7)
    assert sample("rlhf_run_kl_per_sequence", running) == 2.5
    release.set()
    manager.wait(record.run_id, timeout=10)
    assert sample("rlhf_run_step", running) is None  # only running runs have progress
    assert sample("rlhf_runs", {"service": "metrics-test", "state": "succeeded"}) == 1
    finished = {"service": "metrics-test", "state": "succeeded"}
    assert sample("rlhf_runs_finished_total", finished) == 1
    manager.shutdown()
