"""Clients retry UNAVAILABLE and RESOURCE_EXHAUSTED, waiting out the server's retry
hint (`grpc-retry-pushback-ms`); a channel without the policy sees the error at once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from rlhf.runtime.grpc import make_channel
from rlhf.runtime.grpc.errors import ResourceExhausted, Unavailable
from rlhf.runtime.settings import GrpcSettings
from rlhf.v1 import dataprep_pb2, dataprep_pb2_grpc
from tests.grpc_thread import serving


class Flaky(dataprep_pb2_grpc.DataPrepServiceServicer):
    """GetDataset fails as its `name` says, a number of times, then answers."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}

    async def GetDataset(self, request, context):
        kind, _, rest = request.name.partition("-x")
        times = rest.split("-")[0]
        calls = self.calls.setdefault(request.name, [])
        calls.append(time.monotonic())
        if len(calls) <= int(times or 0):
            if kind == "busy":
                raise ResourceExhausted("queue full", retry_after_s=0.4)
            raise Unavailable("restarting")
        return dataprep_pb2.Dataset(name=request.name, version="v1")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Flaky]]:
    servicer = Flaky()

    def register(server) -> None:
        server.add_servicer(
            dataprep_pb2_grpc.add_DataPrepServiceServicer_to_server,
            servicer,
            "rlhf.v1.DataPrepService",
        )

    with serving(GrpcSettings(host="127.0.0.1", port=0), register, "retry-test") as port:
        yield f"127.0.0.1:{port}", servicer


def _get(channel: grpc.Channel, name: str) -> dataprep_pb2.Dataset:
    stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
    return stub.GetDataset(dataprep_pb2.GetDatasetRequest(name=name), timeout=20)


def test_unavailable_is_retried_with_backoff(served):
    target, servicer = served
    with make_channel(target) as channel:
        assert _get(channel, "restart-x2").version == "v1"
    assert len(servicer.calls["restart-x2"]) == 3
    with make_channel(target) as channel, pytest.raises(grpc.RpcError) as failed:
        _get(channel, "restart-x9")  # more failures than attempts: the last error shows
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(servicer.calls["restart-x9"]) == 4


def test_the_servers_retry_hint_is_waited_out(served):
    target, servicer = served
    with make_channel(target) as channel:
        assert _get(channel, "busy-x1").version == "v1"
    first, second = servicer.calls["busy-x1"]
    assert second - first >= 0.35  # the 0.4 s pushback, not the 0.2 s backoff


def test_a_channel_without_the_policy_sees_the_error_at_once(served):
    target, servicer = served
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as failed:
        _get(channel, "busy-x1-raw")
    assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(servicer.calls["busy-x1-raw"]) == 1
