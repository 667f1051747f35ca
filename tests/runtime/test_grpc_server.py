"""The gRPC scaffolding end to end: the test app runs as a real subprocess (see
grpc_testapp.py) and is probed with ordinary clients."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from rlhf.runtime.grpc import make_channel
from rlhf.runtime.ports import free_port
from rlhf.v1 import dataprep_pb2, dataprep_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from tests.runtime.grpc_testapp import DATAPREP, TRAINER, AppProcess

MAX_MESSAGE_BYTES = 64 * 1024


def start_app(tmp_path: Path, **env: str) -> AppProcess:
    return AppProcess(
        {
            "RLHF_TELEMETRY__METRICS_PORT": str(free_port()),
            "RLHF_GRPC__MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
            **env,
        },
        tmp_path / "app.log",
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[AppProcess]:
    process = start_app(tmp_path_factory.mktemp("grpc-app"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def channel(app) -> Iterator[grpc.Channel]:
    with make_channel(app.target) as ch:
        yield ch


def metrics_text(app: AppProcess) -> str:
    port = int(app.env["RLHF_TELEMETRY__METRICS_PORT"])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as excinfo:
        fn(*args, **kwargs)
    return excinfo.value


# --- health and reflection ---------------------------------------------------------


def test_health_check_serving_for_server_and_each_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", DATAPREP, TRAINER):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    error = rpc_error(health.Check, health_pb2.HealthCheckRequest(service="nope.Service"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services_and_serves_their_descriptors(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=DATAPREP),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {DATAPREP, TRAINER, "grpc.health.v1.Health"} <= names
    assert "grpc.reflection.v1alpha.ServerReflection" in names
    files = described.file_descriptor_response.file_descriptor_proto
    assert files, described
    from google.protobuf import descriptor_pb2

    first = descriptor_pb2.FileDescriptorProto.FromString(files[0])
    assert first.name == "rlhf/v1/dataprep.proto"
    assert "DataPrepService" in [s.name for s in first.service]


# --- validation and error mapping --------------------------------------------------

R = dataprep_pb2.RegisterSourceRequest


@pytest.mark.parametrize(
    ("request_message", "field", "fragment"),
    [
        (R(), "name", "is required"),
        (R(name="ok", format="csv"), "uri", "is required"),
        (R(name="Bad_Name", uri="/d", format="csv"), "name", "must match"),
        (R(name="ok", uri="s3://bucket/x", format="csv"), "uri", "file:// URI"),
        (R(name="ok", uri="/d", format="xlsx"), "format", "must be one of"),
    ],
)
def test_bad_request_is_invalid_argument_naming_the_field(
    channel, request_message, field, fragment
):
    stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
    error = rpc_error(stub.RegisterSource, request_message, timeout=10)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}: ")
    assert fragment in error.details()


def test_valid_request_and_cross_field_rule(channel):
    stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
    good = R(name="sst2-train", uri="file:///data/sst2", format="sst2")
    assert stub.RegisterSource(good, timeout=10).name == "sst2-train"
    prepare = dataprep_pb2.PrepareDatasetRequest(
        source="sst2-train", task="classification", validation_fraction=0.6, test_fraction=0.5
    )
    error = rpc_error(stub.PrepareDataset, prepare, timeout=10)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("test_fraction: ")
    prepare.test_fraction = 0.1
    assert stub.PrepareDataset(prepare, timeout=10).run_id == "prepare-sst2-train"


def test_not_found_internal_and_unimplemented(channel):
    stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
    missing = rpc_error(stub.GetDataset, dataprep_pb2.GetDatasetRequest(name="nope"), timeout=10)
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in missing.details()

    boom = rpc_error(stub.GetRun, dataprep_pb2.GetRunRequest(run_id="boom"), timeout=10)
    assert boom.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in boom.details() and "RuntimeError" not in boom.details()
    assert re.fullmatch(r"internal error \(trace_id=[0-9a-f]{32}\)", boom.details())

    trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
    unimplemented = rpc_error(trainer.StartRun, trainer_pb2.StartRunRequest(), timeout=10)
    assert unimplemented.code() == grpc.StatusCode.UNIMPLEMENTED


def test_request_over_max_message_size_is_refused(channel):
    stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
    huge = R(name="x" * (MAX_MESSAGE_BYTES + 1), uri="/d", format="csv")
    error = rpc_error(stub.RegisterSource, huge, timeout=10)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- server streaming --------------------------------------------------------------


def test_streaming_handler_messages_validation_and_failure_midway(channel):
    stub = trainer_pb2_grpc.TrainerServiceStub(channel)  # WatchRun takes dataprep's GetRunRequest
    steps = [m.step for m in stub.WatchRun(dataprep_pb2.GetRunRequest(run_id="r1"), timeout=10)]
    assert steps == [0, 1, 2]

    invalid = rpc_error(lambda: list(stub.WatchRun(dataprep_pb2.GetRunRequest(), timeout=10)))
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.details() == "run_id: is required"

    received = []
    with pytest.raises(grpc.RpcError) as excinfo:
        for message in stub.WatchRun(dataprep_pb2.GetRunRequest(run_id="boom-after-1"), timeout=10):
            received.append(message.step)
    assert received == [0]
    assert excinfo.value.code() == grpc.StatusCode.INTERNAL


# --- deadlines ---------------------------------------------------------------------


def test_handler_sees_the_remaining_time_and_overrunning_calls_fail(channel):
    stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
    status = stub.GetRun(dataprep_pb2.GetRunRequest(run_id="sleep-0"), timeout=20)
    left = status.metrics["deadline_remaining_s"]
    assert 0 < left <= 21  # the client's 20 s, as seen by the server (rounded up)
    no_deadline = stub.GetRun(dataprep_pb2.GetRunRequest(run_id="sleep-0"))
    # A client without a deadline gets the server's default (grpc.default_deadline_s).
    assert 290 < no_deadline.metrics["deadline_remaining_s"] <= 300

    late = rpc_error(stub.GetRun, dataprep_pb2.GetRunRequest(run_id="sleep-30"), timeout=0.5)
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# --- tracing -----------------------------------------------------------------------


def test_server_span_joins_the_callers_trace_sync_and_aio(app, channel):
    tracer = TracerProvider().get_tracer("test")  # local provider: no global state touched
    stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
    with tracer.start_as_current_span("caller") as span:
        status = stub.GetRun(dataprep_pb2.GetRunRequest(run_id="sleep-0"), timeout=10)
    assert status.message == f"trace_id={span.get_span_context().trace_id:032x}"

    async def aio_call() -> tuple[str, int]:
        async with make_channel(app.target, aio=True) as aio_channel:
            aio_stub = dataprep_pb2_grpc.DataPrepServiceStub(aio_channel)
            with tracer.start_as_current_span("aio-caller") as aio_span:
                reply = await aio_stub.GetRun(dataprep_pb2.GetRunRequest(run_id="sleep-0"))
            return reply.message, aio_span.get_span_context().trace_id

    message, trace_id = asyncio.run(aio_call())
    assert message == f"trace_id={trace_id:032x}"


# --- metrics -----------------------------------------------------------------------


def test_prometheus_counts_requests_by_method_and_code(app, channel):
    stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
    for _ in range(3):
        rpc_error(stub.GetDataset, dataprep_pb2.GetDatasetRequest(), timeout=10)
    labels = (
        'grpc_code="INVALID_ARGUMENT",grpc_method="GetDataset",'
        'grpc_service="rlhf.v1.DataPrepService"'
    )
    pattern = re.compile(r"^grpc_server_handled_total\{" + re.escape(labels) + r"\} (\S+)$", re.M)

    def handled(text: str) -> float:
        match = pattern.search(text)
        return float(match.group(1)) if match else 0.0

    # The client sees the status as soon as the handler aborts; the server counts the
    # call a moment later, on its way out. Scrapes are eventually consistent, so poll.
    deadline = time.monotonic() + 10
    text = metrics_text(app)
    while handled(text) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        text = metrics_text(app)
    assert handled(text) >= 3, text
    assert 'grpc_server_handling_seconds_bucket{grpc_method="GetDataset"' in text
    assert "grpc.health.v1.Health" not in text  # probes stay out of request metrics


# --- graceful shutdown -------------------------------------------------------------


def in_flight(app: AppProcess) -> float:
    text = metrics_text(app)
    match = re.search(
        r'^grpc_server_in_flight\{grpc_service="rlhf.v1.DataPrepService"\} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else 0.0


def wait_until_in_flight(app: AppProcess) -> None:
    """Block until the server reports a DataPrep call in flight (polls /metrics)."""
    deadline = time.monotonic() + 30
    while in_flight(app) < 1:
        assert time.monotonic() < deadline, "the call never reached the server"
        time.sleep(0.05)


def test_sigterm_not_serving_drains_in_flight_calls_and_exits_zero(tmp_path):
    app = start_app(tmp_path, RLHF_GRPC__SHUTDOWN_GRACE_S="3")
    try:
        with make_channel(app.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=DATAPREP), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

            # A call that is still running when SIGTERM arrives must complete.
            stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
            slow: Future = stub.GetRun.future(
                dataprep_pb2.GetRunRequest(run_id="sleep-1.5"), timeout=30
            )
            wait_until_in_flight(app)

            app.terminate()
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert slow.result(timeout=10).state == 3  # RUN_STATE_SUCCEEDED, drained
            assert app.wait(timeout=5) == 0
    finally:
        app.stop()
    assert "signal received, draining" in app.log()


def test_second_sigterm_stops_without_waiting_for_the_grace_period(tmp_path):
    app = start_app(tmp_path, RLHF_GRPC__SHUTDOWN_GRACE_S="60")
    try:
        with make_channel(app.target) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=30
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
            stuck: Future = stub.GetRun.future(
                dataprep_pb2.GetRunRequest(run_id="sleep-50"), timeout=55
            )
            wait_until_in_flight(app)
            app.terminate()
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            app.terminate()
            assert app.wait(timeout=5) == 0
            assert stuck.exception(timeout=10).code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.CANCELLED,
            )
    finally:
        app.stop()
    assert "second signal, stopping without draining" in app.log()


def test_health_status_is_exported_as_a_metric():
    from rlhf.runtime.grpc.health import HealthServicer
    from rlhf.runtime.metrics import REGISTRY

    def serving() -> float | None:
        return REGISTRY.get_sample_value("rlhf_service_serving", {"service": "rlhf.v1.Probe"})

    async def main() -> list[float | None]:
        health = HealthServicer()
        seen = []
        for step in (True, False, True):
            await health.set("rlhf.v1.Probe", step)
            seen.append(serving())
        await health.enter_shutdown()
        return [*seen, serving()]

    assert asyncio.run(main()) == [1, 0, 1, 0]
