"""Client channels with tracing, bearer tokens and TLS/mTLS, sync or asyncio.

    with make_channel("dataprep:50051", token=os.environ["RLHF_TOKEN"]) as channel:
        stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
        stub.GetDataset(dataprep_pb2.GetDatasetRequest(name="sst2"), timeout=5)

Every call carries the caller's trace context (`traceparent`), so the server span,
and the Kafka events the server publishes while handling the call, join the caller's
trace. Unary-unary calls also get a CLIENT span of their own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from rlhf.runtime.telemetry import inject_context

# Clients ping idle connections every 30 s (the server accepts one every 10 s).
CLIENT_KEEPALIVE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# gRPC service config of every client channel (https://grpc.io/docs/guides/retry/):
# - retry UNAVAILABLE (a replica restarting, a connection reset) and RESOURCE_EXHAUSTED
#   (a full run queue) with exponential backoff; when the server sends a retry hint
#   (`grpc-retry-pushback-ms`, see errors.ServiceError) the client waits exactly that.
#   Every RPC that changes state carries an idempotency key (request_id, feedback_id),
#   so a retry cannot do anything twice.
# - round_robin over every address the target resolves to: with `dns:///` and a
#   headless Service, calls spread over the replicas instead of pinning one connection.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.2s",
    "maxBackoff": "5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
}
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{"name": [{"service": ""}], "retryPolicy": RETRY_POLICY}],
}

_tracer = trace.get_tracer("rlhf.grpc.client")


def _outgoing_metadata(
    metadata: Sequence[tuple[str, str | bytes]] | None, token: str | None
) -> list[tuple[str, str | bytes]]:
    """The call's metadata plus traceparent/tracestate and the bearer token."""
    entries = [(k, v) for k, v in (metadata or ()) if k not in ("traceparent", "tracestate")]
    carrier: dict[str, str] = {}
    inject_context(carrier)
    entries += list(carrier.items())
    if token is not None and not any(k == "authorization" for k, _ in entries):
        entries.append(("authorization", f"Bearer {token}"))
    return entries


def _start_client_span(method: str | bytes) -> trace.Span:
    """A CLIENT span for one unary call; ended by `_end_client_span` when it completes."""
    name = (method.decode() if isinstance(method, bytes) else method).lstrip("/")
    service, _, rpc = name.rpartition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
    return _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def _end_client_span(span: trace.Span, code: grpc.StatusCode | None) -> None:
    if code is not None:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code != grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


# --- synchronous channels ----------------------------------------------------------


class _SyncCallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


class SyncClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds trace context and the bearer token to every call of a sync channel."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token

    def _details(self, details: grpc.ClientCallDetails) -> _SyncCallDetails:
        return _SyncCallDetails(
            details.method,
            details.timeout,
            _outgoing_metadata(details.metadata, self.token),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable, client_call_details, request):
        span = _start_client_span(client_call_details.method)
        with trace.use_span(span, end_on_exit=False):
            outcome = continuation(self._details(client_call_details), request)
        outcome.add_done_callback(lambda done: _end_client_span(span, done.code()))
        return outcome

    def intercept_unary_stream(self, continuation: Callable, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation: Callable, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable, client_call_details, request_iterator
    ):
        return continuation(self._details(client_call_details), request_iterator)


# --- asyncio channels --------------------------------------------------------------


class _AioBase:
    def __init__(self, token: str | None = None) -> None:
        self.token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_outgoing_metadata(tuple(details.metadata or ()), self.token)),
            details.credentials,
            details.wait_for_ready,
        )


class AioUnaryUnaryInterceptor(_AioBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        span = _start_client_span(client_call_details.method)
        with trace.use_span(span, end_on_exit=False):
            call = await continuation(self._details(client_call_details), request)
        call.add_done_callback(lambda done: _keep(asyncio.ensure_future(_end_aio_span(span, done))))
        return call


_pending: set[asyncio.Future[None]] = set()


def _keep(task: asyncio.Future[None]) -> None:
    """Hold a reference until the task finished (the loop keeps only weak ones)."""
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def _end_aio_span(span: trace.Span, call: grpc.aio.Call) -> None:
    # aio calls expose their status only through a coroutine; the call is done here.
    _end_client_span(span, await call.code())


class AioUnaryStreamInterceptor(_AioBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


class AioStreamUnaryInterceptor(_AioBase, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(self._details(client_call_details), request_iterator)


class AioStreamStreamInterceptor(_AioBase, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(self._details(client_call_details), request_iterator)


def aio_interceptors(token: str | None = None) -> list[grpc.aio.ClientInterceptor]:
    return [
        AioUnaryUnaryInterceptor(token),
        AioUnaryStreamInterceptor(token),
        AioStreamUnaryInterceptor(token),
        AioStreamStreamInterceptor(token),
    ]


# --- the factory -------------------------------------------------------------------


def _read(path: Path | str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


def make_channel(
    target: str,
    token: str | None = None,
    tls_ca: Path | str | None = None,
    client_cert: Path | str | None = None,
    client_key: Path | str | None = None,
    aio: bool = False,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel | grpc.aio.Channel:
    """A channel to `target` ("host:port") with tracing and, when given, a token and TLS.

    tls_ca: CA file that signed the server's certificate (enables TLS).
    client_cert / client_key: this client's certificate for mTLS (both or neither).
    server_name: expected name in the server certificate when it differs from the
    target host (sets grpc.ssl_target_name_override).
    The token travels as `authorization: Bearer <token>`; without TLS it is sent in
    clear text, which is only fit for loopback and tests.
    """
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key must be given together")
    channel_options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        *CLIENT_KEEPALIVE_OPTIONS,
    ]
    if server_name is not None:
        channel_options.append(("grpc.ssl_target_name_override", server_name))
    channel_options += list(options)

    credentials = None
    if tls_ca is not None or client_cert is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls_ca, "tls_ca"),
            private_key=_read(client_key, "client_key"),
            certificate_chain=_read(client_cert, "client_cert"),
        )

    if aio:
        interceptors = aio_interceptors(token)
        if credentials is None:
            return grpc.aio.insecure_channel(target, channel_options, interceptors=interceptors)
        return grpc.aio.secure_channel(
            target, credentials, channel_options, interceptors=interceptors
        )
    if credentials is None:
        channel = grpc.insecure_channel(target, channel_options)
    else:
        channel = grpc.secure_channel(target, credentials, channel_options)
    return grpc.intercept_channel(channel, SyncClientInterceptor(token))
