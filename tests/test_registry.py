"""The model registry over its three backends: files under a flock (the default), and
the state database, SQLite and PostgreSQL (a real server, tests/postgres_plugin.py)."""

import threading

import pytest

from rlhf.registry import ModelNotFound, ModelRegistry


@pytest.fixture(params=["files", "sqlite", "postgres"])
def open_registry(request, tmp_path):
    """Opens a new registry handle (its own connection) on the test's one registry."""
    database = None
    if request.param == "sqlite":
        database = str(tmp_path / "state.sqlite")
    elif request.param == "postgres":
        database = request.getfixturevalue("postgres_url")
    return lambda: ModelRegistry(tmp_path, database=database)


def test_versions_count_up_and_promotion_moves(open_registry):
    registry = open_registry()
    first = registry.register(
        "demo-policy", "policy", "file:///m/1", run_id="r1", metrics={"reward": 0.5}
    )
    second = registry.register(
        "demo-policy", "policy", "file:///m/2", parent_version=first.version, config={"lr": 1}
    )
    assert (first.version, second.version) == ("demo-policy-v1", "demo-policy-v2")
    assert registry.promoted("demo-policy") is None
    assert registry.promote(first.version) is None
    previous = registry.promote(second.version)
    assert previous.version == first.version
    assert registry.promoted("demo-policy").version == second.version
    assert not registry.get(first.version).promoted
    shown = registry.get(second.version)
    assert shown.lineage.parent_version == first.version
    assert '"lr": 1' in shown.lineage.config_json
    assert [m.version for m in registry.list(promoted_only=True)] == [second.version]


def test_versions_sort_numerically_and_errors(open_registry):
    registry = open_registry()
    for _ in range(11):
        registry.register("m", "classifier", "file:///x")
    assert registry.latest("m").version == "m-v11"
    with pytest.raises(ModelNotFound):
        registry.get("m-v99")
    with pytest.raises(ModelNotFound):
        registry.get("../etc/passwd")
    with pytest.raises(ValueError, match="model kind"):
        registry.register("m", "weights", "file:///x")
    with pytest.raises(ValueError, match="model name"):
        registry.register("Bad Name", "policy", "file:///x")


def test_promotion_log_and_rollback_target(open_registry):
    registry = open_registry()
    v1 = registry.register("p-policy", "policy", "file:///a").version
    v2 = registry.register("p-policy", "policy", "file:///b").version
    with pytest.raises(ModelNotFound):
        registry.rollback_target("p-policy")
    registry.promote(v1, reason="gates passed")
    registry.promote(v2, reason="manual")
    assert [e["version"] for e in registry.promotions("p-policy")] == [v1, v2]
    assert registry.promotions("p-policy")[1]["reason"] == "manual"
    assert registry.rollback_target("p-policy").version == v1
    registry.promote(v1, reason="rollback")
    assert registry.rollback_target("p-policy").version == v2


def test_a_keyed_registration_happens_once(open_registry):
    # A run resumed after dying between `register` and finishing registers again: the
    # same key (run id and stage) gets the first attempt's version back, not a v2.
    registry = open_registry()
    first = registry.register("p-policy", "policy", "file:///m/a", key="train-1/ppo")
    again = open_registry().register(
        "p-policy", "policy", "file:///m/b", metrics={"reward": 1.0}, key="train-1/ppo"
    )
    assert again == first
    assert [m.version for m in registry.list(name="p-policy")] == ["p-policy-v1"]
    other = registry.register("p-policy", "policy", "file:///m/c", key="train-2/ppo")
    unkeyed = registry.register("p-policy", "policy", "file:///m/d")
    assert (other.version, unkeyed.version) == ("p-policy-v2", "p-policy-v3")


def test_two_replicas_registering_at_once_mint_distinct_versions_and_one_per_key(open_registry):
    """Two replicas (two handles, two connections) register 15 versions of one model at
    once, each also retrying one keyed registration: 31 versions v1..v31, the key once."""
    replicas = [open_registry(), open_registry()]
    barrier = threading.Barrier(2)
    minted: list[list[str]] = [[], []]

    def register_many(i: int) -> None:
        barrier.wait()
        for n in range(15):
            if n == 7:
                keyed = replicas[i].register("p-policy", "policy", "file:///k", key="run-1/ppo")
                minted[i].append(keyed.version)
            minted[i].append(replicas[i].register("p-policy", "policy", f"file:///{i}/{n}").version)

    threads = [threading.Thread(target=register_many, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    listed = [m.version for m in open_registry().list(name="p-policy")]
    assert listed == [f"p-policy-v{n}" for n in range(1, 32)]
    assert len(set(minted[0] + minted[1])) == 31  # the key's version twice, the rest once
    keyed = {minted[0][7], minted[1][7]}
    assert len(keyed) == 1
