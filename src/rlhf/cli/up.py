"""`rlhf up`: the dev stack, all five services as local processes against Kafka."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer


def up(
    bootstrap_servers: str = typer.Option(
        "", envvar="KAFKA_BOOTSTRAP_SERVERS", help="existing Kafka; empty = start a local broker"
    ),
    artifact_dir: Path = typer.Option(Path("artifacts/dev"), help="shared artifact directory"),
    base_port: int = typer.Option(50051, help="first gRPC port; the services take five"),
) -> None:
    """Start the services, print their addresses, stop them all on Ctrl-C / SIGTERM."""
    from rlhf.devstack import SERVICES, DevStack

    broker = None
    if not bootstrap_servers:
        from rlhf.runtime.kafka_broker import KafkaBroker

        broker = KafkaBroker().start()
        bootstrap_servers = broker.bootstrap_servers
        typer.echo(f"kafka {broker.version} on {bootstrap_servers}")
    stack = DevStack(bootstrap_servers, artifact_dir, artifact_dir / "logs", base_port=base_port)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        for name in SERVICES:
            stack.start(name)
            typer.echo(f"{name:10s} {stack.address(name)}  log: {stack.log_dir / name}.log")
        typer.echo("all services SERVING; Ctrl-C stops them")
        while not stopping.wait(1.0):
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    typer.echo(f"{name} exited with {proc.returncode}; stopping", err=True)
                    stopping.set()
    finally:
        stack.stop()
        if broker is not None:
            broker.stop()


app = up
