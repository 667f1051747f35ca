"""Unit tests of the gRPC building blocks: validation helpers, the token file, metrics
and server construction errors (the end-to-end behaviour is in test_grpc_server.py)."""

from __future__ import annotations

import asyncio
import os
import urllib.request

import grpc
import pytest

from rlhf.runtime import metrics
from rlhf.runtime.grpc import (
    GrpcServer,
    RequestInvalid,
    TokenFile,
    check,
    check_in,
    check_match,
    check_range,
    require,
    server_credentials,
)
from rlhf.runtime.grpc.auth import bearer_token
from rlhf.runtime.settings import ConfigError, GrpcSettings
from rlhf.v1 import (
    common_pb2,
    dataprep_pb2,
    dataprep_pb2_grpc,
    inference_pb2,
    trainer_pb2_grpc,
)

# --- validation helpers ------------------------------------------------------------


def test_require_names_the_first_missing_field():
    request = dataprep_pb2.RegisterSourceRequest(name="sst2")
    require(request, "name")
    with pytest.raises(RequestInvalid) as excinfo:
        require(request, "name", "uri", "format")
    assert excinfo.value.field == "uri"
    assert str(excinfo.value) == "uri: is required"
    assert excinfo.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_require_handles_maps_repeated_nested_messages_and_zero():
    with pytest.raises(RequestInvalid, match="^columns: is required$"):
        require(dataprep_pb2.RegisterSourceRequest(), "columns")
    require(dataprep_pb2.RegisterSourceRequest(columns={"text": "review"}), "columns")

    with pytest.raises(RequestInvalid, match="^artifacts: is required$"):
        require(common_pb2.RunStatus(), "artifacts")
    status = common_pb2.RunStatus(artifacts=[common_pb2.ArtifactRef(uri="file:///x")])
    require(status, "artifacts")

    version = common_pb2.ModelVersion()
    with pytest.raises(RequestInvalid, match="^artifact: is required$"):
        require(version, "artifact")
    with pytest.raises(RequestInvalid, match="^artifact.uri: is required$"):
        require(version, "artifact.uri")
    version.artifact.uri = "file:///m"
    require(version, "artifact", "artifact.uri")

    with pytest.raises(RequestInvalid, match="^max_rows: is required$"):
        require(dataprep_pb2.PrepareDatasetRequest(), "max_rows")
    with pytest.raises(ValueError, match="no field 'nmae'"):
        require(dataprep_pb2.RegisterSourceRequest(), "nmae")


def test_check_helpers_messages():
    check(True, "x", "never raised")
    with pytest.raises(RequestInvalid, match="^temperature: must be >= 0"):
        check_range(-0.5, "temperature", ge=0, le=2)
    with pytest.raises(RequestInvalid, match="^top_p: must be <= 1"):
        check_range(1.5, "top_p", gt=0, le=1)
    check_range(1.0, "top_p", gt=0, le=1)
    with pytest.raises(RequestInvalid, match="^task: must be one of 'a', 'b' \\(got 'c'\\)$"):
        check_in("c", "task", ["a", "b"])
    with pytest.raises(RequestInvalid, match="^name: must match"):
        check_match("sst2 train", "name", r"[a-z0-9-]+")
    check_match("sst2-train", "name", r"[a-z0-9-]+")
    with pytest.raises(RequestInvalid, match="^messages: at least one message$"):
        check(len(inference_pb2.ChatRequest().messages) > 0, "messages", "at least one message")


# --- bearer tokens -----------------------------------------------------------------


