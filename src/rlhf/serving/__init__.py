"""Serving on NVIDIA Triton: model repository entries (Python backend), the local
tritonserver from the nvidia-pytriton wheel, tritonclient wrappers and model versions
with hot reload, canary share and rollback. See docs/serving.md."""

from rlhf.serving.client import (
    ClassifyOutput,
    GenerationEvent,
    ModelInputError,
    ModelNotLoaded,
    ServingError,
    TritonClient,
    TritonUnavailable,
    chat_payload,
)
from rlhf.serving.engine import EngineConfig, ServingEngine
from rlhf.serving.repository import BatchingConfig, triton_model_name, write_model_version
from rlhf.serving.triton_server import LocalTritonConfig, LocalTritonServer, TritonStartError
from rlhf.serving.versions import ServedVersion, UnknownModel, VersionManager

__all__ = [
    "BatchingConfig",
    "ClassifyOutput",
    "EngineConfig",
    "GenerationEvent",
    "LocalTritonConfig",
    "LocalTritonServer",
    "ModelInputError",
    "ModelNotLoaded",
    "ServedVersion",
    "ServingEngine",
    "ServingError",
    "TritonClient",
    "TritonStartError",
    "TritonUnavailable",
    "UnknownModel",
    "VersionManager",
    "chat_payload",
    "triton_model_name",
    "write_model_version",
]
