"""Server interceptors: metrics, tracing, auth, deadlines and error mapping.

Each concern is a small *layer*: an async context manager entered around every call
of an application method, for unary and streaming handlers alike. `ServerPipeline`
(one `grpc.aio.ServerInterceptor`) wraps each handler in the layers, outermost first:

    metrics -> tracing -> auth -> deadline -> errors -> handler

so the metrics and the span see the final status code of every call, including the
ones auth rejected. Health checks bypass the pipeline (they stay open for probes and
do not pollute the request metrics); reflection does too when auth is off, and needs
an admin token when it is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from rlhf.runtime import metrics
from rlhf.runtime.grpc import authz
from rlhf.runtime.grpc.auth import TokenFile, bearer_token
from rlhf.runtime.grpc.errors import DeadlineExceeded, RequestInvalid, ServiceError
from rlhf.runtime.telemetry import extract_context

log = logging.getLogger(__name__)

# Services that answer without a token and are left out of request metrics.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

#: With auth on, only health answers without a token (probes); reflection needs one.
HEALTH_ONLY = frozenset({"grpc.health.v1.Health"})

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class CallInfo:
    """What the layers know about one call before the handler runs."""

    method: str  # "/rlhf.v1.DataPrepService/RegisterSource"
    service: str  # "rlhf.v1.DataPrepService"
    name: str  # "RegisterSource"
    metadata: Metadata
    server_streaming: bool

    @classmethod
    def parse(cls, details: grpc.HandlerCallDetails, server_streaming: bool) -> CallInfo:
        service, _, name = details.method.lstrip("/").rpartition("/")
        metadata = tuple(details.invocation_metadata or ())
        return cls(details.method, service, name, metadata, server_streaming)


class Layer(Protocol):
    """One concern applied around every application call."""

    def around(
        self, call: CallInfo, context: grpc.aio.ServicerContext
    ) -> contextlib.AbstractAsyncContextManager[None]: ...


# --- deadlines ---------------------------------------------------------------------

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "rlhf_grpc_deadline", default=None
)


def remaining_time() -> float | None:
    """Seconds left before the current call's deadline; None without a deadline.

    Works anywhere inside a handler (and the code it awaits), without the context.
    """
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def check_deadline() -> None:
    """Raise DeadlineExceeded once the current call's deadline has passed (for loops)."""
    left = remaining_time()
    if left is not None and left <= 0:
        raise DeadlineExceeded("deadline exceeded")


class DeadlineLayer:
    """Publishes the deadline to `remaining_time()` and stops a unary handler at it.

    A call that arrives already expired is refused with DEADLINE_EXCEEDED. A unary
    handler still running at the deadline is cancelled and answers DEADLINE_EXCEEDED;
    a streaming handler is stopped before the next message once the deadline passed.
    """

    def __init__(self, default_s: float | None = None) -> None:
        self.default_s = default_s  # for unary calls whose client set no deadline

    @contextlib.asynccontextmanager
    async def around(self, call: CallInfo, context: grpc.aio.ServicerContext):
        left = context.time_remaining()
        if left is None and not call.server_streaming:
            left = self.default_s
        if left is None:
            yield
            return
        if left <= 0:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        token = _deadline.set(time.monotonic() + left)
        try:
            if call.server_streaming:
                yield
            else:
                try:
                    async with asyncio.timeout(left):
                        yield
                except TimeoutError:
                    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        finally:
            _deadline.reset(token)


# --- errors ------------------------------------------------------------------------


class ErrorLayer:
    """Turns exceptions into status codes: ServiceError -> its code with its message,
    NotImplementedError -> UNIMPLEMENTED, anything else -> INTERNAL with a generic
    message and the traceback in the server log."""

    @contextlib.asynccontextmanager
    async def around(self, call: CallInfo, context: grpc.aio.ServicerContext):
        try:
            yield
        except ServiceError as exc:
            trailers = ()
            if exc.retry_after_s is not None:
                trailers = (("grpc-retry-pushback-ms", str(int(exc.retry_after_s * 1000))),)
            await context.abort(exc.code, exc.details, trailers)
        except grpc.aio.AbortError:
            raise  # the handler aborted itself; the status is already set
        except NotImplementedError:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{call.method} is not implemented")
        except Exception:
            trace_id = trace.get_current_span().get_span_context().trace_id
            log.exception("unhandled error in %s (trace_id=%032x)", call.method, trace_id)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (trace_id={trace_id:032x})"
            )


# --- auth --------------------------------------------------------------------------


class AuthLayer:
    """Requires `authorization: Bearer <token>` with a token from the tokens file whose
    role and service scope allow the method (see authz.py); refusals are audited here,
    allowed calls once their request is parsed (with the resource it names)."""

    def __init__(self, tokens: TokenFile) -> None:
        self.tokens = tokens

    @contextlib.asynccontextmanager
    async def around(self, call: CallInfo, context: grpc.aio.ServicerContext):
        token = bearer_token(call.metadata)
        if token is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        principal = self.tokens.lookup(token)
        if principal is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        why = authz.refusal(principal, call.service, call.name)
        if why is not None:
            authz.audit(principal, call.method, False, why)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        reset = authz.current_principal.set(principal)
        try:
            yield
        finally:
            authz.current_principal.reset(reset)


# --- status of a finished call (for metrics and spans) -----------------------------


def final_code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    """The status code the client receives, judged from the context and the exception."""
    code = context.code()
    if exc is None:
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK
    if isinstance(exc, ServiceError):
        return exc.code
    if isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK:
        return code
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        left = context.time_remaining()
        if left is not None and left <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


