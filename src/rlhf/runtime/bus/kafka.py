"""EventBus on Apache Kafka through kafka-python.

Producer: acks=all with idempotence, so a publish that returned survives and retries do
not reorder or duplicate a partition's records. Consumers: one KafkaConsumer (own thread)
per subscription, auto-commit off, `earliest` for new groups; offsets are committed after
the whole polled batch went through `_process`, so nothing is committed before its
handler returned (or it was dead-lettered).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata, TopicPartition

from rlhf.runtime.bus.core import (
    CONSUMER_LAG,
    BusOptions,
    EventBus,
    RawRecord,
    SimulatedCrash,
    Subscription,
    _Stopping,
)
from rlhf.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

# How often a consumer refreshes its lag gauge (seconds).
LAG_INTERVAL_S = 5.0


def broker_api_version(bootstrap_servers: str) -> str:
    """The API version a broker reports (e.g. "api 4.0"), for test and bench banners."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), client_id="rlhf")
    try:
        version = admin._client.check_version()  # ApiVersions handshake
    finally:
        admin.close()
    return "api " + ".".join(str(p) for p in version)


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python connection options from the project's KafkaSettings."""
    config: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        config["sasl_mechanism"] = kafka.sasl_mechanism
        config["sasl_plain_username"] = kafka.sasl_username
        config["sasl_plain_password"] = kafka.sasl_password
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(kafka, name):
            config[name] = getattr(kafka, name)
    return config


class _ReadyListener(ConsumerRebalanceListener):
    def __init__(self, sub: Subscription) -> None:
        self.sub = sub

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        if not assigned:
            # Legitimate for a replica beyond the partition count; otherwise the group
            # leader lacked the topic's metadata and the next refresh reassigns.
            log.info("consumer %s/%s: no partitions assigned", self.sub.topic, self.sub.group)
        self.sub.ready.set()


