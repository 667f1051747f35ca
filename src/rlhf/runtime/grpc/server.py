"""The asyncio gRPC server every service runs: health, reflection, interceptors, TLS,
graceful shutdown.

    server = GrpcServer(settings.grpc, "dataprep")
    server.add_servicer(
        dataprep_pb2_grpc.add_DataPrepServiceServicer_to_server,
        DataPrep(...),
        "rlhf.v1.DataPrepService",
    )
    await server.serve_until_signal()

or, from a synchronous entry point, `run_server(settings, "dataprep", configure)`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rlhf.runtime.grpc.auth import TokenFile
from rlhf.runtime.grpc.health import HealthServicer
from rlhf.runtime.grpc.interceptors import (
    HEALTH_ONLY,
    OPEN_SERVICES,
    AuthLayer,
    DeadlineLayer,
    ErrorLayer,
    Layer,
    MetricsLayer,
    ServerPipeline,
    TracingLayer,
)
from rlhf.runtime.settings import ConfigError, GrpcSettings, Settings

log = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE = reflection.SERVICE_NAME

# Keepalive: the server pings idle connections every minute (so dead peers behind
# NATs and load balancers are noticed) and accepts client pings every 10 s or slower.
KEEPALIVE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]


def server_options(settings: GrpcSettings) -> list[tuple[str, int]]:
    """Channel arguments for the server: message size limits, keepalive, no port sharing."""
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        # gRPC enables SO_REUSEPORT by default on Linux, which lets a second server
        # "bind" a port already in use; a port clash must fail loudly instead.
        ("grpc.so_reuseport", 0),
        *KEEPALIVE_OPTIONS,
    ]


def _read(path: Path, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None


class CertificateFiles:
    """Server certificate, key and client CA read from files, re-read when they change.

    gRPC asks `fetch` before every new TLS handshake, so a certificate rotated on disk
    (cert-manager renewing a mounted Secret) is used for new connections without a
    restart. A half-written or unreadable set keeps the previous certificate.
    """

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.files = {"grpc.tls_cert_file": cert, "grpc.tls_key_file": key}
        if client_ca is not None:
            self.files["grpc.tls_client_ca_file"] = client_ca
        self._signature = self._stat()
        self.initial = self._configuration()

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        signature = []
        for key, path in self.files.items():
            try:
                stat = Path(path).stat()
            except OSError as exc:
                raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
            signature.append((stat.st_mtime_ns, stat.st_ino, stat.st_size))
        return tuple(signature)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        data = {key: _read(path, key) for key, path in self.files.items()}
        pair = (data["grpc.tls_key_file"], data["grpc.tls_cert_file"])
        return grpc.ssl_server_certificate_configuration(
            [pair], root_certificates=data.get("grpc.tls_client_ca_file")
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            signature = self._stat()
            if signature == self._signature:
                return None
            configuration = self._configuration()
        except ConfigError as exc:
            log.error("keeping the current TLS certificate: %s", exc)
            return None
        self._signature = signature
        log.info("TLS certificate files changed; new connections use the new ones")
        return configuration


def server_credentials(settings: GrpcSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings; None for plaintext.

    tls_cert_file + tls_key_file enable TLS; tls_client_ca_file on top requires every
    client to present a certificate signed by that CA (mTLS). The files are re-read
    when they change (see CertificateFiles).
    """
    cert, key = settings.tls_cert_file, settings.tls_key_file
    client_ca = settings.tls_client_ca_file
    if cert is None and key is None and client_ca is None:
        return None
    if cert is None:
        raise ConfigError("grpc.tls_cert_file: required when TLS or mTLS options are set")
    if key is None:
        raise ConfigError("grpc.tls_key_file: required with grpc.tls_cert_file")
    files = CertificateFiles(cert, key, client_ca)
    return grpc.dynamic_ssl_server_credentials(
        files.initial, files.fetch, require_client_authentication=client_ca is not None
    )


def _is_generated_stub(method: Any) -> bool:
    """True for the "not implemented" default the generated *Servicer base class has."""
    owner = getattr(getattr(method, "__func__", None), "__qualname__", "")
    module = getattr(method, "__module__", "") or ""
    return module.endswith("_pb2_grpc") and owner.endswith("Servicer." + method.__name__)


