"""Fixtures that run the inference service against the real tritonserver.

`inference_stack` (session scope: Triton and model loads cost seconds) builds tiny
HF models, starts the tritonserver binary from the nvidia-pytriton wheel through
`build_inference_service`, and serves the gRPC API on a free port from a background
event loop. Tests talk to it through `inference_stub` like any client would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest


@dataclass
class TinyModels:
    policy_v1: Path
    policy_v2: Path
    classifier_v1: Path
    classifier_v2: Path


@pytest.fixture(scope="session")
def tiny_serving_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Two versions each (different random weights) of a tiny policy and classifier."""
    from tests.serving.tiny_models import build_tiny_classifier, build_tiny_policy

    root = tmp_path_factory.mktemp("serving-models")
    return TinyModels(
        policy_v1=build_tiny_policy(root / "policy-v1", seed=1),
        policy_v2=build_tiny_policy(root / "policy-v2", seed=2),
        classifier_v1=build_tiny_classifier(root / "classifier-v1", seed=1),
        classifier_v2=build_tiny_classifier(root / "classifier-v2", seed=2),
    )


class ServiceThread:
    """A GrpcServer with the inference service, running in its own event loop thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Any = None
        self.port = 0

    def start(self) -> ServiceThread:
        from rlhf.services.inference.server import attach

        from rlhf.runtime.grpc import GrpcServer
        from rlhf.runtime.settings import GrpcSettings

        self.thread.start()

        async def boot() -> int:
            self.server = GrpcServer(GrpcSettings(port=0, shutdown_grace_s=1.0), "inference")
            await attach(self.server, self.app)
            return await self.server.start()

        self.port = asyncio.run_coroutine_threadsafe(boot(), self.loop).result(60)
        return self

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class InferenceStack:
    app: Any
    service: ServiceThread
    channel: grpc.Channel
    models: TinyModels

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.service.port}"


@pytest.fixture(scope="session")
def inference_stack(
    tiny_serving_models: TinyModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InferenceStack]:
    from rlhf.services.inference.server import build_inference_service
    from rlhf.services.inference.settings import InferenceSettings

    from rlhf.runtime.settings import load_settings

    root = tmp_path_factory.mktemp("inference")
    models = tiny_serving_models
    settings = load_settings(
        InferenceSettings,
        artifact_dir=root,
        bus="inprocess",
        serving={
            "readiness_interval_s": 0.5,
            "torch_threads": 1,
            "models": [
                {"name": "policy", "version": "policy-v1", "kind": "policy",
                 "model_dir": str(models.policy_v1)},
                {"name": "classifier", "version": "classifier-v1", "kind": "classifier",
                 "model_dir": str(models.classifier_v1)},
            ],
        },
    )  # fmt: skip
    app = build_inference_service(settings)
    service = ServiceThread(app).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield InferenceStack(app, service, channel, models)
    finally:
        channel.close()
        service.stop()  # its shutdown hook stops Triton and the bus


@pytest.fixture(scope="session")
def inference_stub(inference_stack: InferenceStack) -> Any:
    from rlhf.v1 import inference_pb2_grpc

    return inference_pb2_grpc.InferenceServiceStub(inference_stack.channel)
