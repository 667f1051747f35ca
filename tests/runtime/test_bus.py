"""One acceptance suite for both event buses (InProcessBus and KafkaBus on a real broker).

Every test in the parametrised part runs twice: against the in-process bus and against
the Kafka broker of tests/kafka_plugin.py (marked `kafka`). Each test uses its own
topics and groups, so they share one broker without interfering.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from rlhf.runtime.bus import (
    TOPICS,
    BusOptions,
    DedupeStore,
    Event,
    EventBus,
    InProcessBroker,
    InProcessBus,
    KafkaBus,
    RawRecord,
    SimulatedCrash,
    create_bus,
    dlq_topic,
)
from rlhf.runtime.metrics import REGISTRY
from rlhf.runtime.settings import KafkaSettings, load_settings
from rlhf.runtime.telemetry import configure_tracing
from rlhf.v1 import events_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
Feedback = events_pb2.FeedbackRecorded


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Harness:
    """Builds buses of one kind that share a backend (broker) and a dedupe state dir."""

    kind: str
    state_dir: Path
    bootstrap: str | None = None
    broker: InProcessBroker = field(default_factory=InProcessBroker)
    buses: list[EventBus] = field(default_factory=list)

    def bus(
        self,
        source: str = "tests",
        before_commit: Callable[[str, str, dict[int, int]], None] | None = None,
        **options: object,
    ) -> EventBus:
        opts = BusOptions(**{"state_dir": self.state_dir, "backoff_initial_s": 0.01, **options})
        if self.kind == "kafka":
            bus: EventBus = KafkaBus(
                KafkaSettings(bootstrap_servers=self.bootstrap),
                source=source,
                options=opts,
                before_commit=before_commit,
                session_timeout_ms=6000,
            )
        else:
            bus = InProcessBus(
                source=source, options=opts, broker=self.broker, before_commit=before_commit
            )
        self.buses.append(bus)
        return bus

    def topic(self, name: str = "feedback") -> str:
        return f"test.{uuid.uuid4().hex[:10]}.{name}"

    def read_raw(self, topic: str, count: int, timeout: float = 30.0) -> list[RawRecord]:
        """Read `count` records of a topic from the start, outside any consumer group."""
        if self.kind == "inprocess":
            records: list[RawRecord] = []

            def enough() -> bool:
                records[:] = [
                    r
                    for p in range(self.broker.partitions(topic))
                    for r in self.broker.records(topic, p)
                ]
                return len(records) >= count

            wait_until(enough, timeout, f"{count} records on {topic}")
            return records
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            consumer.assign([TopicPartition(topic, p) for p in parts])
            consumer.seek_to_beginning()
            out: list[RawRecord] = []
            deadline = time.monotonic() + timeout
            while len(out) < count and time.monotonic() < deadline:
                for recs in consumer.poll(timeout_ms=200).values():
                    out += [
                        RawRecord(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers))
                        for r in recs
                    ]
            assert len(out) >= count, f"only {len(out)} of {count} records on {topic}"
            return out
        finally:
            consumer.close()

    def close(self) -> None:
        for bus in self.buses:
            bus.close()


@pytest.fixture(params=["inprocess", pytest.param("kafka", marks=pytest.mark.kafka)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    bootstrap = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    h = Harness(request.param, tmp_path / "bus-state", bootstrap)
    try:
        yield h
    finally:
        h.close()


class EffectLog:
    """A handler's observable effect: the ids it acted on, in order (thread-safe)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def __len__(self) -> int:
        with self._lock:
            return len(self.events)

    def ids(self) -> list[str]:
        with self._lock:
            return [e.id for e in self.events]


# ---- the acceptance suite, over both buses ---------------------------------------------


