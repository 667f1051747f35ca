"""A training run killed after registering its model, then resumed, registers and
promotes once (issue 20): the resumed attempt gets the version its first attempt
registered, and the events it publishes again carry the first attempt's ids, so
consumers drop them as duplicates.

The trainer's RL round runs for real up to the training itself (stubbed: a fixed
result that passes the gates); the kill is a BaseException the run manager does not
catch, so the run's record stays RUNNING on disk, as after a SIGKILL.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from rlhf.services.trainer import server as trainer

from rlhf.runtime.bus import topics
from rlhf.runtime.bus.core import BusOptions
from rlhf.runtime.bus.inprocess import InProcessBroker, InProcessBus
from rlhf.runtime.service import ServiceContext
from rlhf.runtime.settings import load_settings
from rlhf.workflows import stages

PIPELINE, PIPELINE_RUN = "reviews-en", "prepare-000000000001"


class Killed(BaseException):
    """The process dies here (not an error the run manager records)."""


def start_trainer(root, broker) -> tuple[ServiceContext, trainer.TrainerService]:
    """A trainer process over `root`; its constructor resumes unfinished runs."""
    settings = load_settings(artifact_dir=root, bus="inprocess")
    bus = InProcessBus(source="rlhf/trainer", broker=broker)  # never started: publishes only
    ctx = ServiceContext("trainer", settings, bus)
    return ctx, trainer.TrainerService(ctx)


@pytest.mark.parametrize("killed", ["after register", "after promoting"])
def test_a_run_killed_after_registering_registers_and_promotes_once(tmp_path, monkeypatch, killed):
    broker = InProcessBroker()
    observer = InProcessBus(
        source="observer", broker=broker, options=BusOptions(poll_timeout_s=0.05)
    )
    seen: Counter[str] = Counter()
    for topic in (topics.POLICY_CHECKPOINT_READY, topics.MODEL_PROMOTED):
        observer.subscribe(topic, "observer", lambda e: seen.update([e.payload.model.version]))
    observer.start()

    (tmp_path / "policy").mkdir()
    monkeypatch.setattr(
        trainer.TrainerService,
        "_run_stage",
        lambda self, ctx, spec, stage, datasets, **kw: stages.StageResult(
            tmp_path / "policy", {"steps": 4.0, "reward_gain": 0.5}
        ),
    )
    monkeypatch.setattr(
        trainer.promotion, "evaluate_gates", lambda gates, metrics: {"reward_up": True}
    )

    ctx, service = start_trainer(tmp_path, broker)
    reward = ctx.registry.register(f"{PIPELINE}-classifier", "classifier", "file:///r")
    service.state.update(
        PIPELINE_RUN, pipeline=PIPELINE, profile="quick", datasets={}, base_policy="/base"
    )
    real_register = ctx.registry.register

    def register_then_die(*args, **kwargs):
        real_register(*args, **kwargs)
        raise Killed

    def work_then_die(run):
        service._policy_work(run)
        raise Killed

    if killed == "after register":
        monkeypatch.setattr(ctx.registry, "register", register_then_die)
    record = ctx.runs.submit(
        "train-policy",
        work_then_die if killed == "after promoting" else service._policy_work,
        params={
            "kind": "policy",
            "pipeline_run": PIPELINE_RUN,
            "reward_version": reward.version,
            "judge_version": "",
            "reward_metrics": {},
            "retrain": False,
        },
        pipeline=PIPELINE,
    )
    future = ctx.runs._futures[record.run_id]
    assert isinstance(future.exception(timeout=30), Killed)
    ctx.close()
    ctx.bus.close()
    assert ctx.runs.get(record.run_id).state == "running"  # as a SIGKILL leaves it

    restarted, _ = start_trainer(tmp_path, broker)  # resumes the run
    final = restarted.runs.wait(record.run_id, timeout=30)
    assert final.state == "succeeded", final.message
    assert final.attempts == 2

    registry = restarted.registry
    policies = [m.version for m in registry.list(name=f"{PIPELINE}-policy")]
    assert policies == [f"{PIPELINE}-policy-v1"]
    assert final.result["version"] == policies[0]
    assert [e["version"] for e in registry.promotions(f"{PIPELINE}-policy")] == policies
    assert [e["version"] for e in registry.promotions(f"{PIPELINE}-classifier")] == [reward.version]

    # Consumers handle each event once: the checkpoint and the policy's promotion (the
    # policy's version twice), the classifier's promotion once.
    published = 3 if killed == "after register" else 6
    deadline = time.monotonic() + 10
    while observer.stats.delivered < published:
        assert time.monotonic() < deadline, observer.stats
        time.sleep(0.05)
    assert observer.stats.duplicates == published - 3
    assert seen == {policies[0]: 2, reward.version: 1}
    restarted.close()
    restarted.bus.close()
    observer.close()
