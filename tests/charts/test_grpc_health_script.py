"""The chart's grpc.health.v1 checker (helm test pod, TLS exec probes) against a real server."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.charts.helmtools import CHART, SERVICES, by_name, render

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


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.mark.helm
def test_rendered_tls_probe_command_runs_the_script_against_a_tls_server(tmp_path) -> None:
    """The default (TLS) exec probe, run as the pod runs it: `python <path to script>`.

    The certificate is made the way docs/deploy.md shows (one certificate naming every
    service as <fullname>-<service>.<namespace>.svc).
    """
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command line tool is required (Debian package 'openssl')")
    sans = ",".join(f"DNS:t-rlhf-{name}.ml.svc" for name in SERVICES)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=tmp_path)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=rlhf", "-keyout", "tls.key",
             "-out", "tls.csr", "-addext", f"subjectAltName={sans}", cwd=tmp_path)  # fmt: skip
    _openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-copy_extensions", "copy", "-out", "tls.crt",
             cwd=tmp_path)  # fmt: skip
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, srv)
    creds = grpc.ssl_server_credentials(
        [((tmp_path / "tls.key").read_bytes(), (tmp_path / "tls.crt").read_bytes())]
    )
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    try:
        dep = by_name(render(), "Deployment", "t-rlhf-reward")
        command = dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"][
            "command"
        ]
        assert command[:2] == ["python", "/etc/rlhf/scripts/grpc_health.py"]
        assert command[-1] == "127.0.0.1:50051"
        mounted = {"/etc/rlhf/scripts/grpc_health.py": str(CHART / "files" / "grpc_health.py"),
                   "/etc/rlhf/tls/ca.crt": str(tmp_path / "ca.crt"),
                   "127.0.0.1:50051": f"127.0.0.1:{port}"}  # fmt: skip
        argv = [sys.executable] + [mounted.get(arg, arg) for arg in command[1:]]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "SERVING" in run.stdout
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert run.returncode == 1 and "NOT_SERVING" in run.stdout
    finally:
        srv.stop(None)
