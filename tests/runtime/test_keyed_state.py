"""The trainer's keyed state (rlhf.runtime.keyed_state) over its three backends: a JSON
file under flock (the default), SQLite and PostgreSQL (a real server). Two replicas
updating one key at once lose nothing."""

from __future__ import annotations

import threading

import pytest

from rlhf.runtime.keyed_state import DatabaseKeyedState, FileKeyedState
from rlhf.store import open_database


@pytest.fixture(params=["file", "sqlite", "postgres"])
def open_state(request, tmp_path):
    """Opens a new handle (a new connection) on the test's one state."""
    handles = []

    def open_one():
        if request.param == "file":
            return FileKeyedState(tmp_path / "pipelines.json")
        target = (
            request.getfixturevalue("postgres_url")
            if request.param == "postgres"
            else str(tmp_path / "state.sqlite")
        )
        handle = DatabaseKeyedState(open_database(target), "trainer/pipelines")
        handles.append(handle)
        return handle

    yield open_one
    for handle in handles:
        handle.close()


def test_update_merges_and_survives_reopen(open_state):
    state = open_state()
    assert state.get("run-1") == {}
    state.update("run-1", pipeline="p", created=1.0, robustness={"before": 0.5})
    entry = state.update("run-1", robustness={"after": 0.7}, base_policy="/m")
    assert entry == {
        "pipeline": "p",
        "created": 1.0,
        "robustness": {"before": 0.5, "after": 0.7},
        "base_policy": "/m",
    }
    state.update("run-2", pipeline="p", created=2.0)
    state.update("run-3", pipeline="q", created=3.0)
    again = open_state()
    assert again.get("run-1") == entry
    assert again.latest_for("p")["created"] == 2.0
    assert again.latest_for("none") == {}


def test_two_replicas_updating_one_key_lose_nothing(open_state):
    """The hardened reward model and the robustness report of one round reach two
    replicas at once: both halves of the join must be in the state afterwards."""
    replicas = [open_state(), open_state()]
    barrier = threading.Barrier(2)

    def update_many(i: int) -> None:
        barrier.wait()
        for n in range(40):
            replicas[i].update("round-1", robustness={f"r{i}-{n}": n})

    threads = [threading.Thread(target=update_many, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(open_state().get("round-1")["robustness"]) == 80


def test_replace_sets_a_whole_document_and_returns_the_one_before(open_state):
    state = open_state()
    assert state.replace("reviews", {"uri": "/a", "columns": {"t": "text"}}) == {}
    previous = state.replace("reviews", {"uri": "/b"})
    assert previous == {"uri": "/a", "columns": {"t": "text"}}
    state.replace("other", {"uri": "/c"})
    assert open_state().items() == {"reviews": {"uri": "/b"}, "other": {"uri": "/c"}}


def test_two_replicas_replacing_different_keys_lose_neither(open_state):
    """Two reward replicas remember the datasets of two pipelines at once: both stay."""
    replicas = [open_state(), open_state()]
    barrier = threading.Barrier(2)

    def replace_many(i: int) -> None:
        barrier.wait()
        for n in range(30):
            replicas[i].replace(f"pipeline-{i}-{n}", {"datasets": {"train": f"/{i}/{n}"}})

    threads = [threading.Thread(target=replace_many, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(open_state().items()) == 60