# --- tracing -----------------------------------------------------------------------


class TracingLayer:
    """One SERVER span per call, child of the client's `traceparent` when it sent one."""

    def __init__(self, service_name: str) -> None:
        self.tracer = trace.get_tracer(f"rlhf.grpc.{service_name}")

    @contextlib.asynccontextmanager
    async def around(self, call: CallInfo, context: grpc.aio.ServicerContext):
        carrier = {k: v for k, v in call.metadata if isinstance(v, str)}
        attributes = {"rpc.system": "grpc", "rpc.service": call.service, "rpc.method": call.name}
        with self.tracer.start_as_current_span(
            f"{call.service}/{call.name}",
            context=extract_context(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            error: BaseException | None = None
            try:
                yield
            except BaseException as exc:
                error = exc
                raise
            finally:
                code = final_code(context, error)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code != grpc.StatusCode.OK:
                    span.set_status(Status(StatusCode.ERROR, code.name))


# --- metrics -----------------------------------------------------------------------


class MetricsLayer:
    """Prometheus: calls started/handled by method and code, latency, calls in flight.

    Names follow go-grpc-prometheus so the usual dashboards work.
    """

    def __init__(self) -> None:
        labels = ("grpc_service", "grpc_method")
        self.started = metrics.counter(
            "grpc_server_started", "RPCs started on the server.", (*labels, "grpc_type")
        )
        self.handled = metrics.counter(
            "grpc_server_handled", "RPCs completed on the server.", (*labels, "grpc_code")
        )
        self.latency = metrics.histogram(
            "grpc_server_handling_seconds", "Time from call start to status sent.", labels
        )
        self.in_flight = metrics.gauge(
            "grpc_server_in_flight", "RPCs being handled right now.", ("grpc_service",)
        )

    @contextlib.asynccontextmanager
    async def around(self, call: CallInfo, context: grpc.aio.ServicerContext):
        kind = "server_stream" if call.server_streaming else "unary"
        self.started.labels(call.service, call.name, kind).inc()
        in_flight = self.in_flight.labels(call.service)
        in_flight.inc()
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            in_flight.dec()
            self.latency.labels(call.service, call.name).observe(time.perf_counter() - start)
            code = final_code(context, error)
            self.handled.labels(call.service, call.name, code.name).inc()


# --- the interceptor ---------------------------------------------------------------


class ServerPipeline(grpc.aio.ServerInterceptor):
    """Wraps every application handler in `layers` (first = outermost)."""

    def __init__(self, layers: Sequence[Layer], open_services: frozenset[str] = OPEN_SERVICES):
        self.layers = list(layers)
        self.open_services = open_services

    @contextlib.asynccontextmanager
    async def _enter(self, call: CallInfo, context: grpc.aio.ServicerContext):
        async with contextlib.AsyncExitStack() as stack:
            for layer in self.layers:
                await stack.enter_async_context(layer.around(call, context))
            yield

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED
        call = CallInfo.parse(handler_call_details, handler.response_streaming)
        if call.service in self.open_services:
            return handler
        return self._wrap(handler, call)

    def _wrap(self, handler: grpc.RpcMethodHandler, call: CallInfo) -> grpc.RpcMethodHandler:
        # A unary request is parsed inside the layers, so a malformed body is answered
        # INVALID_ARGUMENT (grpc itself would say INTERNAL or UNKNOWN) and is parsed only
        # after auth passed.
        parse = handler.request_deserializer
        raw = {"request_deserializer": None, "response_serializer": handler.response_serializer}
        serializers = {
            "request_deserializer": parse,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            behavior = self._unary(handler.unary_unary, call, parse)
            return grpc.unary_unary_rpc_method_handler(behavior, **raw)
        if handler.unary_stream:
            behavior = self._streaming(handler.unary_stream, call, parse)
            return grpc.unary_stream_rpc_method_handler(behavior, **raw)
        if handler.stream_unary:
            behavior = self._unary(handler.stream_unary, call, None)
            return grpc.stream_unary_rpc_method_handler(behavior, **serializers)
        behavior = self._streaming(handler.stream_stream, call, None)
        return grpc.stream_stream_rpc_method_handler(behavior, **serializers)

    def _unary(
        self, behavior: Callable[..., Any], call: CallInfo, parse: Callable[[bytes], Any] | None
    ) -> Callable[..., Any]:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._enter(call, context):
                request = _parsed(request, parse, call)
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result

        return unary

    def _streaming(
        self, behavior: Callable[..., Any], call: CallInfo, parse: Callable[[bytes], Any] | None
    ) -> Callable[..., Any]:
        if not inspect.isasyncgenfunction(behavior):
            # `context.write` style (or the generated "not implemented" stub).
            return self._unary(behavior, call, parse)

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._enter(call, context):
                request = _parsed(request, parse, call)
                async for message in behavior(request, context):
                    check_deadline()
                    yield message

        return streaming


def _parsed(request: Any, parse: Callable[[bytes], Any] | None, call: CallInfo) -> Any:
    """The request message from its wire bytes (RequestInvalid when they are not one),
    audited against the caller when auth is on."""
    if parse is not None and isinstance(request, bytes):
        try:
            request = parse(request)
        except Exception:
            raise RequestInvalid(
                "request", f"malformed request body: not a valid {call.name} request"
            ) from None
    principal = authz.current_principal.get()
    if principal is not None:
        authz.audit(principal, call.method, True, resource=authz.resource_of(request))
    return request
