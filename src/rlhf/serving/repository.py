"""Write a Triton model repository entry for one model version.

Layout (Triton's own, Python backend), one Triton model per served version so a new
version loads beside the old one and the switch is a routing change:

    <repository>/<triton_name>/config.pbtxt
    <repository>/<triton_name>/1/model.py      (copy of rlhf.serving.backend)
    <repository>/<triton_name>/1/rlhf_compression.py  (copy of engine.compression.restore)
    <repository>/<triton_name>/1/rlhf_continuous.py   (copy of rlhf.serving.continuous)
    <repository>/<triton_name>/1/hf/...        (only with copy_weights=True)

The trainer can publish such an entry to a shared volume for a cluster Triton; local
mode writes it next to the in-process server and points at the HF directory in place.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rlhf.engine.compression import restore
from rlhf.serving import backend, continuous

ModelKindName = Literal["policy", "classifier"]


@dataclass
class BatchingConfig:
    """Triton dynamic batching for one model."""

    max_batch_size: int = 32
    """Largest batch (rows) Triton forms; also the most rows one request may carry."""
    preferred_batch_sizes: list[int] = field(default_factory=lambda: [4, 8, 16])
    """Batch sizes the batcher tries to reach before the queue delay expires."""
    max_queue_delay_us: int = 5000
    """How long a request may wait for others to join its batch."""
    instance_count: int = 1
    """Model instances (processes) per version; 1 fits a 2-core machine."""
    continuous: bool = False
    """Policies: continuous batching (`rlhf.serving.continuous`); requests join the
    running batch between decode steps, so they go to the model without a queue delay."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        bad = [s for s in self.preferred_batch_sizes if not 1 <= s <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred_batch_sizes {bad} outside 1..{self.max_batch_size}")


def triton_model_name(version: str) -> str:
    """A Triton model name for a version id (Triton allows letters, digits, . _ -)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", version).strip(".")
    if not name:
        raise ValueError(f"version {version!r} gives an empty Triton model name")
    return name


def _tensor(name: str, dtype: str, optional: bool = False) -> str:
    extra = " optional: true" if optional else ""
    return f'  {{ name: "{name}" data_type: {dtype} dims: [ 1 ]{extra} }}'


def render_config(
    triton_name: str,
    kind: ModelKindName,
    model_dir: str,
    version: str,
    batching: BatchingConfig,
    dtype: str = "float32",
    torch_threads: int = 0,
    device: str = "cpu",
) -> str:
    """config.pbtxt text for one model version ("cuda" = one instance group per GPU)."""
    if kind == "policy":
        inputs = [
            _tensor("PROMPT", "TYPE_STRING"),
            _tensor("IS_CHAT", "TYPE_BOOL", optional=True),
            _tensor("MAX_NEW_TOKENS", "TYPE_INT32", optional=True),
            _tensor("TEMPERATURE", "TYPE_FP32", optional=True),
            _tensor("TOP_P", "TYPE_FP32", optional=True),
            _tensor("TOP_K", "TYPE_INT32", optional=True),
            _tensor("SEED", "TYPE_INT64", optional=True),
            _tensor("STREAM", "TYPE_BOOL", optional=True),
        ]
        outputs = [
            _tensor("TEXT", "TYPE_STRING"),
            _tensor("BATCH_SIZE", "TYPE_INT32"),
            _tensor("FINAL", "TYPE_BOOL"),
        ]
    elif kind == "classifier":
        inputs = [_tensor("TEXT", "TYPE_STRING"), _tensor("TEXT_PAIR", "TYPE_STRING", True)]
        outputs = [
            _tensor("LABEL", "TYPE_STRING"),
            _tensor("SCORE", "TYPE_FP32"),
            _tensor("REWARD", "TYPE_FP32"),
            _tensor("BATCH_SIZE", "TYPE_INT32"),
        ]
    else:
        raise ValueError(f"kind must be 'policy' or 'classifier', got {kind!r}")
    params = {
        "kind": kind,
        "model_dir": model_dir,
        "version": version,
        "dtype": dtype,
        "torch_threads": str(torch_threads),
        "device": "cuda" if device.startswith("cuda") else "cpu",
    }
    in_flight = kind == "policy" and batching.continuous
    if in_flight:
        params["continuous_batching"] = "true"
    param_text = "\n".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()
    )
    preferred = ", ".join(str(s) for s in batching.preferred_batch_sizes)
    instance_kind = "KIND_GPU" if device.startswith("cuda") else "KIND_CPU"
    decoupled = "model_transaction_policy { decoupled: true }\n" if kind == "policy" else ""
    return (
        f'name: "{triton_name}"\n'
        'backend: "python"\n'
        f"max_batch_size: {batching.max_batch_size}\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {0 if in_flight else batching.max_queue_delay_us}\n"
        "}\n"
        f"{decoupled}"
        "input [\n" + ",\n".join(inputs) + "\n]\n"
        "output [\n" + ",\n".join(outputs) + "\n]\n"
        f"instance_group [ {{ count: {batching.instance_count} kind: {instance_kind} }} ]\n"
        f"{param_text}\n"
    )


def write_model_version(
    repository: str | Path,
    version: str,
    kind: ModelKindName,
    model_dir: str | Path,
    batching: BatchingConfig | None = None,
    dtype: str = "float32",
    copy_weights: bool = False,
    torch_threads: int = 0,
    device: str = "cpu",
) -> str:
    """Write (or overwrite) the repository entry for `version`; returns its Triton name.

    `copy_weights=True` copies the HF directory into the entry so the repository is
    self-contained (what a trainer publishes for a cluster Triton).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"model_dir {model_dir} has no config.json (not an HF directory)")
    name = triton_model_name(version)
    entry = Path(repository) / name
    version_dir = entry / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(backend.__file__, version_dir / "model.py")
    # Compressed versions and continuous batching load these where the project is not installed.
    shutil.copyfile(restore.__file__, version_dir / backend.RESTORE_FILE)
    shutil.copyfile(continuous.__file__, version_dir / backend.CONTINUOUS_FILE)
    if copy_weights:
        target = version_dir / "hf"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(model_dir, target)
        location = "hf"
    else:
        location = str(model_dir.resolve())
    config = render_config(
        name, kind, location, version, batching or BatchingConfig(), dtype, torch_threads, device
    )
    (entry / "config.pbtxt").write_text(config)
    return name
