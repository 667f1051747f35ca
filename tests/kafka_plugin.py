"""pytest plugin: the real Kafka broker for tests marked `kafka`.

`kafka_bootstrap` (session scope) returns a bootstrap address: KAFKA_BOOTSTRAP_SERVERS
when set (an existing cluster), else a single-node KRaft broker that
rlhf.runtime.kafka_broker provisions from Maven Central and starts once per session.
The broker version is printed in the terminal summary ("kafka broker: ...") and recorded
by test_kafka_broker.py as a test property, so every run shows what it tested against.
No mock broker ever stands in: if the broker cannot start, the tests error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass
class KafkaInfo:
    bootstrap_servers: str
    # "4.4.0" for the provisioned broker; for an external cluster, the API level that
    # kafka-python detects, e.g. "api 4.3" (brokers do not report their release).
    version: str
    origin: str  # "provisioned" or "KAFKA_BOOTSTRAP_SERVERS"


_INFO: KafkaInfo | None = None


def _external_version(bootstrap: str) -> str:
    from rlhf.runtime.bus.kafka import broker_api_version

    return broker_api_version(bootstrap)


@pytest.fixture(scope="session")
def kafka_info() -> Iterator[KafkaInfo]:
    global _INFO
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        _INFO = KafkaInfo(external, _external_version(external), "KAFKA_BOOTSTRAP_SERVERS")
        yield _INFO
        return
    from rlhf.runtime.kafka_broker import DEFAULT_KAFKA_VERSION, KafkaBroker, KafkaBrokerConfig

    version = os.environ.get("RLHF_KAFKA_VERSION", DEFAULT_KAFKA_VERSION)
    broker = KafkaBroker(KafkaBrokerConfig(version=version)).start()
    _INFO = KafkaInfo(broker.bootstrap_servers, broker.version, "provisioned")
    try:
        yield _INFO
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_info: KafkaInfo) -> str:
    """host:port of the real broker the `kafka` tests run against."""
    return kafka_info.bootstrap_servers


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _INFO is not None:
        terminalreporter.write_line(
            f"kafka broker: Apache Kafka {_INFO.version} at {_INFO.bootstrap_servers} "
            f"({_INFO.origin})"
        )
