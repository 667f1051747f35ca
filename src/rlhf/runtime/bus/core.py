"""The event bus contract and the delivery logic both implementations share.

A transport (Kafka, in-process) only moves raw records and commits offsets. Everything
that decides what a delivery means lives here, once: the CloudEvents envelope, trace
propagation, the dedupe check, retries with backoff, the dead-letter topic. So the two
buses cannot drift apart.

Delivery order for one record on a consumer:
  decode (malformed -> DLQ at once) -> dedupe check (seen -> skip) -> handler, retried
  with exponential backoff up to `max_attempts` (then -> DLQ) -> dedupe record -> the
  transport commits the offset after the batch. A crash anywhere before the commit
  redelivers the record; the dedupe record makes the handler's effect happen once,
  unless the crash falls between the handler returning and the dedupe row being
  written (handlers that must be exact make their effect idempotent themselves).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import traceback
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError, Message
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from rlhf.runtime import metrics
from rlhf.runtime.bus.dedupe import DedupeStore
from rlhf.runtime.bus.topics import TOPICS, dlq_topic
from rlhf.runtime.telemetry import extract_context, inject_context, tracer

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/protobuf"
_ACCEPTED_CONTENT_TYPES = {CONTENT_TYPE, "application/x-protobuf"}
REQUIRED_HEADERS = ("ce_id", "ce_source", "ce_type", "ce_time", "content-type")
_DLQ_ERROR_MAX = 2000


@dataclass(frozen=True)
class Event:
    """What a handler receives: the decoded payload plus its envelope and position."""

    topic: str
    key: str | None
    payload: Message
    id: str
    source: str
    type: str
    time: datetime
    headers: dict[str, str]
    partition: int
    offset: int


@dataclass(frozen=True)
class RawRecord:
    """A record as a transport sees it, before decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


Handler = Callable[[Event], None]


class MalformedEvent(ValueError):
    """A record that can never be handled: missing CloudEvents headers or bad payload."""


class SimulatedCrash(BaseException):
    """Raised by a `before_commit` hook to kill a consumer the way a crash would.

    Only for fault-injection tests: the consumer stops without committing and leaves
    its group, so the group's next member gets the uncommitted records again.
    """


class _Stopping(Exception):
    """The bus is closing in the middle of a retry: leave the record uncommitted."""


