"""`rlhf kafka`: fetch and run the local single-node Kafka broker (KRaft)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command()
def provision(
    version: str = typer.Option(None, help="Kafka release (default: the tested one)."),
) -> None:
    """Resolve the broker's jars from Maven Central into the cache (RLHF_KAFKA_HOME)."""
    from rlhf.runtime.kafka_broker import DEFAULT_KAFKA_VERSION, KafkaBrokerError
    from rlhf.runtime.kafka_broker import provision as fetch

    try:
        root = fetch(version or DEFAULT_KAFKA_VERSION)
    except KafkaBrokerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    jars = len(list((root / "libs").glob("*.jar")))
    typer.echo(f"Kafka {version or DEFAULT_KAFKA_VERSION}: {jars} jars in {root / 'libs'}")


@app.command()
def start(
    port: int = typer.Option(9092, help="Client (PLAINTEXT) port on 127.0.0.1; 0 = free port."),
    data_dir: Path = typer.Option(
        None, help="Broker data; reused across restarts. Default: a temporary directory."
    ),
    version: str = typer.Option(None, help="Kafka release (default: the tested one)."),
    heap: str = typer.Option("512m", help="JVM heap (-Xmx/-Xms)."),
) -> None:
    """Run a broker in the foreground until Ctrl-C / SIGTERM; prints its bootstrap address."""
    from rlhf.runtime.kafka_broker import (
        DEFAULT_KAFKA_VERSION,
        KafkaBroker,
        KafkaBrokerConfig,
        KafkaBrokerError,
    )

    config = KafkaBrokerConfig(
        version=version or DEFAULT_KAFKA_VERSION, data_dir=data_dir, port=port, heap=heap
    )
    broker = KafkaBroker(config)
    try:
        broker.start()
    except KafkaBrokerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Kafka {broker.version} ready: KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            if not broker.running():
                typer.echo("error: the broker exited; see its logs in " + str(broker.data_dir))
                raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    typer.echo("Kafka stopped")
