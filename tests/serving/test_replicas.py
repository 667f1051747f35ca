"""TritonReplicas on fake replicas and a fake DNS resolver (no Triton; milliseconds).

The real thing, two tritonserver processes, is tests/services/test_inference_triton_replicas.py.
"""

from __future__ import annotations

import socket
import time

import pytest

from rlhf.serving.client import ModelNotLoaded, ServingError, TritonUnavailable
from rlhf.serving.replicas import TritonReplicas, parse_endpoints, resolve_endpoints


class FakeTriton:
    """One replica's model control: a loaded set, reachable or not, models that fail."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.reachable = True
        self.failure: Exception | None = None
        self.broken: set[str] = set()
        self.closed = False

    def _check(self) -> None:
        if not self.reachable:
            raise TritonUnavailable("connection refused")
        if self.failure is not None:
            raise self.failure

    def loaded_models(self, timeout_s: float = 5.0) -> set[str]:
        self._check()
        return set(self.loaded)

    def load_model(self, name: str, timeout_s: float = 600.0) -> None:
        self._check()
        if name in self.broken:
            raise ModelNotLoaded(f"{name}: failed to load")
        self.loaded.add(name)

    def unload_model(self, name: str, timeout_s: float = 60.0) -> None:
        self._check()
        self.loaded.discard(name)

    def close(self) -> None:
        self.closed = True


class FakeCluster:
    """A headless Service: `answer` are the pod IPs DNS returns, `pods` their Tritons."""

    def __init__(self, *ips: str) -> None:
        self.answer = list(ips)
        self.pods: dict[str, FakeTriton] = {}

    def resolve(self, host: str, port: int) -> list[str]:
        assert (host, port) == ("t-rlhf-triton-headless.ml.svc", 8001)
        return list(self.answer)

    def connect(self, address: str) -> FakeTriton:
        ip = address.rsplit(":", 1)[0]
        return self.pods.setdefault(ip, FakeTriton())

    def replicas(self, resync_s: float = 10.0) -> TritonReplicas:
        return TritonReplicas(
            "t-rlhf-triton-headless.ml.svc:8001",
            resolver=self.resolve,
            connect=self.connect,
            resync_s=resync_s,
        )


def test_endpoints_resolve_to_every_address_sorted_and_unique() -> None:
    def fake_dns(host: str, port: int) -> list[str]:
        return {"triton": ["10.0.0.9", "10.0.0.2", "10.0.0.9"], "v6": ["fd00::1"]}[host]

    assert resolve_endpoints("triton:8001", fake_dns) == ["10.0.0.2:8001", "10.0.0.9:8001"]
    assert resolve_endpoints("triton:8001, v6:9000", fake_dns) == [
        "10.0.0.2:8001",
        "10.0.0.9:8001",
        "[fd00::1]:9000",
    ]
    assert parse_endpoints("[::1]:8001,127.0.0.1:8002") == [("::1", 8001), ("127.0.0.1", 8002)]
    for bad in ("triton", "triton:http", ":8001", " , "):
        with pytest.raises(ValueError):
            parse_endpoints(bad)


def test_a_name_that_does_not_resolve_gives_no_replicas() -> None:
    def nxdomain(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    assert resolve_endpoints("t-rlhf-triton-headless.ml.svc:8001", nxdomain) == []


def test_the_real_resolver_answers_for_loopback_addresses() -> None:
    assert resolve_endpoints("127.0.0.1:8001,127.0.0.1:8002") == [
        "127.0.0.1:8001",
        "127.0.0.1:8002",
    ]


def test_load_and_unload_reach_every_replica() -> None:
    cluster = FakeCluster("10.0.0.1", "10.0.0.2")
    replicas = cluster.replicas()
    replicas.load("policy-v1")
    replicas.load("policy-v2")
    replicas.unload("policy-v1")
    assert [p.loaded for p in cluster.pods.values()] == [{"policy-v2"}, {"policy-v2"}]
    assert replicas.desired() == {"policy-v2"}
    assert replicas.ready(["policy-v2"])


def test_an_unreachable_replica_is_caught_up_by_the_reconcile() -> None:
    cluster = FakeCluster("10.0.0.1", "10.0.0.2")
    replicas = cluster.replicas()
    replicas.refresh()
    cluster.pods["10.0.0.2"].reachable = False
    replicas.load("clf-v1")  # one replica has it: the load succeeds
    assert cluster.pods["10.0.0.1"].loaded == {"clf-v1"}
    assert replicas.ready(["clf-v1"])  # the unreachable one is not counted
    cluster.pods["10.0.0.2"].reachable = True
    assert not replicas.ready(["clf-v1"])  # it answers now and lacks the version
    replicas.reconcile()
    assert cluster.pods["10.0.0.2"].loaded == {"clf-v1"}
    assert replicas.ready(["clf-v1"])


def test_a_replica_shutting_down_is_not_counted_by_readiness() -> None:
    cluster = FakeCluster("10.0.0.1", "10.0.0.2")
    replicas = cluster.replicas()
    replicas.load("clf-v1")
    cluster.pods["10.0.0.2"].loaded.clear()
    cluster.pods["10.0.0.2"].failure = ServingError("Server not ready")
    assert replicas.ready(["clf-v1"])


def test_a_new_or_restarted_replica_gets_the_current_versions() -> None:
    cluster = FakeCluster("10.0.0.1")
    replicas = cluster.replicas()
    replicas.load("clf-v1")
    replicas.load("clf-v2")
    replicas.unload("clf-v1")
    cluster.answer.append("10.0.0.7")  # scaled up: DNS now returns a second pod
    cluster.pods["10.0.0.7"] = FakeTriton()
    cluster.pods["10.0.0.7"].loaded = {"clf-v1", "other-team-model"}  # --load-model=*
    states = replicas.reconcile()
    assert cluster.pods["10.0.0.7"].loaded == {"clf-v2", "other-team-model"}
    assert states["10.0.0.7:8001"] == {"clf-v2", "other-team-model"}
    cluster.pods["10.0.0.1"].loaded.clear()  # restarted with an empty repository index
    replicas.reconcile()
    assert cluster.pods["10.0.0.1"].loaded == {"clf-v2"}


def test_a_replica_gone_from_dns_is_dropped_and_closed() -> None:
    cluster = FakeCluster("10.0.0.1", "10.0.0.2")
    replicas = cluster.replicas()
    replicas.refresh()
    cluster.answer = ["10.0.0.1"]
    replicas.reconcile()
    assert replicas.addresses() == ["10.0.0.1:8001"]
    assert cluster.pods["10.0.0.2"].closed


def test_a_model_that_fails_to_load_is_not_kept_anywhere() -> None:
    cluster = FakeCluster("10.0.0.1", "10.0.0.2")
    replicas = cluster.replicas()
    replicas.refresh()
    cluster.pods["10.0.0.2"].broken.add("clf-bad")
    with pytest.raises(ModelNotLoaded):
        replicas.load("clf-bad")
    assert replicas.desired() == frozenset()
    assert cluster.pods["10.0.0.1"].loaded == set()


def test_no_reachable_replica_fails_the_load_and_readiness() -> None:
    cluster = FakeCluster()
    replicas = cluster.replicas()
    with pytest.raises(TritonUnavailable, match="no replica resolved"):
        replicas.load("clf-v1")
    assert not replicas.ready([])
    cluster.answer = ["10.0.0.1"]
    replicas.refresh()
    cluster.pods["10.0.0.1"].reachable = False
    assert not replicas.ready([])


def test_the_loop_reconciles_without_being_asked() -> None:
    cluster = FakeCluster("10.0.0.1")
    replicas = cluster.replicas(resync_s=0.05).start()
    try:
        replicas.load("clf-v1")
        cluster.answer.append("10.0.0.2")
        deadline = time.monotonic() + 5
        while cluster.pods.get("10.0.0.2", FakeTriton()).loaded != {"clf-v1"}:
            assert time.monotonic() < deadline, "the loop did not load the new replica"
            time.sleep(0.02)
    finally:
        replicas.close()
    assert all(p.closed for p in cluster.pods.values())
