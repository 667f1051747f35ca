import pytest

from rlhf.registry import ModelNotFound, ModelRegistry


def test_versions_count_up_and_promotion_moves(tmp_path):
    registry = ModelRegistry(tmp_path)
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


def test_versions_sort_numerically_and_errors(tmp_path):
    registry = ModelRegistry(tmp_path)
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


def test_promotion_log_and_rollback_target(tmp_path):
    from rlhf.registry import ModelNotFound, ModelRegistry

    registry = ModelRegistry(tmp_path)
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


def test_a_keyed_registration_happens_once(tmp_path):
    # A run resumed after dying between `register` and finishing registers again: the
    # same key (run id and stage) gets the first attempt's version back, not a v2.
    registry = ModelRegistry(tmp_path)
    first = registry.register("p-policy", "policy", "file:///m/a", key="train-1/ppo")
    again = ModelRegistry(tmp_path).register(
        "p-policy", "policy", "file:///m/b", metrics={"reward": 1.0}, key="train-1/ppo"
    )
    assert again == first
    assert [m.version for m in registry.list(name="p-policy")] == ["p-policy-v1"]
    other = registry.register("p-policy", "policy", "file:///m/c", key="train-2/ppo")
    unkeyed = registry.register("p-policy", "policy", "file:///m/d")
    assert (other.version, unkeyed.version) == ("p-policy-v2", "p-policy-v3")
