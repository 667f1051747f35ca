"""The platform's event bus: one interface, a Kafka and an in-process implementation.

    bus = create_bus(settings, source="dataprep")
    bus.subscribe("rlhf.feedback.recorded", "dataprep", on_feedback)
    with bus:                                   # start(): topics, consumer threads
        bus.publish("rlhf.dataset.prepared", events_pb2.DatasetPrepared(...), key=run_id)

Both implementations share the delivery semantics (see rlhf.runtime.bus.core and
docs/events.md): CloudEvents binary-mode headers, traceparent propagation, per-key
ordering, at-least-once with commits after the handler, durable dedupe on
ce_source + ce_id per group, bounded retries then `<topic>.dlq`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf.runtime.bus.core import (
    CONTENT_TYPE,
    REQUIRED_HEADERS,
    BusOptions,
    BusStats,
    Event,
    EventBus,
    Handler,
    MalformedEvent,
    RawRecord,
    SimulatedCrash,
)
from rlhf.runtime.bus.dedupe import DedupeStore
from rlhf.runtime.bus.inprocess import InProcessBroker, InProcessBus
from rlhf.runtime.bus.kafka import KafkaBus
from rlhf.runtime.bus.topics import DLQ_SUFFIX, TOPICS, dlq_topic

if TYPE_CHECKING:
    from rlhf.runtime.settings import Settings

__all__ = [
    "CONTENT_TYPE",
    "DLQ_SUFFIX",
    "REQUIRED_HEADERS",
    "TOPICS",
    "BusOptions",
    "BusStats",
    "DedupeStore",
    "Event",
    "EventBus",
    "Handler",
    "InProcessBroker",
    "InProcessBus",
    "KafkaBus",
    "MalformedEvent",
    "RawRecord",
    "SimulatedCrash",
    "create_bus",
    "dlq_topic",
]


def default_state_dir(settings: Settings, source: str) -> Path:
    """Where `source`'s dedupe record lives: RLHF_BUS_STATE_DIR, else
    <artifact_dir>/.bus/<source>. One file per service, as in a cluster where each
    service has its own volume: services sharing one artifact directory (the dev
    stack) then never contend for one SQLite file."""
    override = os.environ.get("RLHF_BUS_STATE_DIR")
    if override:
        return Path(override)
    return Path(settings.artifact_dir) / ".bus" / re.sub(r"[^A-Za-z0-9_.-]", "-", source)


def create_bus(settings: Settings, *, source: str, options: BusOptions | None = None) -> EventBus:
    """The bus `settings.bus` names ("kafka" or "inprocess"), with partitions and
    replication from `settings.kafka`; `source` becomes every event's ce_source."""
    if options is None:
        options = BusOptions(
            state_dir=default_state_dir(settings, source),
            store_url=settings.store.postgres_url,
            partitions=settings.kafka.topic_partitions,
            replication=settings.kafka.topic_replication,
        )
    if settings.bus == "kafka":
        return KafkaBus(settings.kafka, source=source, options=options)
    if settings.bus == "inprocess":
        return InProcessBus(source=source, options=options)
    raise ValueError(f"bus: unknown implementation {settings.bus!r} (kafka or inprocess)")