def _check_async(servicer: object, service_full_name: str) -> None:
    """Fail at registration (not at the first call) when a handler is not async."""
    try:
        service = descriptor_pool.Default().FindServiceByName(service_full_name)
    except KeyError:
        raise ValueError(
            f"unknown gRPC service {service_full_name!r}; import its *_pb2 module first"
        ) from None
    for method in service.methods:
        handler = getattr(servicer, method.name, None)
        if handler is None or _is_generated_stub(handler):
            continue  # the generated base answers UNIMPLEMENTED
        if inspect.iscoroutinefunction(handler):
            continue
        if method.server_streaming and inspect.isasyncgenfunction(handler):
            continue
        kind = "`async def` (or an async generator)" if method.server_streaming else "`async def`"
        raise TypeError(f"{type(servicer).__name__}.{method.name} must be {kind}")


class GrpcServer:
    """A `grpc.aio` server with the platform's standard equipment.

    Registers grpc.health.v1 (each added service plus "" for the whole server) and
    server reflection, and wraps every application call in the interceptor pipeline:
    Prometheus metrics, an OpenTelemetry span, bearer-token auth when
    `settings.auth_enabled`, deadlines and error mapping (see interceptors.py).
    Handlers must be `async def` (or async generators for server streaming).
    """

    def __init__(
        self,
        settings: GrpcSettings,
        service_name: str,
        *,
        extra_interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.settings = settings
        self.service_name = service_name
        self.health = HealthServicer()
        self.port: int | None = None
        self._registrations: list[tuple[Callable[[Any, Any], None], object, str, bool]] = []
        self._shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        self._extra_interceptors = list(extra_interceptors)
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None

        # Fail at construction on bad auth/TLS settings, naming the key.
        self._credentials = server_credentials(settings)
        self._layers: list[Layer] = [MetricsLayer(), TracingLayer(service_name)]
        if settings.auth_enabled:
            if settings.auth_tokens_file is None:
                raise ConfigError("grpc.auth_tokens_file: required when grpc.auth_enabled is true")
            try:
                tokens = TokenFile(settings.auth_tokens_file)
            except OSError as exc:
                raise ConfigError(f"grpc.auth_tokens_file: {exc}") from None
            self._layers.append(AuthLayer(tokens))
        self._layers += [DeadlineLayer(settings.default_deadline_s), ErrorLayer()]

    @property
    def services(self) -> list[str]:
        """Full names of the application services added so far."""
        return [name for _, _, name, _ in self._registrations]

    def add_servicer(
        self,
        add_fn: Callable[[Any, Any], None],
        servicer: object,
        service_full_name: str,
        *,
        serving: bool = True,
    ) -> None:
        """Register a servicer, e.g. (add_DataPrepServiceServicer_to_server, impl,
        "rlhf.v1.DataPrepService"). `serving=False` starts its health at NOT_SERVING
        until `set_serving(name, True)` (for a service that warms up a model first)."""
        if self._server is not None:
            raise RuntimeError("add_servicer must be called before start()")
        _check_async(servicer, service_full_name)
        self._registrations.append((add_fn, servicer, service_full_name, serving))

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `await hook()` after the server drained (stop consumers, flush, close)."""
        self._shutdown_hooks.append(hook)

    async def set_serving(self, service_full_name: str, serving: bool) -> None:
        """Report one service healthy or not (no effect once shutdown started)."""
        await self.health.set(service_full_name, serving)

    async def start(self) -> int:
        """Bind, register health and reflection, start serving; returns the bound port."""
        if self._server is not None:
            raise RuntimeError("server already started")
        # With auth on, only health stays open (probes); reflection needs a token too.
        open_services = HEALTH_ONLY if self.settings.auth_enabled else OPEN_SERVICES
        pipeline = ServerPipeline(self._layers, open_services)
        server = grpc.aio.server(
            interceptors=[pipeline, *self._extra_interceptors],
            options=server_options(self.settings),
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
        )
        for add_fn, servicer, _name, _serving in self._registrations:
            add_fn(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*self.services, HEALTH_SERVICE, REFLECTION_SERVICE], server
        )
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            if self._credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self._credentials)
        except RuntimeError as exc:
            raise ConfigError(f"grpc.port: cannot bind {address}: {exc}") from None
        if port == 0:
            raise ConfigError(f"grpc.port: cannot bind {address}")
        for _, _, name, serving in self._registrations:
            await self.health.set(name, serving)
        await server.start()
        self._server, self.port = server, port
        tls = (
            "mTLS" if self.settings.tls_client_ca_file else "TLS" if self._credentials else "plain"
        )
        log.info(
            "%s serving %s on %s:%d (%s, auth %s)",
            self.service_name,
            ", ".join(self.services) or "no services",
            self.settings.host,
            port,
            tls,
            "on" if self.settings.auth_enabled else "off",
        )
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: health NOT_SERVING everywhere, refuse new calls, let in-flight
        calls finish for `grace` seconds (default settings.shutdown_grace_s), cancel the
        rest, then run the shutdown hooks. Safe to call twice."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        grace = self.settings.shutdown_grace_s if grace is None else grace
        await self.health.enter_shutdown()
        if self._server is not None:
            # Let Watch streams send NOT_SERVING before new calls are refused.
            await asyncio.sleep(0)
            await self._server.stop(grace)
        for hook in reversed(self._shutdown_hooks):
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook %r failed", hook)
        log.info("%s stopped", self.service_name)

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def serve_until_signal(
        self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Start (if needed), serve until SIGTERM/SIGINT, then stop gracefully.

        A second signal during the drain cancels the calls still running and stops now.
        """
        if self._server is None:
            await self.start()
        loop = asyncio.get_running_loop()
        received = asyncio.Event()
        forced: list[asyncio.Task[None]] = []

        def on_signal() -> None:
            if not received.is_set():
                received.set()
            elif self._server is not None and not forced:
                log.warning("%s: second signal, stopping without draining", self.service_name)
                forced.append(asyncio.create_task(self._server.stop(0)))

        for sig in signals:
            loop.add_signal_handler(sig, on_signal)
        try:
            terminated = asyncio.create_task(self.wait_for_termination())
            signalled = asyncio.create_task(received.wait())
            await asyncio.wait({terminated, signalled}, return_when=asyncio.FIRST_COMPLETED)
            signalled.cancel()
            if received.is_set():
                log.info("%s: signal received, draining", self.service_name)
            await self.stop()
            terminated.cancel()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)


