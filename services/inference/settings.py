"""Settings of the inference service (env `RLHF_SERVING__*`, or `serving:` in YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from rlhf.runtime.settings import Settings


class BatchingSettings(BaseModel):
    """Triton dynamic batching for one model kind."""

    max_batch_size: int = Field(32, ge=1, le=1024)
    preferred_batch_sizes: list[int] = Field(default_factory=lambda: [4, 8, 16])
    max_queue_delay_us: int = Field(5000, ge=0, description="wait for a fuller batch")
    instance_count: int = Field(1, ge=1)
    continuous: bool = Field(
        False,
        description="policies only: continuous (in-flight) batching, requests join the "
        "running batch between decode steps (docs/serving.md has the measurements)",
    )

    @model_validator(mode="after")
    def _preferred_fit(self) -> BatchingSettings:
        bad = [s for s in self.preferred_batch_sizes if not 1 <= s <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred_batch_sizes {bad} outside 1..{self.max_batch_size}")
        return self


class InitialModel(BaseModel):
    """A version to serve at start-up (before any `model.promoted` event)."""

    name: str
    version: str
    kind: Literal["policy", "classifier"]
    model_dir: str = Field(description="HF directory (save_pretrained); 'smollm2' allowed")


class ServingSettings(BaseModel):
    triton_url: str | None = Field(
        None, description="external Triton gRPC host:port; unset = local"
    )
    triton_replicas: str | None = Field(
        None,
        description="every Triton replica, for model control: a headless Service host:port "
        "(DNS A records, one per pod) or host:port,host:port; each load/unload goes to all "
        "and a reconcile loop catches up new or restarted replicas. Requests still use "
        "triton_url. Unset: triton_url only (one Triton)",
    )
    replica_resync_s: float = Field(
        10.0, gt=0, description="seconds between reconciles of the Triton replicas"
    )
    model_control: Literal["explicit", "poll"] = Field(
        "explicit",
        description="Triton's --model-control-mode: explicit (this service loads and "
        "unloads versions) or poll (Triton loads what appears in the repository; a "
        "deploy waits until every replica has it, and nothing is unloaded)",
    )
    model_repository: Path | None = Field(
        None, description="Triton model repository; default <artifact_dir>/triton"
    )
    write_repository: bool = Field(True, description="False: the trainer publishes entries")
    policy_batching: BatchingSettings = Field(default_factory=BatchingSettings)
    classifier_batching: BatchingSettings = Field(
        default_factory=lambda: BatchingSettings(
            max_batch_size=64, preferred_batch_sizes=[8, 16, 32], max_queue_delay_us=5000
        )
    )
    dtype: Literal["float32", "bfloat16"] = "float32"
    torch_threads: int = Field(
        1,
        ge=0,
        description="intra-op threads per model process (0 = torch default); 1 avoids "
        "spin-wait oversubscription when model processes share a few CPU cores",
    )
    models: list[InitialModel] = Field(default_factory=list)
    default_canary_percent: int = Field(
        100, ge=1, le=100, description="share for a promoted version whose event says 0"
    )
    request_timeout_s: float = Field(60.0, gt=0, description="when the caller sets no deadline")
    retry_after_s: float = Field(2.0, ge=0, description="hint sent with UNAVAILABLE")
    readiness_interval_s: float = Field(2.0, gt=0)
    subscribe_promotions: bool = Field(True, description="react to rlhf.model.promoted")


class InferenceSettings(Settings):
    serving: ServingSettings = Field(default_factory=ServingSettings)
