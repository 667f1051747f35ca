"""The compress stage through the five services (one process, in-process bus, Triton):
a promoted classifier is compressed to int8 by the reward service, registered as its
child with the measurements, and served in its place when the quality gate passes; a
copy over its bound is kept, not promoted, and the full classifier keeps serving.

`e2e-compress-kept` bounds the drop at 0.0 and the test forces a drop of 0.25 on its
measurement (int8 of a tiny model may lose nothing), so its gate must fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from rlhf.services.inference.settings import InferenceSettings

import rlhf.pipelines
import rlhf.workflows.compression as compression
from rlhf.client import Client
from rlhf.demo import Observer, PlatformInProcess
from rlhf.registry import ModelRegistry
from rlhf.runtime.settings import load_settings
from rlhf.v1 import common_pb2

pytestmark = [pytest.mark.triton, pytest.mark.timeout(600)]

PASSES, KEPT = "e2e-compress", "e2e-compress-kept"
FORCED_DROP = 0.25
TEXTS = ["a wonderful, moving film", "dull and far too long"]


def forcing_a_drop_in(pipeline: str, monkeypatch) -> None:
    """The compressed model of `pipeline` measures FORCED_DROP below its source."""
    real = compression.compress_stage

    def measured(spec, stage, *args, **kwargs):
        result = real(spec, stage, *args, **kwargs)
        if spec.name == pipeline:
            m = result.metrics
            m["quality_after"] = m["quality_before"] - FORCED_DROP
            m["quality_drop"] = FORCED_DROP
        return result

    monkeypatch.setattr(compression, "compress_stage", measured)


def compress_run_done(observer: Observer, pipeline: str):
    return [
        e.status
        for e in observer.runs.values()
        if e.pipeline == pipeline
        and e.status.stage == "reward-compress"
        and e.status.state == common_pb2.RUN_STATE_SUCCEEDED
    ]


def served_by(client: Client, observer: Observer, name: str, version: str):
    """The inference service's Classify answer once `version` of `name` answers it."""

    def answered():
        try:
            reply = client.classify(TEXTS, model=name)
        except grpc.RpcError:  # not loaded yet
            return None
        return reply if reply.model_version == version else None

    return observer.wait_for(answered, 120, f"inference serving {version}")


def test_the_reward_service_compresses_the_promoted_classifier_and_gates_it(
    tmp_path, monkeypatch, data_dir
):
    monkeypatch.setattr(rlhf.pipelines, "PIPELINES_DIR", Path(__file__).parent / "e2e")
    forcing_a_drop_in(KEPT, monkeypatch)
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
    client = Client(dataprep=target, trainer=target, reward=target, inference=target, timeout=120)
    registry = ModelRegistry(tmp_path / "registry")
    try:
        client.prepare(pipeline=PASSES)
        client.prepare(pipeline=KEPT)

        # Within the bound: the int8 copy is promoted through model.promoted and serves.
        name = f"{PASSES}-classifier"
        promoted = observer.wait_for(
            lambda: [p.model for p in observer.promoted if p.model.name == name], 300, name
        )
        source = promoted[0]
        compressed = observer.wait_for(
            lambda: [p.model for p in observer.promoted if p.model.name == name][1:],
            300,
            "the compressed classifier's promotion",
        )[0]
        compressed = registry.get(compressed.version)
        assert compressed.lineage.parent_version == source.version
        assert json.loads(compressed.lineage.config_json)["compress"]["method"] == "int8"
        metrics = compressed.lineage.metrics
        for key in ("size_mb", "throughput", "latency_p50_ms", "quality"):
            assert metrics[f"{key}_before"] > 0 and metrics[f"{key}_after"] > 0, key
        assert metrics["quality_drop"] <= metrics["max_quality_drop"] == 0.5
        assert compressed.gates["compression_quality"] and compressed.promoted
        assert registry.promoted(name).version == compressed.version
        served = served_by(client, observer, name, compressed.version)
        assert len(served.results) == len(TEXTS)

        # Over the bound: registered as the source's child, kept, the source serving.
        name = f"{KEPT}-classifier"
        observer.wait_for(lambda: compress_run_done(observer, KEPT), 300, "the kept compress run")
        (run,) = compress_run_done(observer, KEPT)
        source = registry.promoted(name)
        (kept,) = [m for m in registry.list(name) if m.lineage.parent_version == source.version]
        assert not kept.promoted and kept.gates["compression_quality"] is False
        assert kept.lineage.metrics["quality_drop"] == pytest.approx(FORCED_DROP)
        assert kept.lineage.metrics["max_quality_drop"] == 0.0
        assert f"{kept.version} not promoted: compression_quality (" in run.message
        assert "quality_drop=0.25, max_quality_drop=0" in run.message
        assert not [p for p in observer.promoted if p.model.version == kept.version]
        served_by(client, observer, name, source.version)
    finally:
        client.close()
        platform.stop()