Configure = Callable[[GrpcServer], Awaitable[None] | None]


def run_server(
    settings: Settings,
    service_name: str,
    configure: Configure,
    *,
    on_ready: Callable[[GrpcServer], None] | None = None,
) -> int:
    """Entry-point helper: logging, tracing and metrics from `settings`, then serve.

    `configure(server)` (sync or async, run inside the event loop) adds servicers and
    shutdown hooks; `on_ready(server)` runs once the port is bound. Returns the process
    exit code: 0 after a graceful stop, 2 for a configuration error.
    """
    from rlhf.runtime.logging import configure_logging
    from rlhf.runtime.metrics import start_metrics_server
    from rlhf.runtime.telemetry import configure_tracing

    telemetry = settings.telemetry
    configure_logging(telemetry.log_level, telemetry.log_format)
    explicit = "service_name" in telemetry.model_fields_set
    configure_tracing(
        telemetry.service_name if explicit else service_name, telemetry.traces_exporter
    )

    async def main() -> None:
        server = GrpcServer(settings.grpc, service_name)
        result = configure(server)
        if inspect.isawaitable(result):
            await result
        await server.start()
        if telemetry.metrics_port:
            port = start_metrics_server(telemetry.metrics_port)
            log.info("%s metrics on :%d/metrics", service_name, port)
        if on_ready is not None:
            on_ready(server)
        await server.serve_until_signal()

    try:
        asyncio.run(main())
    except ConfigError as exc:
        log.error("%s: configuration error: %s", service_name, exc)
        return 2
    return 0
