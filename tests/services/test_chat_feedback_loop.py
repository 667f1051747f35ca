"""The chat loop through the five services (one process, in-process bus, Triton):
preference feedback recorded with RecordFeedback is DPO data of the next version, its
lineage names the feedback window, and a candidate worse than the serving version is
kept, not promoted.

Round 2's feedback is the held-out preference pairs reversed (a labeller clicking the
wrong side): DPO learns it, its held-out pairwise accuracy falls below the serving
version's, and the pairwise gate keeps it out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rlhf.services.inference.settings import InferenceSettings

import rlhf.pipelines
from rlhf.client import Client
from rlhf.demo import Observer, PlatformInProcess
from rlhf.engine.data import load_dataset
from rlhf.registry import ModelRegistry
from rlhf.runtime.settings import load_settings
from rlhf.workflows.feedback import load_window

pytestmark = [pytest.mark.triton, pytest.mark.timeout(900)]

PIPELINE = "e2e-chat"


def test_preference_feedback_trains_dpo_and_a_worse_candidate_is_kept(
    tmp_path, monkeypatch, data_dir
):
    monkeypatch.setattr(rlhf.pipelines, "PIPELINES_DIR", Path(__file__).parent / "e2e")
    settings = load_settings(
        InferenceSettings,
        artifact_dir=tmp_path,
        bus="inprocess",
        data_dir=data_dir,
        grpc={"host": "127.0.0.1", "port": 0},
    )
    observer = Observer()
    platform = PlatformInProcess(settings)
    target = f"127.0.0.1:{platform.start(observer)}"
    client = Client(dataprep=target, trainer=target, inference=target, timeout=120)
    try:
        client.prepare(pipeline=PIPELINE)
        first = observer.wait_for(
            lambda: observer.policy_promotions(PIPELINE), 600, "the first promotion"
        )[0].model
        assert first.gates["pairwise_not_worse"]

        # Feedback: the held-out pairs with chosen and rejected swapped.
        prefs = next((tmp_path / "datasets" / "prefs").glob("*/manifest.json")).parent
        held_out = list(load_dataset(prefs)["validation"])[:24]
        for i, pair in enumerate(held_out):
            client.record_feedback(
                f"req-{i}",
                first.version,
                kind="preference",
                prompt=pair.prompt,
                chosen=pair.rejected,
                rejected=pair.chosen,
                pipeline=PIPELINE,
                feedback_id=f"swap-{i}",
            )
        request = observer.wait_for(lambda: observer.retrain_requests, 120, "retrain")[0]
        assert request.window.counts["preference"] == 24

        def candidate():
            return [
                c.model
                for c in observer.checkpoints
                if c.model.name == f"{PIPELINE}-policy" and c.model.version != first.version
            ]

        second = observer.wait_for(candidate, 600, "the retrained candidate")[0]
        registry = ModelRegistry(tmp_path / "registry")
        second = registry.get(second.version)
        # Its lineage names the window, and the window's pairs were its DPO data.
        (window,) = second.lineage.feedback_windows
        assert window.window_id == request.window_id
        assert window.counts["preference"] == 24 and len(window.feedback_ids) == 24
        data = load_window(Path(window.dataset.uri.removeprefix("file://")))
        assert [(p.chosen, p.rejected) for p in data.preferences] == [
            (p.rejected, p.chosen) for p in held_out
        ]
        base_pairs = len(load_dataset(prefs)["train"])
        metrics = second.lineage.metrics
        assert metrics["train_pairs"] > base_pairs  # the feedback was mixed in
        assert second.lineage.parent_version == first.version
        # Worse than the serving version: kept with the failed gate, not promoted.
        assert metrics["pairwise_accuracy_after"] < metrics["pairwise_accuracy_before"] - 0.1
        assert second.gates["pairwise_not_worse"] is False
        assert not second.promoted
        assert registry.promoted(f"{PIPELINE}-policy").version == first.version
        json.dumps(dict(metrics))

        runs = client.list_runs(pipeline=PIPELINE)
        assert runs and all(r.run_id for r in runs)

        # An operator may override the gates, and roll back.
        forced = client.promote_model(second.version, reason="operator override")
        assert forced.promoted and forced.version == second.version
        observer.wait_for(
            lambda: [p for p in observer.promoted if p.model.version == second.version],
            60,
            "model.promoted for the override",
        )
        back = client.rollback_model(f"{PIPELINE}-policy", reason="worse in production")
        assert back.version == first.version
        assert registry.promoted(f"{PIPELINE}-policy").version == first.version
    finally:
        client.close()
        platform.stop()
