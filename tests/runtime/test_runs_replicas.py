"""Several replicas of a service share one run state directory: each run is resumed by
its owner only, a dead replica's runs are taken over exactly once, and a replica that
lost its run to a takeover stops it instead of finishing it twice.

Run over each place ownership can be decided (`rlhf.runtime.run_claims`): claim files in
the state directory (the default), and the state database, SQLite and PostgreSQL (a real
server, tests/postgres_plugin.py), each replica with its own connection."""

from __future__ import annotations

import threading
import time

import pytest

from rlhf.runtime.run_claims import DatabaseRunClaims, FileRunClaims
from rlhf.runtime.runs import RunManager
from rlhf.store import open_database

_BACKEND = {}  # tmp_path -> function giving a new RunClaims
_MANAGERS: list[RunManager] = []


@pytest.fixture(params=["files", "sqlite", "postgres"], autouse=True)
def claims_backend(request, tmp_path):
    if request.param == "files":
        _BACKEND[tmp_path] = lambda: FileRunClaims(tmp_path)
    else:
        target = (
            request.getfixturevalue("postgres_url")
            if request.param == "postgres"
            else str(tmp_path / "state.sqlite")
        )
        _BACKEND[tmp_path] = lambda: DatabaseRunClaims(open_database(target), scope="trainer")
    yield request.param
    while _MANAGERS:  # stop the heartbeats before the test's database goes away
        _MANAGERS.pop().shutdown(wait=False)
    del _BACKEND[tmp_path]


def _manager(tmp_path, replica: str, ttl: float = 60.0) -> RunManager:
    manager = RunManager(
        tmp_path, service="trainer", replica=replica, lease_ttl_s=ttl, claims=_BACKEND[tmp_path]()
    )
    _MANAGERS.append(manager)
    return manager


def _age_lease(tmp_path, replica: str, seconds: float) -> None:
    _BACKEND[tmp_path]().renew(replica, at=time.time() - seconds)


def _unfinished(tmp_path, replica: str) -> str:
    """A run `replica` started and never finished (its process died mid-run)."""
    manager = _manager(tmp_path, replica)
    started, block = threading.Event(), threading.Event()

    def work(ctx):
        started.set()
        block.wait(30)  # the "crash": the run stays RUNNING on disk

    record = manager.submit("ppo", work, request_id=f"req-{replica}")
    assert started.wait(10)
    manager._stopping.set()  # no more heartbeats: the replica is gone
    return record.run_id


def test_a_live_replicas_run_is_left_alone_and_visible_to_the_others(tmp_path):
    run_id = _unfinished(tmp_path, "trainer-a")
    other = _manager(tmp_path, "trainer-b")
    ran = []
    assert other.resume_incomplete(lambda r: lambda ctx: ran.append(r.run_id)) == []
    assert ran == []
    assert other.get(run_id).owner == "trainer-a"
    assert other.get(run_id).state == "running"
    assert [r.run_id for r in other.list()] == [run_id]
    # A client retrying StartRun against the other replica gets the same run.
    assert other.submit("ppo", lambda ctx: None, request_id="req-trainer-a").run_id == run_id


def test_a_dead_replicas_run_is_taken_over_exactly_once(tmp_path):
    run_id = _unfinished(tmp_path, "trainer-a")
    _age_lease(tmp_path, "trainer-a", 600)
    survivors = [_manager(tmp_path, f"trainer-{name}") for name in "bcd"]
    ran: list[str] = []
    lock = threading.Lock()

    def work_for(record):
        def work(ctx):
            with lock:
                ran.append(ctx.record.owner)
            return {"done": True}

        return work

    threads = [threading.Thread(target=m.resume_incomplete, args=(work_for,)) for m in survivors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for manager in survivors:
        if run_id in manager._futures:
            manager.wait(run_id, timeout=10)
    assert len(ran) == 1, ran
    record = survivors[0].get(run_id)
    assert record.state == "succeeded" and record.owner == ran[0] and record.epoch == 1
    claims = _BACKEND[tmp_path]()
    assert claims.holder(f"{run_id}.1") == ran[0] and claims.holder(f"{run_id}.2") is None


def test_a_replica_that_lost_its_run_stops_it_at_the_next_report(tmp_path):
    slow = _manager(tmp_path, "trainer-a")
    paused, resume = threading.Event(), threading.Event()
    reports = []

    def work(ctx):
        ctx.report(1, 3)
        paused.set()
        resume.wait(30)  # a long GC pause or a frozen node: the lease goes stale
        reports.append("after pause")
        ctx.report(2, 3)  # raises: another replica owns the run now
        reports.append("unreachable")

    record = slow.submit("ppo", work)
    assert paused.wait(10)
    slow._stopping.set()
    _age_lease(tmp_path, "trainer-a", 600)
    taker = _manager(tmp_path, "trainer-b")
    taker.resume_incomplete(lambda r: lambda ctx: {"by": "b"})
    taker.wait(record.run_id, timeout=10)
    resume.set()
    slow.wait(record.run_id, timeout=10)
    assert reports == ["after pause"]
    final = taker.get(record.run_id)
    assert final.state == "succeeded" and final.owner == "trainer-b" and final.result == {"by": "b"}


def test_one_request_id_starts_one_run_across_replicas(tmp_path):
    replicas = [_manager(tmp_path, f"trainer-{i}") for i in range(4)]
    runs: list[str] = []
    barrier = threading.Barrier(len(replicas))

    def submit(manager):
        barrier.wait()
        record = manager.submit("policy", lambda ctx: None, request_id="policy/round-1/v1")
        runs.append(record.run_id)

    threads = [threading.Thread(target=submit, args=(m,)) for m in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(runs)) == 1 and len(runs) == 4
    assert len(list(tmp_path.glob("policy-*.json"))) == 1


def test_cancel_reaching_another_replica_stops_the_run(tmp_path):
    owner = _manager(tmp_path, "trainer-a")
    other = _manager(tmp_path, "trainer-b")
    started = threading.Event()

    def work(ctx):
        started.set()
        for step in range(1000):
            ctx.report(step, 1000)
            time.sleep(0.02)

    record = owner.submit("ppo", work)
    assert started.wait(10)
    other.cancel(record.run_id, "stop it")
    assert owner.wait(record.run_id, timeout=10).state == "cancelled"
    assert other.get(record.run_id).state == "cancelled"