def test_token_file_ignores_comments_and_follows_changes(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# comment\n\n  alpha  \nbeta\n")
    tokens = TokenFile(path)
    assert tokens.is_valid("alpha") and tokens.is_valid("beta")
    assert (
        not tokens.is_valid("# comment") and not tokens.is_valid("") and not tokens.is_valid("alph")
    )

    replacement = tmp_path / "tokens.new"
    replacement.write_text("gamma\n")
    os.replace(replacement, path)
    assert tokens.is_valid("gamma") and not tokens.is_valid("alpha")

    path.unlink()  # fail closed while the file is gone
    assert not tokens.is_valid("gamma")
    path.write_text("delta\n")
    assert tokens.is_valid("delta")


def test_token_file_must_exist_at_start(tmp_path):
    with pytest.raises(FileNotFoundError, match="auth tokens file"):
        TokenFile(tmp_path / "missing")


def test_bearer_token_parsing():
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    assert bearer_token((("x-other", "1"), ("authorization", "bearer  abc "))) == "abc"
    assert bearer_token((("authorization", b"Bearer abc"),)) == "abc"
    assert bearer_token((("authorization", "Basic dXNlcjpwdw=="),)) is None
    assert bearer_token((("authorization", "Bearer "),)) is None
    assert bearer_token(None) is None


# --- metrics -----------------------------------------------------------------------


def test_metrics_are_get_or_create_and_served_over_http():
    first = metrics.counter("rlhf_test_events", "Events seen by the test.", ("kind",))
    assert metrics.counter("rlhf_test_events", "Events seen by the test.", ("kind",)) is first
    with pytest.raises(ValueError, match="already registered"):
        metrics.gauge("rlhf_test_events", "Same name, other kind.")
    first.labels("x").inc(2)
    port = metrics.start_metrics_server(0, addr="127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'rlhf_test_events_total{kind="x"} 2.0' in text
    assert "process_cpu_seconds_total" in text


# --- server construction -----------------------------------------------------------


def test_tls_settings_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="grpc.tls_cert_file"):
        server_credentials(GrpcSettings(tls_key_file=tmp_path / "k"))
    with pytest.raises(ConfigError, match="grpc.tls_key_file"):
        server_credentials(GrpcSettings(tls_cert_file=tmp_path / "c"))
    (tmp_path / "k").write_text("key")
    with pytest.raises(ConfigError, match="grpc.tls_cert_file: cannot read .*/c: No such file"):
        server_credentials(GrpcSettings(tls_cert_file=tmp_path / "c", tls_key_file=tmp_path / "k"))
    assert server_credentials(GrpcSettings()) is None


def test_auth_without_tokens_file_is_a_config_error():
    with pytest.raises(ConfigError, match="grpc.auth_tokens_file"):
        GrpcServer(GrpcSettings(auth_enabled=True), "test")


class SyncDataPrep(dataprep_pb2_grpc.DataPrepServiceServicer):
    def GetDataset(self, request, context):  # not async: must be refused at registration
        return dataprep_pb2.Dataset()


class AsyncDataPrep(dataprep_pb2_grpc.DataPrepServiceServicer):
    async def GetDataset(self, request, context):
        return dataprep_pb2.Dataset(name=request.name)


def test_add_servicer_checks_handlers_and_service_name():
    server = GrpcServer(GrpcSettings(port=0), "test")
    add = dataprep_pb2_grpc.add_DataPrepServiceServicer_to_server
    with pytest.raises(TypeError, match="SyncDataPrep.GetDataset must be `async def`"):
        server.add_servicer(add, SyncDataPrep(), "rlhf.v1.DataPrepService")
    with pytest.raises(ValueError, match="unknown gRPC service 'rlhf.v1.NoSuchService'"):
        server.add_servicer(add, AsyncDataPrep(), "rlhf.v1.NoSuchService")
    server.add_servicer(add, AsyncDataPrep(), "rlhf.v1.DataPrepService")
    # Unimplemented methods of the generated base class are fine (they answer UNIMPLEMENTED).
    server.add_servicer(
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
        trainer_pb2_grpc.TrainerServiceServicer(),
        "rlhf.v1.TrainerService",
    )
    assert server.services == ["rlhf.v1.DataPrepService", "rlhf.v1.TrainerService"]


def test_port_in_use_fails_instead_of_sharing_it():
    async def scenario() -> None:
        first = GrpcServer(GrpcSettings(port=0), "first")
        port = await first.start()
        try:
            second = GrpcServer(GrpcSettings(port=port), "second")
            with pytest.raises(ConfigError, match="grpc.port: cannot bind"):
                await second.start()
        finally:
            await first.stop(grace=0)

    asyncio.run(scenario())