@dataclass
class BusOptions:
    """Delivery settings shared by both implementations."""

    # Directory of the durable dedupe record (dedupe.sqlite3); None keeps it in memory,
    # which only dedupes within this process's lifetime.
    state_dir: Path | None = None
    # postgresql:// URL (`store.url`): the dedupe record in PostgreSQL, shared by every
    # replica, instead of a SQLite file in state_dir.
    store_url: str | None = field(default=None, repr=False)
    # Handler attempts per event (1 = no retry) before it goes to `<topic>.dlq`.
    max_attempts: int = 3
    # Backoff before retry n (n = 1, 2, ...): initial * multiplier**(n-1), capped.
    backoff_initial_s: float = 0.05
    backoff_multiplier: float = 2.0
    backoff_max_s: float = 5.0
    # Partitions and replication factor for topics created on start.
    partitions: int = 3
    replication: int = 1
    # Dedupe rows older than this are pruned when the store opens.
    dedupe_retention_s: float = 7 * 24 * 3600.0
    # Most records one consumer takes per poll; offsets are committed per batch.
    max_batch: int = 500
    # Restarts of a consumer that died of an unexpected error before giving up.
    max_consumer_restarts: int = 10
    # How long a consumer waits for records before checking for shutdown.
    poll_timeout_s: float = 0.1
    # How long publish waits for the broker's acknowledgement.
    publish_timeout_s: float = 30.0
    # start() waits this long for every consumer to get its partitions (0 = no wait).
    start_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_attempts", "partitions", "replication", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"BusOptions.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("backoff_initial_s", "backoff_max_s", "poll_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"BusOptions.{name} must be >= 0, got {getattr(self, name)}")
        if self.backoff_multiplier < 1:
            raise ValueError("BusOptions.backoff_multiplier must be >= 1")

    def backoff(self, retry: int) -> float:
        return min(
            self.backoff_max_s, self.backoff_initial_s * self.backoff_multiplier ** (retry - 1)
        )


@dataclass
class BusStats:
    """Counters for tests, benchmarks and metrics; updated under a lock."""

    published: int = 0
    delivered: int = 0
    handled: int = 0
    duplicates: int = 0
    retries: int = 0
    dead_lettered: int = 0
    commits: int = 0
    consumer_restarts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


CONSUMER_RESTARTS = metrics.counter(
    "rlhf_bus_consumer_restarts",
    "Event consumers restarted after dying of an unexpected error.",
    ("topic", "group"),
)
DEAD_LETTERS = metrics.counter(
    "rlhf_bus_dead_letters",
    "Events sent to <topic>.dlq after their handler failed (or they did not parse).",
    ("topic", "group"),
)
CONSUMER_LAG = metrics.gauge(
    "rlhf_bus_consumer_lag",
    "Events published to a topic and not yet consumed by the group (Kafka: the sum over "
    "partitions of high watermark - position).",
    ("topic", "group"),
)


@dataclass
class Subscription:
    topic: str
    group: str
    handler: Handler
    message_type: type[Message]
    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    running: bool = False  # started and assigned: a later death is restarted
    restarts: int = 0
    dead: bool = False  # gave up restarting: the bus is unhealthy


# The bus's own generator, seeded once from os.urandom: training code seeds the global
# `random` (seed_everything), and ids drawn from it repeated after every seeded run, so
# the dedupe record dropped new events as duplicates.
_ID_RANDOM = random.Random(int.from_bytes(os.urandom(16), "big"))
_ID_PID = os.getpid()


def new_event_id() -> str:
    """A random (version 4) UUID as 32 hex digits.

    Drawn from a private `random.Random` rather than uuid4(): os.urandom costs ~100 us a
    call on these VMs, a tenth of the whole per-event budget. The generator is reseeded
    in a forked child so parent and child never draw the same ids.
    """
    global _ID_PID
    if os.getpid() != _ID_PID:
        _ID_RANDOM.seed(int.from_bytes(os.urandom(16), "big"))
        _ID_PID = os.getpid()
    return uuid.UUID(int=_ID_RANDOM.getrandbits(128), version=4).hex


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def header_dict(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """Headers as text; a later duplicate wins, undecodable bytes are replaced."""
    return {k: (v or b"").decode("utf-8", errors="replace") for k, v in headers}


class EventBus(ABC):
    """Publish protobuf events to topics and run handlers on consumer threads.

    `publish` returns the event's ce_id only after the transport made it durable.
    Subscriptions registered before `start()` begin consuming at start; handlers run on
    one thread per subscription, in order within a partition (same key, same partition).
    """

    def __init__(
        self,
        *,
        source: str,
        options: BusOptions | None = None,
        before_commit: Callable[[str, str, dict[int, int]], None] | None = None,
    ) -> None:
        if not source:
            raise ValueError("EventBus source must be a non-empty string (the ce_source)")
        self.source = source
        self.options = options or BusOptions()
        # Fault-injection seam for tests: called as (topic, group, {partition: next offset})
        # right before a commit; raising SimulatedCrash kills the consumer uncommitted.
        self.before_commit = before_commit
        self.stats = BusStats()
        self._types: dict[str, type[Message]] = dict(TOPICS)
        self._subscriptions: list[Subscription] = []
        self._closing = threading.Event()
        self._started = False
        self._dedupe: DedupeStore | None = None
        self._dedupe_lock = threading.Lock()
        self._tracer = tracer("rlhf.runtime.bus")

    # ---- public API -------------------------------------------------------------------

    def register_topic(self, topic: str, message_type: type[Message]) -> None:
        """Declare the payload type of a topic that is not in TOPICS."""
        known = self._types.get(topic)
        if known is not None and known is not message_type:
            raise ValueError(f"topic {topic!r} already carries {known.DESCRIPTOR.full_name}")
        self._types[topic] = message_type

    def message_type(self, topic: str) -> type[Message]:
        if topic in self._types:
            return self._types[topic]
        if topic.endswith(".dlq") and topic[: -len(".dlq")] in self._types:
            return self._types[topic[: -len(".dlq")]]
        raise ValueError(
            f"unknown topic {topic!r}: not in rlhf.runtime.bus.TOPICS; pass message_type= "
            "or call register_topic() first"
        )

    def publish(
        self,
        topic: str,
        message: Message,
        *,
        key: str | None = None,
        source: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Publish one event and wait for the durable acknowledgement; return its ce_id."""
        self._check_open()
        key_bytes, value, headers, ce_id, span = self._envelope(
            topic, message, key, source, event_id
        )
        try:
            self._send([(topic, key_bytes, value, headers)])
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
        finally:
            span.end()
        self.stats.add("published")
        return ce_id

    def publish_many(
        self,
        topic: str,
        items: Iterable[tuple[str | None, Message]],
        *,
        source: str | None = None,
    ) -> list[str]:
        """Publish (key, message) pairs in one batch; return their ce_ids once all are durable.

        Faster than repeated `publish` on Kafka (one flush for the batch); the guarantee is
        the same: when this returns, every event was acknowledged by the broker.
        """
        self._check_open()
        batch, ids, spans = [], [], []
        for key, message in items:
            key_bytes, value, headers, ce_id, span = self._envelope(
                topic, message, key, source, None
            )
            batch.append((topic, key_bytes, value, headers))
            ids.append(ce_id)
            spans.append(span)
        try:
            self._send(batch)
        finally:
            for span in spans:
                span.end()
        self.stats.add("published", len(ids))
        return ids

    def subscribe(
        self,
        topic: str,
        group: str,
        handler: Handler,
        *,
        message_type: type[Message] | None = None,
    ) -> None:
        """Run `handler` for every event of `topic` in consumer group `group`.

        Call before start(); a subscription added after start begins consuming at once.
        """
        self._check_open()
        if not group:
            raise ValueError("subscribe: group must be a non-empty consumer group name")
        if message_type is not None:
            self.register_topic(topic, message_type)
        sub = Subscription(topic, group, handler, self.message_type(topic))
        self._subscriptions.append(sub)
        if self._started:
            self._ensure_topics([topic, dlq_topic(topic)])
            self._start_consumer(sub)
            self._wait_ready([sub])

    def start(self) -> None:
        """Create the known and subscribed topics (and their DLQs), start consumers."""
        self._check_open()
        if self._started:
            return
        topics: list[str] = []
        for topic in list(self._types) + [s.topic for s in self._subscriptions]:
            for name in (topic, dlq_topic(topic)):
                if name not in topics:
                    topics.append(name)
        self._ensure_topics(topics)
        self._started = True
        for sub in self._subscriptions:
            self._start_consumer(sub)
        self._wait_ready(self._subscriptions)

    def close(self) -> None:
        """Stop consumers (uncommitted records stay for the group) and release resources."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._stop_transport()
        if self._dedupe is not None:
            self._dedupe.close()

    def __enter__(self) -> EventBus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport hooks --------------------------------------------------------------

    @abstractmethod
    def _send(
        self, records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        """Append records durably (in order); return only after all were acknowledged."""

    @abstractmethod
    def _ensure_topics(self, topics: list[str]) -> None:
        """Create missing topics with the configured partitions and replication."""

    @abstractmethod
    def _start_consumer(self, sub: Subscription) -> None:
        """Start the thread that feeds `sub`'s records to `_process` and commits."""

    @abstractmethod
    def _stop_transport(self) -> None:
        """Stop consumer threads and the producer."""

    # ---- shared delivery logic ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing.is_set():
            raise RuntimeError("event bus is closed")

    def _wait_ready(self, subs: list[Subscription]) -> None:
        deadline = time.monotonic() + self.options.start_timeout_s
        for sub in subs:
            remaining = max(0.0, deadline - time.monotonic())
            if self.options.start_timeout_s and not sub.ready.wait(remaining):
                raise TimeoutError(
                    f"consumer for {sub.topic!r} (group {sub.group!r}) got no partition "
                    f"assignment within {self.options.start_timeout_s}s"
                )
            if sub.error is not None:
                raise RuntimeError(f"consumer for {sub.topic!r} failed to start") from sub.error
            sub.running = True

    # ---- consumer supervision ----------------------------------------------------------

    def healthy(self) -> bool:
        """False once a consumer died and could not be restarted: the service no longer
        handles its events, so its health check must say so."""
        return not any(sub.dead for sub in self._subscriptions)

    def dead_consumers(self) -> list[str]:
        return [f"{s.topic}/{s.group}" for s in self._subscriptions if s.dead]

    def _supervise(self, sub: Subscription) -> None:
        """Run the transport's consumer loop for `sub`, restarting it when it dies of an
        unexpected error (a locked dedupe database, a full disk, a broker hiccup), with
        backoff; after `max_consumer_restarts` it stays down and `healthy()` is False.
        Uncommitted records are redelivered to the new consumer; dedupe skips repeats."""
        while True:
            self._consume(sub)
            if self._closing.is_set() or sub.error is None or not sub.running:
                return  # closed, a simulated crash, or a start-up failure start() reports
            sub.restarts += 1
            self.stats.add("consumer_restarts")
            CONSUMER_RESTARTS.labels(sub.topic, sub.group).inc()
            if sub.restarts > self.options.max_consumer_restarts:
                sub.dead = True
                log.error(
                    "consumer %s/%s died %d times; giving up (health: NOT_SERVING)",
                    sub.topic,
                    sub.group,
                    sub.restarts,
                )
                return
            delay = min(30.0, 0.5 * 2 ** (sub.restarts - 1))
            log.warning(
                "consumer %s/%s died (%r); restart %d in %.1fs",
                sub.topic,
                sub.group,
                sub.error,
                sub.restarts,
                delay,
            )
            sub.error = None
            if self._closing.wait(delay):
                return

    @abstractmethod
    def _consume(self, sub: Subscription) -> None:
        """The transport's consumer loop; sets `sub.error` when it dies of an error."""

    def _envelope(
        self,
        topic: str,
        message: Message,
        key: str | None,
        source: str | None,
        event_id: str | None,
    ) -> tuple[bytes | None, bytes, list[tuple[str, bytes]], str, Any]:
        expected = self.message_type(topic)
        if not isinstance(message, expected):
            raise TypeError(
                f"topic {topic!r} carries {expected.DESCRIPTOR.full_name}, "
                f"got {type(message).__name__}"
            )
        ce_id = event_id or new_event_id()
        headers = {
            "ce_specversion": "1.0",
            "ce_id": ce_id,
            "ce_type": topic,
            "ce_source": source or self.source,
            "ce_time": _now_iso(),
            "content-type": CONTENT_TYPE,
        }
        span = self._tracer.start_span(
            f"{topic} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": self._system,
                "messaging.destination.name": topic,
                "messaging.message.id": ce_id,
            },
        )
        # The producer span is the parent the consumer continues from.
        with trace.use_span(span, end_on_exit=False):
            inject_context(headers)
        value = message.SerializeToString()
        key_bytes = key.encode("utf-8") if key is not None else None
        return key_bytes, value, [(k, v.encode("utf-8")) for k, v in headers.items()], ce_id, span

    _system = "unknown"

    def _dedupe_store(self) -> DedupeStore:
        with self._dedupe_lock:
            if self._dedupe is None:
                target: str | Path | None = self.options.store_url
                if target is None and self.options.state_dir is not None:
                    Path(self.options.state_dir).mkdir(parents=True, exist_ok=True)
                    target = Path(self.options.state_dir) / "dedupe.sqlite3"
                self._dedupe = DedupeStore(target, retention_s=self.options.dedupe_retention_s)
            return self._dedupe

    def _decode(self, sub: Subscription, record: RawRecord) -> Event:
        headers = header_dict(record.headers)
        missing = [h for h in REQUIRED_HEADERS if not headers.get(h)]
        if missing:
            raise MalformedEvent(f"missing CloudEvents header(s): {', '.join(missing)}")
        if headers["content-type"] not in _ACCEPTED_CONTENT_TYPES:
            raise MalformedEvent(f"content-type {headers['content-type']!r} is not {CONTENT_TYPE}")
        try:
            when = datetime.fromisoformat(headers["ce_time"])
        except ValueError as exc:
            raise MalformedEvent(f"ce_time {headers['ce_time']!r} is not ISO 8601") from exc
        payload = sub.message_type()
        try:
            payload.ParseFromString(record.value or b"")
        except DecodeError as exc:
            raise MalformedEvent(
                f"payload is not a valid {sub.message_type.DESCRIPTOR.full_name}: {exc}"
            ) from exc
        return Event(
            topic=record.topic,
            key=record.key.decode("utf-8", errors="replace") if record.key is not None else None,
            payload=payload,
            id=headers["ce_id"],
            source=headers["ce_source"],
            type=headers["ce_type"],
            time=when,
            headers=headers,
            partition=record.partition,
            offset=record.offset,
        )

    def _seen_in_batch(self, sub: Subscription, records: list[RawRecord]) -> set[tuple[str, str]]:
        """Dedupe lookup for a whole polled batch in one query (records of partitions this
        member owns, so nobody else in the group writes their rows meanwhile)."""
        keys = []
        for record in records:
            headers = dict(record.headers)
            source, event_id = headers.get("ce_source"), headers.get("ce_id")
            if source and event_id:
                keys.append(
                    (source.decode("utf-8", "replace"), event_id.decode("utf-8", "replace"))
                )
        return self._dedupe_store().seen_many(sub.group, keys) if keys else set()

    def _process(
        self, sub: Subscription, record: RawRecord, seen: set[tuple[str, str]] | None = None
    ) -> None:
        """Deliver one record to `sub.handler` with the shared semantics.

        Returns once the record may be committed (handled, skipped as a duplicate, or
        dead-lettered). Raises _Stopping if the bus closes mid-retry, or the DLQ
        publish's error, in which cases the record must not be committed.
        """
        self.stats.add("delivered")
        try:
            event = self._decode(sub, record)
        except MalformedEvent as exc:
            # Deterministic: retrying cannot help, so it goes to the DLQ at once.
            self._dead_letter(sub, record, exc, attempts=0)
            return
        dedupe = self._dedupe_store()
        if (
            (event.source, event.id) in seen
            if seen is not None
            else dedupe.seen(sub.group, event.source, event.id)
        ):
            self.stats.add("duplicates")
            return
        parent = extract_context(event.headers)
        with self._tracer.start_as_current_span(
            f"{sub.topic} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": self._system,
                "messaging.destination.name": sub.topic,
                "messaging.consumer.group.name": sub.group,
                "messaging.message.id": event.id,
            },
        ) as span:
            attempt = 0
            while True:
                attempt += 1
                try:
                    sub.handler(event)
                    break
                except Exception as exc:
                    span.record_exception(exc)
                    if attempt >= self.options.max_attempts:
                        span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {exc}"))
                        self._dead_letter(sub, record, exc, attempts=attempt)
                        dedupe.record(sub.group, event.source, event.id, "dlq")
                        if seen is not None:
                            seen.add((event.source, event.id))
                        return
                    delay = self.options.backoff(attempt)
                    log.warning(
                        "handler for %s failed (attempt %d/%d), retrying in %.2fs: %r",
                        sub.topic,
                        attempt,
                        self.options.max_attempts,
                        delay,
                        exc,
                    )
                    self.stats.add("retries")
                    if self._closing.wait(delay):
                        raise _Stopping() from exc
            span.set_attribute("rlhf.attempts", attempt)
        dedupe.record(sub.group, event.source, event.id, "handled")
        if seen is not None:
            seen.add((event.source, event.id))  # a repeat later in the same batch
        self.stats.add("handled")

    def _dead_letter(
        self, sub: Subscription, record: RawRecord, exc: BaseException, attempts: int
    ) -> None:
        """Publish the original bytes to `<topic>.dlq` with the failure in headers."""
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        extra = {
            "dlq_error": error[:_DLQ_ERROR_MAX],
            "dlq_error_type": type(exc).__name__,
            "dlq_attempts": str(attempts),
            "dlq_original_topic": record.topic,
            "dlq_original_partition": str(record.partition),
            "dlq_original_offset": str(record.offset),
            "dlq_group": sub.group,
            "dlq_time": _now_iso(),
        }
        headers = [(k, v) for k, v in record.headers if k not in extra]
        headers += [(k, v.encode("utf-8")) for k, v in extra.items()]
        log.error(
            "dead-lettering %s[%d]@%d for group %s after %d attempt(s): %s",
            record.topic,
            record.partition,
            record.offset,
            sub.group,
            attempts,
            error,
        )
        self._send([(dlq_topic(sub.topic), record.key, record.value or b"", headers)])
        self.stats.add("dead_lettered")
        DEAD_LETTERS.labels(sub.topic, sub.group).inc()

    def _call_before_commit(self, sub: Subscription, offsets: Mapping[int, int]) -> None:
        if self.before_commit is not None:
            self.before_commit(sub.topic, sub.group, dict(offsets))
