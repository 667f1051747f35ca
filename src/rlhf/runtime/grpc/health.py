"""`grpc.health.v1.Health` for asyncio servers, with a shutdown that ends Watch streams.

The reference servicer keeps Watch streams open forever, so a graceful stop waits
the whole grace period for them. Here, entering shutdown sends NOT_SERVING to every
watcher and then ends its stream, so the server drains as soon as the application
calls are done.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlhf.runtime import metrics

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

SERVICE_SERVING = metrics.gauge(
    "rlhf_service_serving",
    "1 while the gRPC health status of a service is SERVING, else 0 (service: the full "
    "gRPC service name, e.g. rlhf.v1.TrainerService).",
    ("service",),
)


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Per-service status; "" is the whole server."""

    def __init__(self) -> None:
        self._status: dict[str, int] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._shutting_down = False

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def status(self, service: str = "") -> int | None:
        return self._status.get(service)

    async def set(self, service: str, serving: bool) -> None:
        """Mark one service (or "" for the server) SERVING / NOT_SERVING.

        Ignored once shutdown started: nothing may come back to SERVING then.
        """
        if self._shutting_down:
            return
        async with self._changed:
            self._status[service] = SERVING if serving else NOT_SERVING
            self._changed.notify_all()
        if service:
            SERVICE_SERVING.labels(service).set(1 if serving else 0)

    async def enter_shutdown(self) -> None:
        """Every service NOT_SERVING for good; watchers get it and their streams end."""
        async with self._changed:
            self._shutting_down = True
            for service in self._status:
                self._status[service] = NOT_SERVING
                if service:
                    SERVICE_SERVING.labels(service).set(0)
            self._changed.notify_all()

    async def Check(self, request: health_pb2.HealthCheckRequest, context) -> object:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:
        last: int | None = None
        while True:
            status = self._status.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                # Written outside the lock, so a slow watcher never blocks `set`.
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if self._shutting_down:
                return
            async with self._changed:
                unchanged = self._status.get(request.service, SERVICE_UNKNOWN) == last
                if unchanged and not self._shutting_down:
                    await self._changed.wait()