def test_event_envelope_and_fields(harness: Harness) -> None:
    topic = harness.topic()
    effects = EffectLog()
    bus = harness.bus(source="svc-a")
    bus.subscribe(topic, "g-fields", effects, message_type=Feedback)
    bus.start()
    ce_id = bus.publish(topic, Feedback(feedback_id="f1", rating=4), key="run-1")
    wait_until(lambda: len(effects) == 1, what="one event")
    event = effects.events[0]
    assert event.id == ce_id and event.source == "svc-a"
    assert event.topic == topic and event.type == topic and event.key == "run-1"
    assert event.payload == Feedback(feedback_id="f1", rating=4)
    assert event.time.tzinfo is not None
    assert event.headers["content-type"] == "application/protobuf"
    assert event.headers["ce_id"] == ce_id and event.headers["ce_type"] == topic
    assert 0 <= event.partition < 3 and event.offset == 0


def test_per_key_ordering(harness: Harness) -> None:
    topic = harness.topic()
    effects = EffectLog()
    bus = harness.bus()
    bus.subscribe(topic, "g-order", effects, message_type=Feedback)
    bus.start()
    keys = [f"run-{k}" for k in range(6)]
    n_per_key = 40
    # Interleave keys; every other round through publish_many, so both paths are covered.
    for i in range(n_per_key):
        if i % 2:
            bus.publish_many(topic, [(k, Feedback(feedback_id=k, rating=i)) for k in keys])
        else:
            for k in keys:
                bus.publish(topic, Feedback(feedback_id=k, rating=i), key=k)
    wait_until(lambda: len(effects) == len(keys) * n_per_key, what="all events")
    by_key: dict[str, list[int]] = {}
    partition_of: dict[str, set[int]] = {}
    for e in effects.events:
        by_key.setdefault(e.key, []).append(e.payload.rating)
        partition_of.setdefault(e.key, set()).add(e.partition)
    assert by_key == {k: list(range(n_per_key)) for k in keys}
    assert all(len(parts) == 1 for parts in partition_of.values())  # key -> one partition


