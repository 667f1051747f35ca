"""Event bus benchmark: KafkaBus (real broker) and InProcessBus side by side.

    python bench/bus.py --json

Starts its own single-node Kafka broker (or uses KAFKA_BOOTSTRAP_SERVERS) and, for each
bus, one publisher and one consumer group in this process with the full delivery path
(CloudEvents envelope, tracing, durable dedupe record in SQLite, manual commits):

1. throughput: `--events` events published with `publish_many` in batches of `--batch`
   (each batch acknowledged by the broker, acks=all) as fast as the publisher can;
   events_per_s = events / (first publish -> last handler call).
2. latency: `--rate` events/s offered for `--seconds` in 20 ticks a second;
   p50_ms / p99_ms = publish (ce_time) -> handler called, per event.

Prints ONE JSON object on stdout: {"kafka": {...}, "inprocess": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
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
            self.last_handled = time.perf_counter()

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


def run_one(make_bus: Callable[[str], EventBus], args: argparse.Namespace) -> dict[str, float]:
    topic, group = f"bench.{uuid.uuid4().hex[:8]}.feedback", "bench"
    recorder = Recorder()
    consumer = make_bus("bench-consumer")
    consumer.subscribe(topic, group, recorder, message_type=Feedback)
    publisher = make_bus("bench-publisher")
    publisher.register_topic(topic, Feedback)
    consumer.start()
    publisher.start()
    try:
        # Warm-up: connections, metadata, group join, JIT-free Python paths.
        publisher.publish_many(topic, [_payload(i) for i in range(args.batch)])
        recorder.wait(args.batch, 120)
        recorder.reset()

        # 1. throughput
        t0 = time.perf_counter()
        for start in range(0, args.events, args.batch):
            stop = min(args.events, start + args.batch)
            publisher.publish_many(topic, [_payload(i) for i in range(start, stop)])
        publish_s = time.perf_counter() - t0
        recorder.wait(args.events, 300)
        total_s = recorder.last_handled - t0
        throughput = args.events / total_s
        blast_lat = np.array(recorder.latencies_ms)
        recorder.reset()

        # 2. latency at an offered rate
        ticks = 20
        per_tick = max(1, round(args.rate / ticks))
        n_ticks = int(args.seconds * ticks)
        next_tick = time.perf_counter()
        for t in range(n_ticks):
            publisher.publish_many(topic, [_payload(t * per_tick + i) for i in range(per_tick)])
            next_tick += 1.0 / ticks
            time.sleep(max(0.0, next_tick - time.perf_counter()))
        recorder.wait(n_ticks * per_tick, 300)
        lat = np.array(recorder.latencies_ms)
        if consumer.stats.duplicates or consumer.stats.dead_lettered:
            raise RuntimeError(f"unexpected redelivery/DLQ in the benchmark: {consumer.stats}")
        return {
            "events_per_s": round(throughput, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "latency_rate_events_per_s": per_tick * ticks,
            "publish_events_per_s": round(args.events / publish_s, 1),
            "saturated_p50_ms": round(float(np.percentile(blast_lat, 50)), 2),
            "saturated_p99_ms": round(float(np.percentile(blast_lat, 99)), 2),
            "events": args.events,
            "batch": args.batch,
        }
    finally:
        publisher.close()
        consumer.close()


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
            from kafka import KafkaAdminClient

            admin = KafkaAdminClient(bootstrap_servers=external.split(","))
            version = "api " + ".".join(map(str, admin._manager.broker_version))
            admin.close()
            bootstrap = external
        else:
            from rlhf.runtime.kafka_broker import KafkaBroker

            log("starting a Kafka broker ...")
            kafka_broker = KafkaBroker().start()
            bootstrap, version = kafka_broker.bootstrap_servers, kafka_broker.version
        try:
            log(f"kafka {version} at {bootstrap} ...")
            settings = KafkaSettings(bootstrap_servers=bootstrap)
            kafka_result = run_one(
                lambda src: KafkaBus(settings, source=src, options=options("kafka")), args
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
