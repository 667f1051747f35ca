"""Two real tritonserver replicas behind one inference service (issue 21, item 5).

Both Tritons share one model repository, as the chart's Triton pods share the PVC.
The inference service sends requests to replica A (standing for the ClusterIP Service)
and model control to both (`triton_replicas` lists them, standing for the headless
Service's DNS answer). A promotion loads the version on both; a replica killed and
started afresh gets the current version from the reconcile loop; a rollback puts both
back on the previous version.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from rlhf.serving.client import TritonClient
from rlhf.serving.triton_server import LocalTritonConfig, LocalTritonServer
from rlhf.v1 import common_pb2, events_pb2

pytestmark = pytest.mark.triton


def _promoted(version: str, path: object, canary: int = 100) -> events_pb2.ModelPromoted:
    return events_pb2.ModelPromoted(
        model=common_pb2.ModelVersion(
            name="classifier",
            version=version,
            kind=common_pb2.MODEL_KIND_CLASSIFIER,
            artifact=common_pb2.ArtifactRef(uri=f"file://{path}", kind="model"),
        ),
        canary_percent=canary,
    )


def _loaded(triton: LocalTritonServer) -> set[str]:
    client = TritonClient(triton.grpc_url)
    try:
        return client.loaded_models()
    finally:
        client.close()


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _service(tmp_path, a: LocalTritonServer, b: LocalTritonServer, **serving: object):
    """The inference service: requests to A (the Service), model control to A and B."""
    from rlhf.services.inference.server import build_inference_service
    from rlhf.services.inference.settings import InferenceSettings

    from rlhf.runtime.settings import load_settings

    settings = load_settings(
        InferenceSettings,
        artifact_dir=tmp_path / "artifacts",
        bus="inprocess",
        serving={
            "triton_url": a.grpc_url,
            "triton_replicas": f"{a.grpc_url},{b.grpc_url}",
            "model_repository": str(tmp_path / "models"),
            "replica_resync_s": 1.0,
            "torch_threads": 1,
            **serving,
        },
    )
    return build_inference_service(settings)


def test_every_replica_serves_the_promoted_version(tiny_serving_models, tmp_path) -> None:
    repository = tmp_path / "models"
    a = LocalTritonServer(LocalTritonConfig(repository)).start()
    b = LocalTritonServer(LocalTritonConfig(repository)).start()
    app = None
    try:
        app = _service(tmp_path, a, b)
        service, engine = app.service, app.engine
        models = tiny_serving_models

        service.on_model_promoted(_promoted("classifier-v1", models.classifier_v1))
        assert _loaded(a) == _loaded(b) == {"classifier-v1"}
        assert engine.ready()

        # Replica B dies and a fresh one (empty index) takes its address.
        ports = {"grpc_port": b.grpc_port, "http_port": b.http_port, "metrics_port": b.metrics_port}
        b.stop()
        b = LocalTritonServer(LocalTritonConfig(repository, **ports)).start()
        assert not engine.ready(), "a replica without the promoted version is not SERVING"
        _wait_for(lambda: _loaded(b) == {"classifier-v1"}, "the reconcile to load B")
        _wait_for(engine.ready, "readiness once B caught up", 10)
        fresh = TritonClient(b.grpc_url)
        try:
            via_b, _ = fresh.classify("classifier-v1", ["a great film"])
        finally:
            fresh.close()
        via_service, _ = engine.client.classify("classifier-v1", ["a great film"])
        assert via_b == via_service

        # A canary lives on both replicas beside the stable version; rolling it back
        # leaves both on the previous version only.
        service.on_model_promoted(_promoted("classifier-v2", models.classifier_v2, 50))
        assert _loaded(a) == _loaded(b) == {"classifier-v1", "classifier-v2"}
        assert engine.ready()
        engine.versions.rollback("classifier")
        assert _loaded(a) == _loaded(b) == {"classifier-v1"}
        route = engine.versions.route_of("classifier")
        assert [v.version for v in route.live()] == ["classifier-v1"]
        assert engine.ready()
    finally:
        if app is not None:
            app.close()
        a.stop()
        b.stop()


def test_poll_mode_waits_until_every_replica_loaded_the_version(
    tiny_serving_models, tmp_path
) -> None:
    repository = tmp_path / "models"
    config = LocalTritonConfig(repository, model_control_mode="poll", repository_poll_secs=1)
    a = LocalTritonServer(config).start()
    b = LocalTritonServer(config).start()  # ports 0: each picks free ones
    app = None
    try:
        app = _service(tmp_path, a, b, model_control="poll")
        app.service.on_model_promoted(_promoted("classifier-v1", tiny_serving_models.classifier_v1))
        assert _loaded(a) == _loaded(b) == {"classifier-v1"}
        assert app.engine.ready()
    finally:
        if app is not None:
            app.close()
        a.stop()
        b.stop()