_KAFKA_CRASHER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from rlhf.runtime.bus import BusOptions, KafkaBus
    from rlhf.runtime.settings import KafkaSettings
    from rlhf.v1 import events_pb2

    bootstrap, topic, group, state_dir, effects = sys.argv[1:6]

    def handle(event):
        with open(effects, "a") as f:
            f.write(event.id + "\\n")
            f.flush()
            os.fsync(f.fileno())

    def die_before_commit(topic, group, offsets):
        os._exit(3)  # the process is killed after handling, before committing

    bus = KafkaBus(KafkaSettings(bootstrap_servers=bootstrap), source="crasher",
                   options=BusOptions(state_dir=Path(state_dir)),
                   before_commit=die_before_commit, session_timeout_ms=6000)
    bus.subscribe(topic, group, handle, message_type=events_pb2.FeedbackRecorded)
    bus.start()
    time.sleep(120)
    sys.exit(4)  # only if no event came
    """
)


def test_crash_before_commit_redelivers_and_effect_happens_once(
    harness: Harness, tmp_path: Path
) -> None:
    topic, group = harness.topic(), "g-crash"
    effects_file = tmp_path / "effects.txt"
    effects_file.touch()

    def handle(event: Event) -> None:
        with effects_file.open("a") as f:
            f.write(event.id + "\n")

    publisher = harness.bus(source="publisher")
    publisher.register_topic(topic, Feedback)
    publisher.start()
    first = publisher.publish(topic, Feedback(feedback_id="once"), key="k")

    # Consumer A handles the event and dies before committing its offset.
    if harness.kind == "kafka":
        proc = subprocess.run(
            [sys.executable, "-c", _KAFKA_CRASHER, harness.bootstrap, topic, group,
             str(harness.state_dir), str(effects_file)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=150,
        )  # fmt: skip
        assert proc.returncode == 3, proc.stderr[-3000:]
    else:

        def crash(topic: str, group: str, offsets: dict[int, int]) -> None:
            raise SimulatedCrash()

        a = harness.bus(source="consumer-a", before_commit=crash)
        a.subscribe(topic, group, handle, message_type=Feedback)
        a.start()
        wait_until(lambda: not any(t.is_alive() for t in a._threads), what="consumer A to die")
    assert effects_file.read_text().split() == [first]

    # Consumer B in the same group gets the uncommitted event again; dedupe skips it.
    b = harness.bus(source="consumer-b")
    b.subscribe(topic, group, handle, message_type=Feedback)
    b.start()
    wait_until(lambda: b.stats.duplicates >= 1, what="the redelivered event")
    second = publisher.publish(topic, Feedback(feedback_id="after"), key="k")
    wait_until(lambda: b.stats.handled >= 1, what="the next event")
    assert effects_file.read_text().split() == [first, second]  # effect once each


def test_close_during_retry_leaves_the_event_to_the_group(harness: Harness) -> None:
    topic, group = harness.topic(), "g-close"
    handled = EffectLog()
    calls = Counter()

    def flaky(event: Event) -> None:
        calls["a"] += 1
        raise ConnectionError("downstream unavailable")

    a = harness.bus(source="consumer-a", backoff_initial_s=60.0, backoff_max_s=60.0)
    a.subscribe(topic, group, flaky, message_type=Feedback)
    a.start()
    ce_id = a.publish(topic, Feedback(label="retry me"), key="k")
    wait_until(lambda: a.stats.retries == 1, what="the first failure")
    a.close()  # interrupts the backoff; the record stays uncommitted

    b = harness.bus(source="consumer-b")
    b.subscribe(topic, group, handled, message_type=Feedback)
    b.start()
    wait_until(lambda: len(handled) == 1, what="the event at the next member")
    assert handled.ids() == [ce_id] and calls["a"] == 1
    assert a.stats.dead_lettered == 0


def test_poison_event_goes_to_dlq_after_retries(harness: Harness) -> None:
    topic = harness.topic()
    attempts: Counter[str] = Counter()
    handled = EffectLog()

    def handler(event: Event) -> None:
        if event.payload.label == "poison":
            attempts[event.id] += 1
            raise ValueError("cannot handle poison")
        handled(event)

    bus = harness.bus(max_attempts=3)
    bus.subscribe(topic, "g-poison", handler, message_type=Feedback)
    bus.start()
    poison = bus.publish(topic, Feedback(label="poison"), key="k")
    good = bus.publish(topic, Feedback(label="fine"), key="k")  # same partition, behind it
    wait_until(lambda: len(handled) == 1, what="the event behind the poison one")
    assert handled.ids() == [good]
    assert attempts[poison] == 3

    (dead,) = harness.read_raw(dlq_topic(topic), 1)
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["ce_id"] == poison
    assert "ValueError: cannot handle poison" in headers["dlq_error"]
    assert headers["dlq_error_type"] == "ValueError"
    assert headers["dlq_attempts"] == "3"
    assert headers["dlq_original_topic"] == topic
    assert headers["dlq_original_offset"] == "0"
    assert headers["dlq_group"] == "g-poison"
    assert Feedback.FromString(dead.value) == Feedback(label="poison")
    assert bus.stats.dead_lettered == 1
    series = {"topic": topic, "group": "g-poison"}
    assert REGISTRY.get_sample_value("rlhf_bus_dead_letters_total", series) == 1
    if harness.kind == "kafka":  # the consumer reports its lag (0: it has read everything)
        wait_until(
            lambda: REGISTRY.get_sample_value("rlhf_bus_consumer_lag", series) == 0,
            timeout=20,
            what="the consumer lag gauge",
        )


def test_malformed_events_go_to_dlq_without_blocking(harness: Harness) -> None:
    topic = harness.topic()
    handled = EffectLog()
    bus = harness.bus()
    bus.subscribe(topic, "g-malformed", handled, message_type=Feedback)
    bus.start()
    # No CloudEvents headers at all; then valid headers around an undecodable payload.
    bus._send([(topic, b"k", b"not protobuf", [])])
    headers = [
        ("ce_id", b"bad-1"),
        ("ce_source", b"tests"),
        ("ce_type", topic.encode()),
        ("ce_time", b"2026-01-01T00:00:00Z"),
        ("content-type", b"application/protobuf"),
    ]
    bus._send([(topic, b"k", b"\xff\xff\xff", headers)])
    good = bus.publish(topic, Feedback(label="fine"), key="k")
    wait_until(lambda: len(handled) == 1, what="the event behind the malformed ones")
    assert handled.ids() == [good]

    dead = sorted(harness.read_raw(dlq_topic(topic), 2), key=lambda r: r.offset)
    errors = [{k: v.decode() for k, v in r.headers}["dlq_error"] for r in dead]
    assert "missing CloudEvents header(s): ce_id, ce_source, ce_type" in errors[0]
    assert "payload is not a valid rlhf.v1.FeedbackRecorded" in errors[1]
    assert all({k: v.decode() for k, v in r.headers}["dlq_attempts"] == "0" for r in dead)
    assert [r.value for r in dead] == [b"not protobuf", b"\xff\xff\xff"]


def test_ten_thousand_events_none_lost_none_duplicated(harness: Harness) -> None:
    topic, group = harness.topic(), "g-10k"
    effects = EffectLog()
    # Two members of one group split the partitions, as two replicas of a service would.
    consumers = [harness.bus(source=f"replica-{i}", partitions=4) for i in range(2)]
    for c in consumers:
        c.subscribe(topic, group, effects, message_type=Feedback)
        c.start()
    publisher = harness.bus(source="publisher", partitions=4)
    publisher.register_topic(topic, Feedback)
    published: list[str] = []
    for chunk in range(10):
        items = [(f"k{i % 64}", Feedback(rating=chunk * 1000 + i)) for i in range(1000)]
        published += publisher.publish_many(topic, items)
    wait_until(lambda: len(effects) >= 10_000, timeout=120, what="10,000 handled events")
    time.sleep(0.5)  # anything duplicated would arrive now
    counts = Counter(effects.ids())
    assert len(published) == 10_000 and set(counts) == set(published)
    assert max(counts.values()) == 1
    assert sorted(e.payload.rating for e in effects.events) == list(range(10_000))


@pytest.fixture(scope="module")
def span_exporter() -> InMemorySpanExporter:
    provider = configure_tracing("rlhf-tests", exporter="memory")
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_consumer_span_is_in_the_producers_trace(
    harness: Harness, span_exporter: InMemorySpanExporter
) -> None:
    topic = harness.topic()
    seen: list[trace.SpanContext] = []
    headers: list[dict[str, str]] = []

    def handler(event: Event) -> None:
        seen.append(trace.get_current_span().get_span_context())
        headers.append(event.headers)

    bus = harness.bus()
    bus.subscribe(topic, "g-trace", handler, message_type=Feedback)
    bus.start()
    with trace.get_tracer("tests").start_as_current_span("request") as root:
        bus.publish(topic, Feedback(label="traced"), key="k")
    wait_until(lambda: len(seen) == 1, what="the traced event")
    wait_until(
        lambda: any(s.name == f"{topic} process" for s in span_exporter.get_finished_spans()),
        what="the consumer span to end",
    )
    spans = [s for s in span_exporter.get_finished_spans() if s.name.startswith(topic)]
    (producer,) = [s for s in spans if s.kind == SpanKind.PRODUCER]
    (consumer,) = [s for s in spans if s.kind == SpanKind.CONSUMER]
    trace_id = root.get_span_context().trace_id
    assert producer.context.trace_id == consumer.context.trace_id == trace_id
    assert producer.parent.span_id == root.get_span_context().span_id
    assert consumer.parent.span_id == producer.context.span_id
    assert seen[0].span_id == consumer.context.span_id  # the handler runs inside it
    assert headers[0]["traceparent"].split("-")[1] == format(trace_id, "032x")


# ---- contract details (no broker needed) -----------------------------------------------


def test_topics_cover_every_event_payload() -> None:
    payloads = set(events_pb2.DESCRIPTOR.message_types_by_name)
    assert {t.DESCRIPTOR.name for t in TOPICS.values()} == payloads
    assert len(set(TOPICS.values())) == len(TOPICS)
    for name in (
        "rlhf.run.progress",
        "rlhf.robustness.report",
        "rlhf.feedback.recorded",
        "rlhf.retrain.requested",
    ):
        assert name in TOPICS


def test_publish_checks_topic_and_payload_type() -> None:
    bus = InProcessBus(source="tests", broker=InProcessBroker())
    with pytest.raises(TypeError, match="rlhf.v1.FeedbackRecorded"):
        bus.publish("rlhf.feedback.recorded", events_pb2.RunProgress())
    with pytest.raises(ValueError, match="unknown topic 'nope'"):
        bus.publish("nope", events_pb2.RunProgress())
    with pytest.raises(ValueError, match="source"):
        InProcessBus(source="")
    bus.close()
    with pytest.raises(RuntimeError, match="closed"):
        bus.publish("rlhf.run.progress", events_pb2.RunProgress())


def test_bus_options_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        BusOptions(max_attempts=0)
    assert BusOptions(backoff_initial_s=0.1, backoff_max_s=0.3).backoff(3) == pytest.approx(0.3)


def test_dedupe_record_survives_reopen(state_target: str) -> None:
    store = DedupeStore(state_target)
    assert store.record("g", "src", "id-1", "handled")
    store.close()
    again = DedupeStore(state_target)
    assert not again.record("g", "src", "id-1", "dlq")  # recorded already: kept as it was
    assert again.seen("g", "src", "id-1")
    assert not again.seen("other-group", "src", "id-1")  # per consumer group
    assert not again.seen("g", "other-source", "id-1")  # keyed on ce_source + ce_id
    assert again.outcome("g", "src", "id-1") == "handled"


def test_two_replicas_record_each_event_once(state_target: str) -> None:
    """Two replicas (two stores, two connections) record the same 300 redelivered
    events at once: each is recorded by exactly one, and both then see all of them."""
    stores = [DedupeStore(state_target) for _ in range(2)]
    barrier = threading.Barrier(2)
    won: list[list[str]] = [[], []]

    def record_all(i: int) -> None:
        barrier.wait()
        for n in range(300):
            if stores[i].record("rlhf-dataprep", "rlhf/inference", f"ev-{n}", "handled"):
                won[i].append(f"ev-{n}")

    threads = [threading.Thread(target=record_all, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won[0] + won[1]) == sorted(f"ev-{n}" for n in range(300))
    keys = [("rlhf/inference", f"ev-{n}") for n in range(300)]
    assert stores[0].seen_many("rlhf-dataprep", keys) == set(keys)
    assert stores[1].seen_many("rlhf-trainer", keys) == set()
    for store in stores:
        store.close()


def test_dedupe_files_opened_by_many_at_once(tmp_path: Path) -> None:
    """Replicas sharing a volume open one record at once; every opener must get in (a
    consumer once died on "database is locked" while switching a shared file to WAL)."""
    path = tmp_path / "shared.sqlite3"
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_and_record(i: int) -> None:
        barrier.wait()
        try:
            store = DedupeStore(path)
            store.record(f"g{i}", "src", "id", "handled")
            store.close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_record, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = DedupeStore(path)
    assert all(store.seen(f"g{i}", "src", "id") for i in range(8))


def test_default_state_dir_is_per_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLHF_BUS_STATE_DIR", raising=False)
    settings = load_settings(bus="inprocess", artifact_dir=str(tmp_path))
    reward = create_bus(settings, source="rlhf/reward").options.state_dir
    trainer = create_bus(settings, source="rlhf/trainer").options.state_dir
    assert reward == tmp_path / ".bus" / "rlhf-reward" and reward != trainer


def test_create_bus_follows_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_BUS_STATE_DIR", str(tmp_path / "state"))
    inproc = create_bus(load_settings(bus="inprocess"), source="svc")
    assert isinstance(inproc, InProcessBus)
    assert inproc.options.state_dir == tmp_path / "state"
    kafka_settings = load_settings(
        bus="kafka", kafka={"bootstrap_servers": "127.0.0.1:1", "topic_partitions": 5}
    )
    kafka_bus = create_bus(kafka_settings, source="svc")
    assert isinstance(kafka_bus, KafkaBus) and kafka_bus.options.partitions == 5
    assert os.fspath(kafka_bus.options.state_dir) == str(tmp_path / "state")


def test_a_dead_consumer_is_restarted_and_health_turns_false_when_it_stays_dead(tmp_path):
    """A consumer thread that dies of an unexpected error (here the dedupe database
    is locked) comes back and delivers what was not committed; one that keeps dying
    is given up and the bus reports itself unhealthy."""
    import sqlite3

    from rlhf.v1 import events_pb2

    bus = InProcessBus(
        source="tests",
        broker=InProcessBroker(),
        options=BusOptions(state_dir=tmp_path, max_consumer_restarts=2, poll_timeout_s=0.05),
    )
    store = bus._dedupe_store()
    failures = {"left": 2}
    real_seen_many = store.seen_many

    def flaky_seen_many(group, keys):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database is locked")
        return real_seen_many(group, keys)

    store.seen_many = flaky_seen_many
    handled: list[str] = []
    bus.subscribe("rlhf.feedback.recorded", "g", lambda e: handled.append(e.payload.feedback_id))
    bus.start()
    bus.publish("rlhf.feedback.recorded", events_pb2.FeedbackRecorded(feedback_id="a"))
    deadline = time.monotonic() + 20
    while handled != ["a"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handled == ["a"]
    assert bus.stats.consumer_restarts == 2 and bus.healthy()

    failures["left"] = 10**6  # now it never recovers
    bus.publish("rlhf.feedback.recorded", events_pb2.FeedbackRecorded(feedback_id="b"))
    deadline = time.monotonic() + 30
    while bus.healthy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not bus.healthy()
    assert bus.dead_consumers() == ["rlhf.feedback.recorded/g"]
    bus.close()


def test_server_health_follows_the_bus():
    import asyncio

    from rlhf.runtime.service import watch_bus_health

    class FakeServer:
        services = ["rlhf.v1.TrainerService"]

        def __init__(self) -> None:
            self.serving: dict[str, bool] = {}

        async def set_serving(self, name: str, serving: bool) -> None:
            self.serving[name] = serving

    class FakeBus:
        ok = True

        def healthy(self) -> bool:
            return self.ok

        def dead_consumers(self) -> list[str]:
            return [] if self.ok else ["rlhf.retrain.requested/rlhf-trainer"]

    async def scenario() -> list[dict[str, bool]]:
        server, bus, seen = FakeServer(), FakeBus(), []
        task = asyncio.create_task(watch_bus_health(server, bus, interval_s=0.01))
        await asyncio.sleep(0.05)
        seen.append(dict(server.serving))
        bus.ok = False
        await asyncio.sleep(0.05)
        seen.append(dict(server.serving))
        bus.ok = True
        await asyncio.sleep(0.05)
        seen.append(dict(server.serving))
        task.cancel()
        return seen

    assert asyncio.run(scenario()) == [
        {},
        {"rlhf.v1.TrainerService": False},
        {"rlhf.v1.TrainerService": True},
    ]


def test_store_url_puts_the_dedupe_record_in_postgres(postgres_url: str, tmp_path: Path) -> None:
    """store.url reaches the bus: two buses with different state directories (two
    replicas on two nodes) share one dedupe record in PostgreSQL."""
    settings = load_settings(
        bus="inprocess", artifact_dir=str(tmp_path), store={"url": postgres_url}
    )
    one, two = (create_bus(settings, source=f"replica-{i}") for i in (1, 2))
    assert one.options.store_url == postgres_url and "postgres" not in repr(one.options)
    one._dedupe_store().record("g", "src", "id-1", "handled")
    assert two._dedupe_store().seen("g", "src", "id-1")
    assert not (tmp_path / ".bus" / "replica-1" / "dedupe.sqlite3").exists()
    one.close()
    two.close()
