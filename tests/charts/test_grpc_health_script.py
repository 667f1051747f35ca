"""The chart's grpc.health.v1 checker (helm test pod, TLS exec probes) against a real server."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.charts.helmtools import CHART

spec = importlib.util.spec_from_file_location("grpc_health", CHART / "files" / "grpc_health.py")
assert spec and spec.loader
grpc_health = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grpc_health)


@pytest.fixture()
def server() -> Iterator[tuple[str, health.HealthServicer]]:
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield f"127.0.0.1:{port}", servicer
    srv.stop(None)


def test_serving_server_passes(server, capsys) -> None:
    target, servicer = server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert grpc_health.main([target, "--timeout", "2"]) == 0
    assert f"{target}: SERVING" in capsys.readouterr().out


def test_not_serving_or_unreachable_fails(server, capsys) -> None:
    target, servicer = server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    closed = "127.0.0.1:1"  # nothing listens on port 1
    assert grpc_health.main([target, closed, "--timeout", "1"]) == 1
    out = capsys.readouterr().out
    assert f"{target}: NOT_SERVING" in out
    assert f"{closed}: UNAVAILABLE" in out


def test_named_service_and_bearer_token_are_sent(server, tmp_path) -> None:
    target, servicer = server
    servicer.set("rlhf.v1.Trainer", health_pb2.HealthCheckResponse.SERVING)
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\nother\n")
    argv = [target, "--service", "rlhf.v1.Trainer", "--token-file", str(tokens), "--timeout", "2"]
    assert grpc_health.main(argv) == 0
    assert grpc_health.main([target, "--service", "rlhf.v1.Unknown", "--timeout", "2"]) == 1
