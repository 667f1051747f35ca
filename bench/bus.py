"""Event bus benchmark: KafkaBus (real broker) and InProcessBus side by side.

    python bench/bus.py --json

Starts its own single-node Kafka broker (or uses KAFKA_BOOTSTRAP_SERVERS). For each bus
one consumer group runs in this process with the full delivery path (CloudEvents
envelope, tracing spans, durable SQLite dedupe record, manual commits). The Kafka
publisher runs in a child process, as another service would; the in-process bus's
publisher necessarily shares this process. Phases:

1. throughput: `--events` events published with `publish_many` in batches of `--batch`
   (each batch acknowledged with acks=all before the next) as fast as the publisher
   can; events_per_s = events / (first publish -> last handler call).
2. latency: `--rate` events/s offered for `--seconds` s in 20 ticks a second;
   p50_ms / p99_ms = publish (the event's ce_time) -> handler called, per event.
   saturated_p50_ms / saturated_p99_ms are the same figures during phase 1's backlog.

Prints ONE JSON object on stdout: {"kafka": {...}, "inprocess": {...}}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from rlhf.runtime.bus import BusOptions, Event, EventBus, InProcessBroker, InProcessBus, KafkaBus
from rlhf.runtime.settings import KafkaSettings
from rlhf.runtime.telemetry import configure_tracing
from rlhf.v1 import events_pb2

Feedback = events_pb2.FeedbackRecorded


def log(msg: str) -> None:
    print(f"[bench/bus] {msg}", file=sys.stderr, flush=True)


class Recorder:
    """Handler that records publish -> handled latency and counts events."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.count = 0
        self.last_handled = 0.0
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        now = datetime.now(UTC)
        with self._lock:
            self.latencies_ms.append((now - event.time).total_seconds() * 1000.0)
            self.count += 1
            self.last_handled = time.time()

    def reset(self) -> None:
        with self._lock:
            self.latencies_ms, self.count = [], 0

    def wait(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.count} of {n} events handled in {timeout}s")
            time.sleep(0.005)


def _payload(i: int) -> tuple[str, Feedback]:
    return f"user-{i % 64}", Feedback(
        feedback_id=f"fb-{i}",
        stage="inference",
        model_version="policy-v3",
        kind=events_pb2.FEEDBACK_KIND_THUMBS,
        prompt="How do I make the reward model more robust to paraphrases?",
        response="Train it on adversarial paraphrases and check the flip rate.",
        thumbs_up=i % 3 != 0,
        confidence=0.87,
    )


def _publish_phases(
    publisher: EventBus,
    topic: str,
    args: argparse.Namespace,
    step: Callable[[str, float], None],
) -> None:
    """The publisher's side: warm-up, a blast of `events`, then `rate` events/s.

    `step(name, started_at)` is called after each phase and blocks until the consumer side
    has seen all of that phase's events (so phases do not overlap).
    """
    publisher.register_topic(topic, Feedback)
    publisher.start()
    started = time.time()
    publisher.publish_many(topic, [_payload(i) for i in range(args.batch)])
    step("warmup", started)
    started = time.time()
    for start in range(0, args.events, args.batch):
        stop = min(args.events, start + args.batch)
        publisher.publish_many(topic, [_payload(i) for i in range(start, stop)])
    step("throughput", started)
    ticks = 20
    per_tick = max(1, round(args.rate / ticks))
    started = next_tick = time.time()
    for t in range(int(args.seconds * ticks)):
        publisher.publish_many(topic, [_payload(t * per_tick + i) for i in range(per_tick)])
        next_tick += 1.0 / ticks
        time.sleep(max(0.0, next_tick - time.time()))
    step("latency", started)


def _child_publisher(
    bootstrap: str, topic: str, args: argparse.Namespace, state: str, conn: Connection
) -> None:
    """Kafka publisher in its own process, as another service would be."""
    configure_tracing("bench-bus-publisher", exporter="none")
    options = BusOptions(state_dir=Path(state) / "publisher", partitions=args.partitions)
    bus = KafkaBus(KafkaSettings(bootstrap_servers=bootstrap), source="bench-publisher",
                   options=options)  # fmt: skip

    def step(name: str, started: float) -> None:
        conn.send((name, started))
        conn.recv()  # the consumer side saw every event of the phase

    try:
        _publish_phases(bus, topic, args, step)
    finally:
        bus.close()


