"""Two data prep and two trainer replicas on the real Kafka broker, as a Deployment with
`replicas: 2` runs them: one shared artifact directory, one consumer group per service,
topics with two partitions. The trainer replica running the first round is SIGKILLed
and never comes back: the other takes its run over (its lease goes stale) and its
partitions (the group rebalances). 50 feedback events with duplicates then give
exactly one retraining round and one new promoted version.

Run twice: with the shared state in files on the volume (SQLite, lock and claim files),
and in PostgreSQL (`store.url`, a real server from tests/postgres_plugin.py): then the
feedback windows, event dedupe, run claims and leases, and the trainer's pipeline state
the model registry, data prep's sources and profiles and the reward service's pipeline
datasets are rows there, and none of those files is written."""

from __future__ import annotations

import json
import time

import pytest

from rlhf.client import Client
from rlhf.devstack import DevStack
from rlhf.v1 import common_pb2
from tests.services.test_e2e_kafka import (
    PIPELINE,
    SPEC_DIR,
    Watcher,
    _until_served,
    send_feedback_with_retries,
    upload_reviews,
)

pytestmark = [pytest.mark.kafka, pytest.mark.triton, pytest.mark.timeout(900)]


@pytest.mark.parametrize("state", ["files", "postgres"])
def test_replicas_do_nothing_twice_and_survive_losing_one(
    tmp_path, kafka_bootstrap, data_dir, state, request
):
    env = {
        "RLHF_KAFKA__TOPIC_PARTITIONS": "2",
        "RLHF_DATA_DIR": str(data_dir),
        "RLHF_PIPELINES_DIR": str(SPEC_DIR),
        "RLHF_RUN_LEASE_TTL_S": "6",
    }
    store_url = request.getfixturevalue("postgres_url") if state == "postgres" else None
    if store_url:
        env["RLHF_STORE__URL"] = store_url
    artifacts = tmp_path / "artifacts"
    platform = DevStack(
        kafka_bootstrap,
        artifacts,
        tmp_path / "logs",
        env=env,
        replicas={"dataprep": 2, "trainer": 2},
    )
    assert platform.processes.count("trainer-2") == platform.processes.count("dataprep-2") == 1
    watcher = Watcher(kafka_bootstrap, tmp_path / "watcher", partitions=2)
    watcher.bus.start()
    try:
        platform.start_all()
        client = Client(
            dataprep=platform.address("dataprep-2"),
            trainer=platform.address("trainer-2"),
            inference=platform.address("inference"),
            timeout=60,
        )
        reviews, own = upload_reviews(artifacts)
        client.register_source("reviews", str(own), "jsonl")
        client.prepare(pipeline=PIPELINE)

        base = watcher.wait(lambda: watcher.base_run_past(8), 300, "the base run", platform)[0]
        runs_dir = artifacts / "state" / "trainer" / "runs"
        owner = json.loads((runs_dir / f"{base.run_id}.json").read_text())["owner"]
        survivor = {"trainer": "trainer-2", "trainer-2": "trainer"}[owner]
        platform.kill(owner)  # never restarted
        survivor_client = Client(
            dataprep=platform.address("dataprep"),
            trainer=platform.address(survivor),
            inference=platform.address("inference"),
            timeout=60,
        )

        first = watcher.wait(watcher.policy_promotions, 600, "the first promotion", platform)[0]
        version = first.model.version
        try:
            reply = _until_served(survivor_client, version)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{platform.log('inference')[-4000:]}") from None
        record = json.loads((runs_dir / f"{base.run_id}.json").read_text())
        assert record["owner"] == survivor and record["epoch"] == 1, record
        assert record["state"] == "succeeded" and record["attempts"] == 2, record
        assert survivor_client.get_run(base.run_id).state == common_pb2.RUN_STATE_SUCCEEDED

        send_feedback_with_retries(survivor_client, reply.request_id, version, reviews)
        second = watcher.wait(
            lambda: [p for p in watcher.policy_promotions() if p.model.version != version],
            480,
            "the retrained promotion",
            platform,
        )[0]
        time.sleep(5)  # a late duplicate would show up by now
        assert len(watcher.events["rlhf.retrain.requested"]) == 1
        promoted = {p.model.version for p in watcher.policy_promotions()}
        assert promoted == {version, second.model.version}
        policy_runs = {
            p.status.run_id
            for p in watcher.events["rlhf.run.progress"]
            if p.status.stage == "train-policy"
        }
        assert len(policy_runs) == 2  # round one and the retraining round
        models = survivor_client.list_models(name=f"{PIPELINE}-policy")
        assert {m.version for m in models} == {version, second.model.version}
        if store_url:
            _check_state_in_postgres(store_url, artifacts, base.run_id, survivor)
    finally:
        watcher.bus.close()
        platform.stop()


def _check_state_in_postgres(url, artifacts, base_run: str, survivor: str) -> None:
    """The decisions the replicas shared are rows in PostgreSQL, not files."""
    from rlhf.store import open_database

    with open_database(url) as db:
        assert db.query("SELECT COUNT(*) FROM retrain_requests")[0][0] == 1
        takeover = db.query(
            "SELECT holder FROM run_claims WHERE scope = 'trainer' AND name = ?",
            (f"{base_run}.1",),
        )
        assert takeover == [(survivor,)]
        leases = {
            row[0] for row in db.query("SELECT replica FROM run_leases WHERE scope = 'trainer'")
        }
        assert {"trainer", "trainer-2"} <= leases
        assert db.query("SELECT COUNT(*) FROM processed")[0][0] > 0
        policies = db.query(
            "SELECT version FROM model_versions WHERE name = ?", (f"{PIPELINE}-policy",)
        )
        assert len(policies) == 2, policies
        assert db.query("SELECT COUNT(*) FROM keyed_state WHERE scope = 'trainer/pipelines'")[0][0]
        assert db.query("SELECT key FROM keyed_state WHERE scope = 'dataprep/sources'") == [
            ("reviews",)
        ]
        assert db.query(
            "SELECT COUNT(*) FROM keyed_state WHERE scope = 'reward/pipeline-datasets'"
        )[0][0]
    written = [
        p.relative_to(artifacts)
        for pattern in (
            "state/*/feedback.sqlite",
            "state/*/*.json",
            "state/*/runs/claims/*",
            "state/*/runs/replicas/*",
            "registry/models/*",
            ".bus/*/dedupe.sqlite3",
        )
        for p in artifacts.glob(pattern)
    ]
    assert written == [], written