class KafkaBus(EventBus):
    """EventBus on a Kafka cluster (see module docstring for the delivery guarantees)."""

    _system = "kafka"

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        source: str,
        options: BusOptions | None = None,
        before_commit: Callable[[str, str, dict[int, int]], None] | None = None,
        session_timeout_ms: int = 10_000,
        producer_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(source=source, options=options, before_commit=before_commit)
        self.kafka = kafka
        self._client = client_config(kafka)
        self._client_id = kafka.client_id
        self._session_timeout_ms = session_timeout_ms
        self._producer_config = producer_config or {}
        self._producer: KafkaProducer | None = None
        self._producer_lock = threading.Lock()
        self._known_topics: set[str] = set()
        self._topics_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # ---- producer -----------------------------------------------------------------------

    def _get_producer(self) -> KafkaProducer:
        with self._producer_lock:
            if self._producer is None:
                config = {
                    **self._client,
                    "client_id": f"{self._client_id}-producer",
                    "acks": "all",
                    "enable_idempotence": True,
                    "linger_ms": 0,
                    "max_block_ms": int(self.options.publish_timeout_s * 1000),
                    "allow_auto_create_topics": False,
                    **self._producer_config,
                }
                self._producer = KafkaProducer(**config)
            return self._producer

    def _send(
        self, records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        missing = {topic for topic, *_ in records} - self._known_topics
        if missing:
            self._ensure_topics(sorted(missing))
        producer = self._get_producer()
        futures = [
            producer.send(topic, key=key, value=value, headers=headers)
            for topic, key, value, headers in records
        ]
        if len(futures) > 1:
            producer.flush(timeout=self.options.publish_timeout_s)
        for future in futures:
            future.get(timeout=self.options.publish_timeout_s)  # raises the send's error

    # ---- topics -------------------------------------------------------------------------

    def _ensure_topics(self, topics: list[str]) -> None:
        with self._topics_lock:
            missing = [t for t in topics if t not in self._known_topics]
            if not missing:
                return
            admin = KafkaAdminClient(**self._client, client_id=f"{self._client_id}-admin")
            try:
                existing = set(admin.list_topics())
                new = [
                    NewTopic(t, self.options.partitions, self.options.replication)
                    for t in missing
                    if t not in existing
                ]
                # One at a time: another process may create the same topic in between,
                # and that must not stop the others from being created.
                for topic in new:
                    with contextlib.suppress(TopicAlreadyExistsError):
                        admin.create_topics([topic], timeout_ms=30_000)
            finally:
                admin.close()
            self._known_topics.update(missing)

    # ---- consumers ----------------------------------------------------------------------

    def _start_consumer(self, sub: Subscription) -> None:
        thread = threading.Thread(
            target=self._supervise, args=(sub,), name=f"bus-{sub.topic}-{sub.group}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    @staticmethod
    def kafka_group_id(group: str, topic: str) -> str:
        """One Kafka consumer group per (bus group, topic).

        A service subscribes one consumer per topic. Sharing one Kafka group between
        consumers of different topics made kafka-python's group leader assign only the
        topics it had metadata for ("No partition metadata for topic ..."): after a
        member crashed and rejoined, a topic could stay unassigned and its events were
        never delivered. Per-topic groups keep every assignment complete; replicas of a
        service still share each topic's partitions. Dedupe stays keyed on `group`.
        """
        return f"{group}.{topic}"

    def _new_consumer(self, sub: Subscription) -> KafkaConsumer:
        return KafkaConsumer(
            **self._client,
            client_id=f"{self._client_id}-{sub.group}",
            group_id=self.kafka_group_id(sub.group, sub.topic),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.options.max_batch,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(100, self._session_timeout_ms // 5),
            fetch_max_wait_ms=50,
            allow_auto_create_topics=False,
            metadata_max_age_ms=self.kafka.metadata_max_age_ms,
        )

    def _await_partition_metadata(self, consumer: KafkaConsumer, topic: str) -> None:
        """Make the consumer's metadata hold `topic`'s partitions before it joins.

        A group leader that computes the assignment without them assigns nothing for the
        topic ("No partition metadata") and only notices at the next metadata refresh,
        so events published meanwhile wait unconsumed. The topic exists (start() created
        it); a just-created topic can take a moment to show up in metadata.
        """
        deadline = time.monotonic() + (self.options.start_timeout_s or 60.0)
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline or self._closing.is_set():
                log.warning("no partition metadata for %s yet; joining anyway", topic)
                return
            time.sleep(0.1)

    def _consume(self, sub: Subscription) -> None:
        consumer: KafkaConsumer | None = None
        try:
            consumer = self._new_consumer(sub)
            self._await_partition_metadata(consumer, sub.topic)
            consumer.subscribe([sub.topic], listener=_ReadyListener(sub))
            timeout_ms = int(self.options.poll_timeout_s * 1000)
            lag_measured = 0.0
            while not self._closing.is_set():
                polled = consumer.poll(timeout_ms=timeout_ms)
                if time.monotonic() - lag_measured > LAG_INTERVAL_S:
                    lag_measured = time.monotonic()
                    self._measure_lag(sub, consumer)
                if not polled:
                    continue
                done: dict[TopicPartition, int] = {}
                stopping = False
                batch = {
                    tp: [
                        RawRecord(
                            r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ())
                        )
                        for r in records
                    ]
                    for tp, records in polled.items()
                }
                seen = self._seen_in_batch(sub, [r for recs in batch.values() for r in recs])
                for tp, records in batch.items():
                    for raw in records:
                        try:
                            self._process(sub, raw, seen)
                        except _Stopping:
                            stopping = True
                            break
                        except KafkaError:
                            # The DLQ publish failed: leave this record uncommitted and
                            # read the partition again from it on the next poll.
                            log.exception("dead-lettering failed; will retry %s@%d", tp, raw.offset)
                            consumer.seek(tp, raw.offset)
                            break
                        done[tp] = raw.offset + 1
                    if stopping:
                        break
                if done:
                    self._call_before_commit(sub, {tp.partition: o for tp, o in done.items()})
                    try:
                        consumer.commit(
                            {tp: OffsetAndMetadata(o, "", -1) for tp, o in done.items()}
                        )
                        self.stats.add("commits")
                    except CommitFailedError as exc:
                        # The group rebalanced; the new owner redelivers and dedupe skips.
                        log.warning("commit failed for %s/%s: %s", sub.topic, sub.group, exc)
                if stopping:
                    break
        except SimulatedCrash:
            log.warning("consumer %s/%s crashed (simulated) before commit", sub.topic, sub.group)
        except BaseException as exc:
            sub.error = exc
            sub.ready.set()
            log.exception("consumer %s/%s died", sub.topic, sub.group)
        finally:
            if consumer is not None:
                # A real crash sends no LeaveGroup; the group notices at session timeout.
                # Closing (also after a simulated crash) leaves the group at once.
                try:
                    consumer.close(autocommit=False)
                except Exception:  # pragma: no cover - best effort on the way out
                    log.debug("consumer close failed", exc_info=True)

    @staticmethod
    def _measure_lag(sub: Subscription, consumer: KafkaConsumer) -> None:
        """Set the lag gauge from what the last fetches told the consumer (no request to
        the broker: the high watermark comes with every fetch response)."""
        lag = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            try:
                position = consumer.position(tp, timeout_ms=0)
            except Exception:  # revoked meanwhile (a rebalance)
                continue
            if high is not None and position is not None:
                lag += max(0, high - position)
        CONSUMER_LAG.labels(sub.topic, sub.group).set(lag)

    def _stop_transport(self) -> None:
        for thread in self._threads:
            thread.join(timeout=30)
        with self._producer_lock:
            if self._producer is not None:
                self._producer.close(timeout=10)
                self._producer = None
