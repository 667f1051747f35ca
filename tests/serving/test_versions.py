"""VersionManager routing without Triton (a recording fake loader)."""

from __future__ import annotations

import threading
import time

import pytest

from rlhf.serving.versions import ServedVersion, UnknownModel, VersionManager


class FakeLoader:
    def __init__(self, delay: float = 0.0, fail: set[str] | None = None) -> None:
        self.delay = delay
        self.fail = fail or set()
        self.loaded: list[str] = []
        self.unloaded: list[str] = []

    def load(self, version: ServedVersion) -> None:
        time.sleep(self.delay)
        if version.version in self.fail:
            raise RuntimeError(f"cannot load {version.version}")
        version.backend_name = version.version
        self.loaded.append(version.version)

    def unload(self, version: ServedVersion) -> None:
        self.unloaded.append(version.version)


def pick(manager: VersionManager, name: str = "m", version: str = "") -> str:
    with manager.use(name, version) as served:
        return served.version


def test_first_version_serves_and_a_full_promotion_switches():
    loader = FakeLoader()
    manager = VersionManager(loader)
    manager.deploy("m", "v1", "classifier", "/d1")
    assert pick(manager) == "v1"
    manager.deploy("m", "v2", "classifier", "/d2", canary_percent=100)
    assert pick(manager) == "v2"
    assert loader.unloaded == ["v1"]
    assert manager.route_of("m").previous == "v1"


def test_canary_share_is_exact_and_pinning_works():
    manager = VersionManager(FakeLoader())
    manager.deploy("m", "v1", "policy", "/d1")
    manager.deploy("m", "v2", "policy", "/d2", canary_percent=10)
    picks = [pick(manager) for _ in range(100)]
    assert picks.count("v2") == 10
    assert pick(manager, version="v1") == "v1" and pick(manager, version="v2") == "v2"
    manager.set_canary_percent("m", 50)
    assert [pick(manager) for _ in range(10)].count("v2") == 5


def test_promote_and_rollback():
    loader = FakeLoader()
    manager = VersionManager(loader)
    manager.deploy("m", "v1", "policy", "/d1")
    manager.deploy("m", "v2", "policy", "/d2", canary_percent=30)
    assert manager.rollback("m").version == "v1"  # drops the canary
    assert loader.unloaded == ["v2"] and {pick(manager) for _ in range(10)} == {"v1"}
    manager.deploy("m", "v3", "policy", "/d3", canary_percent=30)
    manager.promote("m")
    assert {pick(manager) for _ in range(10)} == {"v3"}
    assert manager.rollback("m").version == "v1"  # back to the previous stable (reloaded)
    assert {pick(manager) for _ in range(10)} == {"v1"}
    assert loader.loaded == ["v1", "v2", "v3", "v1"]


def test_redeploying_a_live_version_is_idempotent():
    loader = FakeLoader()
    manager = VersionManager(loader)
    manager.deploy("m", "v1", "policy", "/d1")
    manager.deploy("m", "v1", "policy", "/d1")
    assert loader.loaded == ["v1"]


def test_failed_load_keeps_the_old_version_serving():
    manager = VersionManager(FakeLoader(fail={"v2"}))
    manager.deploy("m", "v1", "policy", "/d1")
    with pytest.raises(RuntimeError, match="cannot load v2"):
        manager.deploy("m", "v2", "policy", "/d2")
    assert pick(manager) == "v1"


def test_unknown_names_versions_and_kinds():
    manager = VersionManager(FakeLoader())
    manager.deploy("m", "v1", "policy", "/d1")
    with pytest.raises(UnknownModel, match="'nope'"):
        pick(manager, "nope")
    with pytest.raises(UnknownModel, match="'v9'"):
        pick(manager, version="v9")
    with pytest.raises(ValueError, match="is a policy"):
        manager.deploy("m", "v2", "classifier", "/d2")
    with pytest.raises(ValueError, match="canary_percent"):
        manager.deploy("m", "v2", "policy", "/d2", canary_percent=101)
    assert manager.default_name("classifier", "policy") == "m"


def test_old_version_is_unloaded_only_after_its_requests_finish():
    loader = FakeLoader()
    manager = VersionManager(loader, drain_timeout_s=10)
    manager.deploy("m", "v1", "policy", "/d1")
    holding, release = threading.Event(), threading.Event()

    def slow_request() -> None:
        with manager.use("m") as served:
            assert served.version == "v1"
            holding.set()
            release.wait(10)

    worker = threading.Thread(target=slow_request)
    worker.start()
    holding.wait(5)
    swap = threading.Thread(target=manager.deploy, args=("m", "v2", "policy", "/d2"))
    swap.start()
    time.sleep(0.3)
    assert pick(manager) == "v2"  # new requests already go to v2
    assert loader.unloaded == []  # v1 still has a request in flight
    release.set()
    worker.join(5)
    swap.join(5)
    assert loader.unloaded == ["v1"]
