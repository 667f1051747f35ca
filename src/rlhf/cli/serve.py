"""`rlhf serve <service>`: run one service as a gRPC server on the configured bus."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import typer

from rlhf.contract import SERVICES


def serve(
    # RLHF_SERVICE: set by services/Dockerfile, so each image's default command names it.
    service: str = typer.Argument(
        ..., envvar="RLHF_SERVICE", help=f"one of: {', '.join(SERVICES)}"
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML settings file"),
    port: int | None = typer.Option(None, help="gRPC port (overrides settings)"),
) -> None:
    """Run one of the platform's services until SIGTERM (graceful drain)."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    raise typer.Exit(run_service(service, config, port))


def run_service(service: str, config: Path | None = None, port: int | None = None) -> int:
    from rlhf.runtime.bus import create_bus
    from rlhf.runtime.grpc.server import run_server
    from rlhf.runtime.service import ServiceContext, exit_leaving_threads, watch_bus_health
    from rlhf.runtime.settings import ConfigError, Settings, load_settings

    module = importlib.import_module(f"rlhf.services.{service}.server")
    settings_cls = getattr(module, "SETTINGS_CLASS", Settings)  # a service may add sections
    try:
        settings = load_settings(settings_cls, config_file=config)
    except ConfigError as exc:
        typer.echo(f"rlhf serve {service}: {exc}", err=True)
        return 2
    if port is not None:
        settings.grpc.port = port
    bus = create_bus(settings, source=f"rlhf/{service}")
    holder: dict = {}

    async def configure(server) -> None:
        ctx = ServiceContext(service, settings, bus)
        holder["ctx"] = ctx
        result = module.register(server, ctx)
        if asyncio.iscoroutine(result):
            await result
        await asyncio.to_thread(bus.start)
        health = asyncio.get_running_loop().create_task(watch_bus_health(server, bus))

        async def close() -> None:
            health.cancel()
            # Bounded: runs get settings.run_shutdown_grace_s to stop, then are left
            # for resume even if a worker is stuck (see exit_leaving_threads below).
            holder["stuck"] = await asyncio.to_thread(ctx.close, True)
            await asyncio.to_thread(bus.close)

        server.on_shutdown(close)

    code = run_server(settings, f"rlhf-{service}", configure)
    if holder.get("stuck"):
        exit_leaving_threads(code)
    return code


app = serve
