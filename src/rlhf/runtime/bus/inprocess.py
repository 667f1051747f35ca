"""The embedded event bus: Kafka's delivery model inside one process.

An `InProcessBroker` keeps, per topic, a list of partitions (append-only record lists),
committed offsets per (group, topic, partition) and the live members of each group.
Partitions are spread over a group's members like Kafka's range assignor; when a member
joins or leaves, the group's generation moves on and every member restarts from the
committed offsets, so records handled but not committed are delivered again. Every
`InProcessBus` of a process shares `InProcessBroker.default()` unless given its own, so
services running in one process (`rlhf demo`) talk to each other as they would on Kafka.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka.partitioner.default import murmur2

from rlhf.runtime.bus.core import (
    BusOptions,
    EventBus,
    RawRecord,
    SimulatedCrash,
    Subscription,
    _Stopping,
)

log = logging.getLogger(__name__)


@dataclass
class _Group:
    members: list[int] = field(default_factory=list)
    generation: int = 0


class InProcessBroker:
    """Partitioned in-memory logs with consumer-group offsets and membership."""

    _default: InProcessBroker | None = None
    _default_lock = threading.Lock()

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._logs: dict[str, list[list[RawRecord]]] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._round_robin = itertools.count()
        self._member_ids = itertools.count(1)

    @classmethod
    def default(cls) -> InProcessBroker:
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    def create_topic(self, topic: str, partitions: int) -> None:
        with self._cond:
            self._logs.setdefault(topic, [[] for _ in range(partitions)])

    def partitions(self, topic: str) -> int:
        with self._cond:
            return len(self._logs[topic])

    def append(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> tuple[int, int]:
        """Append one record; same key -> same partition (Kafka's murmur2 partitioner)."""
        with self._cond:
            if topic not in self._logs:
                raise KeyError(f"topic {topic!r} does not exist (start the bus first)")
            parts = self._logs[topic]
            if key is not None:
                partition = (murmur2(key) & 0x7FFFFFFF) % len(parts)
            else:
                partition = next(self._round_robin) % len(parts)
            offset = len(parts[partition])
            parts[partition].append(RawRecord(topic, partition, offset, key, value, tuple(headers)))
            self._cond.notify_all()
            return partition, offset

    def records(self, topic: str, partition: int, start: int = 0) -> list[RawRecord]:
        with self._cond:
            return list(self._logs[topic][partition][start:])

    def join(self, group: str, topic: str) -> int:
        with self._cond:
            member = next(self._member_ids)
            g = self._groups.setdefault((group, topic), _Group())
            g.members.append(member)
            g.generation += 1
            self._cond.notify_all()
            return member

    def leave(self, group: str, topic: str, member: int) -> None:
        with self._cond:
            g = self._groups.get((group, topic))
            if g is not None and member in g.members:
                g.members.remove(member)
                g.generation += 1
                self._cond.notify_all()

    def assignment(self, group: str, topic: str, member: int) -> tuple[int, list[int]]:
        """(generation, partitions) for `member`: contiguous ranges, like the range assignor."""
        g = self._groups[(group, topic)]
        n = len(self._logs[topic])
        members = sorted(g.members)
        if member not in members:
            return g.generation, []
        i, m = members.index(member), len(members)
        per, extra = divmod(n, m)
        start = i * per + min(i, extra)
        return g.generation, list(range(start, start + per + (1 if i < extra else 0)))

    def committed(self, group: str, topic: str, partition: int) -> int:
        return self._committed.get((group, topic, partition), 0)

    def commit(self, group: str, topic: str, offsets: dict[int, int], generation: int) -> bool:
        """Commit if the member's generation is current (else, like Kafka, the commit fails)."""
        with self._cond:
            if self._groups[(group, topic)].generation != generation:
                return False
            for partition, offset in offsets.items():
                self._committed[(group, topic, partition)] = offset
            return True


class InProcessBus(EventBus):
    """EventBus on an InProcessBroker: same delivery semantics as KafkaBus, no broker."""

    _system = "inprocess"

    def __init__(
        self,
        *,
        source: str,
        options: BusOptions | None = None,
        broker: InProcessBroker | None = None,
        before_commit: Callable[[str, str, dict[int, int]], None] | None = None,
    ) -> None:
        super().__init__(source=source, options=options, before_commit=before_commit)
        self.broker = broker or InProcessBroker.default()
        self._threads: list[threading.Thread] = []

    def _ensure_topics(self, topics: list[str]) -> None:
        for topic in topics:
            self.broker.create_topic(topic, self.options.partitions)

    def _send(
        self, records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        for topic, key, value, headers in records:
            try:
                self.broker.append(topic, key, value, headers)
            except KeyError:
                # Publishing before start(): create the topic as start() would.
                self._ensure_topics([topic])
                self.broker.append(topic, key, value, headers)

    def _start_consumer(self, sub: Subscription) -> None:
        thread = threading.Thread(
            target=self._supervise, args=(sub,), name=f"bus-{sub.topic}-{sub.group}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _consume(self, sub: Subscription) -> None:
        broker, cond = self.broker, self.broker._cond
        member = broker.join(sub.group, sub.topic)
        generation = -1
        positions: dict[int, int] = {}
        try:
            while not self._closing.is_set():
                with cond:
                    gen, parts = broker.assignment(sub.group, sub.topic, member)
                    if gen != generation:
                        # Rebalance: restart every partition from its committed offset.
                        generation = gen
                        positions = {p: broker.committed(sub.group, sub.topic, p) for p in parts}
                        sub.ready.set()
                    batch: list[RawRecord] = []
                    for p in parts:
                        log_ = broker._logs[sub.topic][p]
                        room = self.options.max_batch - len(batch)
                        batch.extend(log_[positions[p] : positions[p] + room])
                    if not batch:
                        cond.wait(self.options.poll_timeout_s)
                        continue
                done: dict[int, int] = {}
                stopping = False
                seen = self._seen_in_batch(sub, batch)
                for record in batch:
                    if record.partition in done and done[record.partition] != record.offset:
                        continue  # an earlier record of this partition could not finish
                    try:
                        self._process(sub, record, seen)
                    except _Stopping:
                        stopping = True
                        break
                    done[record.partition] = record.offset + 1
                if done:
                    self._call_before_commit(sub, done)
                    if broker.commit(sub.group, sub.topic, done, generation):
                        self.stats.add("commits")
                        positions.update(done)
                if stopping:
                    break
        except SimulatedCrash:
            log.warning("consumer %s/%s crashed (simulated) before commit", sub.topic, sub.group)
        except BaseException as exc:  # keep the failure visible to start()/tests
            sub.error = exc
            sub.ready.set()
            log.exception("consumer %s/%s died", sub.topic, sub.group)
        finally:
            broker.leave(sub.group, sub.topic, member)

    def _stop_transport(self) -> None:
        with self.broker._cond:
            self.broker._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
