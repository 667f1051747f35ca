"""Bearer-token auth and TLS/mTLS against the test app in a subprocess.

Certificates (a CA, a server certificate for 127.0.0.1/localhost, a client
certificate, and a client certificate from an unrelated CA) are generated with the
`openssl` command line tool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rlhf.runtime.grpc import make_channel
from rlhf.v1 import dataprep_pb2, dataprep_pb2_grpc
from tests.runtime.grpc_testapp import REPO_ROOT, AppProcess

GOOD = dataprep_pb2.RegisterSourceRequest(name="sst2", uri="/data/sst2", format="sst2")
SERVING = health_pb2.HealthCheckResponse.SERVING


def register(channel: grpc.Channel) -> grpc.StatusCode:
    """Status code of one application call (OK or the error)."""
    try:
        dataprep_pb2_grpc.DataPrepServiceStub(channel).RegisterSource(GOOD, timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
def app_factory(tmp_path) -> Iterator:
    started: list[AppProcess] = []

    def start(**env: str) -> AppProcess:
        app = AppProcess(env, tmp_path / f"app{len(started)}.log")
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def write_tokens(path: Path, *tokens: str) -> None:
    """Replace the file the way a Kubernetes Secret update does: new file, one rename."""
    tmp = path.with_suffix(".new")
    tmp.write_text("# bearer tokens, one per line\n\n" + "\n".join(tokens) + "\n")
    os.replace(tmp, path)


# --- bearer tokens -----------------------------------------------------------------


def list_services(channel: grpc.Channel) -> set[str]:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    reply = next(reflection.ServerReflectionInfo(iter([request]), timeout=10))
    return {s.name for s in reply.list_services_response.service}


def test_roles_and_service_scopes_are_checked_per_method_and_audited(app_factory, tmp_path):
    tokens = tmp_path / "tokens"
    write_tokens(
        tokens,
        "labeller-token feedback alice",
        "operator-token operator bob",
        "trainer-token operator ci services=trainer",
        "typo-token superuser mallory",  # unknown role: skipped, never admin
    )
    app = app_factory(RLHF_GRPC__AUTH_ENABLED="true", RLHF_GRPC__AUTH_TOKENS_FILE=str(tokens))
    stub = dataprep_pb2_grpc.DataPrepServiceStub
    with make_channel(app.target, token="labeller-token") as labeller:
        with pytest.raises(grpc.RpcError) as refused:
            stub(labeller).RegisterSource(GOOD, timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "role 'feedback' may not call RegisterSource (needs 'operator')" in (
            refused.value.details()
        )
        # Reading is allowed (the handler answers; here NOT_FOUND for an unknown run).
        with pytest.raises(grpc.RpcError) as read:
            stub(labeller).GetRun(dataprep_pb2.GetRunRequest(run_id="ghost"), timeout=10)
        assert read.value.code() != grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as reflect:
            list_services(labeller)
        assert reflect.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with make_channel(app.target, token="operator-token") as operator:
        assert register(operator) == grpc.StatusCode.OK
    with make_channel(app.target, token="trainer-token") as scoped:
        assert register(scoped) == grpc.StatusCode.PERMISSION_DENIED
    with make_channel(app.target, token="typo-token") as typo:
        assert register(typo) == grpc.StatusCode.UNAUTHENTICATED
    log = app.log()
    assert '"principal": "alice"' in log and '"allowed": false' in log
    assert '"principal": "bob"' in log and '"resource": "name=sst2"' in log
    assert "not valid for the dataprep service" in log


def test_a_malformed_request_body_is_invalid_argument(app_factory):
    app = app_factory()
    with make_channel(app.target) as channel:
        call = channel.unary_unary(
            "/rlhf.v1.DataPrepService/RegisterSource",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        with pytest.raises(grpc.RpcError) as garbage:
            call(b"\xff\xff\xff\xff garbage", timeout=10)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert garbage.value.details().startswith("request: malformed request body")


def test_auth_rejects_missing_and_bad_tokens_while_health_stays_open(app_factory, tmp_path):
    tokens = tmp_path / "tokens"
    write_tokens(tokens, "s3cret-token-1", "other-token")
    app = app_factory(RLHF_GRPC__AUTH_ENABLED="true", RLHF_GRPC__AUTH_TOKENS_FILE=str(tokens))

    with make_channel(app.target) as anonymous:
        try:
            dataprep_pb2_grpc.DataPrepServiceStub(anonymous).RegisterSource(GOOD, timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error.details() == "missing bearer token"
        else:
            pytest.fail("a call without a token was accepted")
        health = health_pb2_grpc.HealthStub(anonymous)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
        with pytest.raises(grpc.RpcError) as hidden:  # reflection needs a token too
            list_services(anonymous)
        assert hidden.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with make_channel(app.target, token="s3cret-token-1") as admin:  # a bare token: admin
        assert "rlhf.v1.DataPrepService" in list_services(admin)

    for bad in ("s3cret-token", "s3cret-token-1x", "S3CRET-TOKEN-1", "#"):
        with make_channel(app.target, token=bad) as channel:
            assert register(channel) == grpc.StatusCode.UNAUTHENTICATED, bad
    with make_channel(app.target, token="s3cret-token-1") as channel:
        assert register(channel) == grpc.StatusCode.OK
    with make_channel(app.target, token="other-token") as channel:
        assert register(channel) == grpc.StatusCode.OK

    # Rotating the Secret takes effect without a restart.
    write_tokens(tokens, "rotated-token")
    with make_channel(app.target, token="s3cret-token-1") as channel:
        assert register(channel) == grpc.StatusCode.UNAUTHENTICATED
    with make_channel(app.target, token="rotated-token") as channel:
        assert register(channel) == grpc.StatusCode.OK


def run_app_expecting_failure(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tests.runtime.grpc_testapp"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "RLHF_GRPC__PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_auth_without_tokens_file_fails_start_naming_the_key(tmp_path):
    result = run_app_expecting_failure({"RLHF_GRPC__AUTH_ENABLED": "true"})
    assert result.returncode == 2
    assert "grpc.auth_tokens_file" in result.stderr
    result = run_app_expecting_failure(
        {
            "RLHF_GRPC__AUTH_ENABLED": "true",
            "RLHF_GRPC__AUTH_TOKENS_FILE": str(tmp_path / "missing"),
        }
    )
    assert result.returncode == 2
    assert "grpc.auth_tokens_file" in result.stderr and "missing" in result.stderr


# --- TLS and mTLS ------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def make_leaf(directory: Path, ca: str, name: str, extensions: str) -> None:
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
        "-out", f"{name}.crt", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command line tool is required (Debian package 'openssl')")
    directory = tmp_path_factory.mktemp("certs")
    make_ca(directory, "ca")
    make_ca(directory, "rogue-ca")
    make_leaf(
        directory,
        "ca",
        "server",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    make_leaf(directory, "ca", "client", "extendedKeyUsage=clientAuth\n")
    make_leaf(
        directory,
        "rogue-ca",
        "renewed-server",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    make_leaf(directory, "rogue-ca", "rogue-client", "extendedKeyUsage=clientAuth\n")
    return directory


def test_tls_serves_verified_clients_and_refuses_plaintext(app_factory, certs):
    app = app_factory(
        RLHF_GRPC__TLS_CERT_FILE=str(certs / "server.crt"),
        RLHF_GRPC__TLS_KEY_FILE=str(certs / "server.key"),
    )
    with make_channel(app.target, tls_ca=certs / "ca.crt") as channel:
        assert register(channel) == grpc.StatusCode.OK
    with make_channel(app.target) as plaintext:
        assert register(plaintext) == grpc.StatusCode.UNAVAILABLE
    with make_channel(app.target, tls_ca=certs / "rogue-ca.crt") as wrong_ca:
        assert register(wrong_ca) == grpc.StatusCode.UNAVAILABLE


def test_rotated_server_certificate_is_used_without_restart(app_factory, certs, tmp_path):
    mounted = tmp_path / "tls"
    mounted.mkdir()
    shutil.copy(certs / "server.crt", mounted / "tls.crt")
    shutil.copy(certs / "server.key", mounted / "tls.key")
    app = app_factory(
        RLHF_GRPC__TLS_CERT_FILE=str(mounted / "tls.crt"),
        RLHF_GRPC__TLS_KEY_FILE=str(mounted / "tls.key"),
    )
    with make_channel(app.target, tls_ca=certs / "ca.crt") as channel:
        assert register(channel) == grpc.StatusCode.OK
    # Renewal: a certificate from another CA replaces the files on disk.
    for suffix in ("key", "crt"):
        shutil.copy(certs / f"renewed-server.{suffix}", mounted / f"tls.{suffix}.new")
        os.replace(mounted / f"tls.{suffix}.new", mounted / f"tls.{suffix}")
    with make_channel(app.target, tls_ca=certs / "rogue-ca.crt") as channel:
        assert register(channel) == grpc.StatusCode.OK
    with make_channel(app.target, tls_ca=certs / "ca.crt") as channel:
        assert register(channel) == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_clients_without_a_certificate_from_the_ca(app_factory, certs):
    app = app_factory(
        RLHF_GRPC__TLS_CERT_FILE=str(certs / "server.crt"),
        RLHF_GRPC__TLS_KEY_FILE=str(certs / "server.key"),
        RLHF_GRPC__TLS_CLIENT_CA_FILE=str(certs / "ca.crt"),
    )
    with make_channel(app.target, tls_ca=certs / "ca.crt") as no_cert:
        assert register(no_cert) == grpc.StatusCode.UNAVAILABLE
        health = health_pb2_grpc.HealthStub(no_cert)
        with pytest.raises(grpc.RpcError):  # refused at the handshake: nothing answers
            health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    rogue = {"client_cert": certs / "rogue-client.crt", "client_key": certs / "rogue-client.key"}
    with make_channel(app.target, tls_ca=certs / "ca.crt", **rogue) as rogue_channel:
        assert register(rogue_channel) == grpc.StatusCode.UNAVAILABLE
    client = {"client_cert": certs / "client.crt", "client_key": certs / "client.key"}
    with make_channel(app.target, tls_ca=certs / "ca.crt", **client) as channel:
        assert register(channel) == grpc.StatusCode.OK
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING


def test_tls_key_without_certificate_fails_start_naming_the_key(certs):
    result = run_app_expecting_failure({"RLHF_GRPC__TLS_KEY_FILE": str(certs / "server.key")})
    assert result.returncode == 2
    assert "grpc.tls_cert_file" in result.stderr