def run_one(
    make_bus: Callable[[str], EventBus],
    args: argparse.Namespace,
    publisher_process: Callable[[str, Connection], mp.Process] | None = None,
) -> dict[str, float]:
    """Consumer in this process; publisher here too (in-process bus) or in a child process."""
    topic, group = f"bench.{uuid.uuid4().hex[:8]}.feedback", "bench"
    recorder = Recorder()
    consumer = make_bus("bench-consumer")
    consumer.subscribe(topic, group, recorder, message_type=Feedback)
    consumer.start()
    ticks = 20
    per_tick = max(1, round(args.rate / ticks))
    expected = {
        "warmup": args.batch,
        "throughput": args.events,
        "latency": per_tick * int(args.seconds * ticks),
    }
    results: dict[str, tuple[float, float, np.ndarray]] = {}

    def on_phase(name: str, started: float) -> None:
        recorder.wait(expected[name], 300)
        results[name] = (started, recorder.last_handled, np.array(recorder.latencies_ms))
        recorder.reset()

    try:
        if publisher_process is None:
            publisher = make_bus("bench-publisher")
            try:
                _publish_phases(publisher, topic, args, on_phase)
            finally:
                publisher.close()
        else:
            parent, child = mp.Pipe()
            proc = publisher_process(topic, child)
            proc.start()
            try:
                for _ in expected:
                    if not parent.poll(600):
                        raise TimeoutError("publisher process went silent")
                    on_phase(*parent.recv())
                    parent.send("next")
            finally:
                proc.join(60)
            if proc.exitcode != 0:
                raise RuntimeError(f"publisher process exited with {proc.exitcode}")
        if consumer.stats.duplicates or consumer.stats.dead_lettered:
            raise RuntimeError(f"unexpected redelivery/DLQ in the benchmark: {consumer.stats}")
    finally:
        consumer.close()

    started, last, blast_lat = results["throughput"]
    lat = results["latency"][2]
    return {
        "events_per_s": round(args.events / (last - started), 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "latency_rate_events_per_s": per_tick * ticks,
        "saturated_p50_ms": round(float(np.percentile(blast_lat, 50)), 2),
        "saturated_p99_ms": round(float(np.percentile(blast_lat, 99)), 2),
        "events": args.events,
        "batch": args.batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--events", type=int, default=20_000, help="events in the throughput run")
    parser.add_argument("--batch", type=int, default=500, help="publish_many batch size")
    parser.add_argument("--rate", type=float, default=2000.0, help="offered events/s, latency run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--only", choices=["kafka", "inprocess"], help="run one bus only")
    args = parser.parse_args()

    configure_tracing("bench-bus", exporter="none")  # real spans, as services have them
    state = Path(tempfile.mkdtemp(prefix="rlhf-bench-bus-"))
    results: dict[str, dict[str, object]] = {}

    def options(name: str) -> BusOptions:
        return BusOptions(state_dir=state / name, partitions=args.partitions)

    if args.only in (None, "inprocess"):
        broker = InProcessBroker()
        log("inprocess ...")
        results["inprocess"] = run_one(
            lambda src: InProcessBus(source=src, options=options("inprocess"), broker=broker),
            args,
        )
        log(f"inprocess: {results['inprocess']}")

    if args.only in (None, "kafka"):
        external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        kafka_broker = None
        if external:
            from rlhf.runtime.bus.kafka import broker_api_version

            version = broker_api_version(external)
            bootstrap = external
        else:
            from rlhf.runtime.kafka_broker import KafkaBroker

            log("starting a Kafka broker ...")
            kafka_broker = KafkaBroker().start()
            bootstrap, version = kafka_broker.bootstrap_servers, kafka_broker.version
        try:
            log(f"kafka {version} at {bootstrap} ...")
            settings = KafkaSettings(bootstrap_servers=bootstrap)
            ctx = mp.get_context("spawn")
            kafka_result = run_one(
                lambda src: KafkaBus(settings, source=src, options=options("kafka")),
                args,
                lambda topic, conn: ctx.Process(
                    target=_child_publisher, args=(bootstrap, topic, args, str(state), conn)
                ),
            )
            results["kafka"] = {**kafka_result, "broker_version": version}
            log(f"kafka: {results['kafka']}")
        finally:
            if kafka_broker is not None:
                kafka_broker.stop()

    ordered = {k: results[k] for k in ("kafka", "inprocess") if k in results}
    print(json.dumps(ordered, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
