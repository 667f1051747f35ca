"""Exact checkpoint/resume shared by every training algorithm.

A checkpoint is a directory ``<run_dir>/checkpoints/step-<N>/`` holding:

* ``<name>.safetensors`` for every module (bit-exact weights, tied weights handled),
* ``trainer_state.pt``: optimizer and scheduler states, the Python/NumPy/torch RNG
  states and the algorithm's own state (step, data position, KL controller, ...).

It is written to a temporary directory and renamed into place, and ``latest`` is
updated last, so a run killed at any moment resumes from its last complete
checkpoint. Restoring all of the above makes a resumed run reproduce the
uninterrupted one exactly (the tests check bit-identical weights on CPU).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

STATE_FILE = "trainer_state.pt"
LATEST_FILE = "latest"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or does not match the run (message names the path)."""


def rng_state() -> dict[str, Any]:
    """Every random number generator a training step can touch."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) in one call."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_root(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The last complete checkpoint of a run, or None when it has none."""
    root = checkpoint_root(run_dir)
    marker = root / LATEST_FILE
    if not marker.is_file():
        return None
    path = root / marker.read_text().strip()
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{marker} points at {path}, which has no {STATE_FILE}")
    return path


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    schedulers: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step-<step>`` atomically and keep only the last ``keep``."""
    from safetensors.torch import save_model

    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        for module_name, module in modules.items():
            save_model(module, str(tmp / f"{module_name}.safetensors"))
        payload = {
            "step": step,
            "optimizers": {k: v.state_dict() for k, v in (optimizers or {}).items()},
            "schedulers": {k: v.state_dict() for k, v in (schedulers or {}).items()},
            "rng": rng_state(),
            "state": state or {},
        }
        torch.save(payload, tmp / STATE_FILE)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    marker_tmp = root / f".{LATEST_FILE}.tmp"
    marker_tmp.write_text(name)
    marker_tmp.replace(root / LATEST_FILE)
    old = sorted(p for p in root.glob("step-*") if p.is_dir())
    for path in old[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
    return final


def load_checkpoint(
    path: str | os.PathLike[str],
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    schedulers: dict[str, Any] | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore modules, optimizers, schedulers and RNGs; return {"step", "state"}."""
    from safetensors.torch import load_model

    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a checkpoint: no {STATE_FILE}")
    payload = torch.load(state_file, map_location="cpu", weights_only=False)
    for module_name, module in modules.items():
        file = path / f"{module_name}.safetensors"
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} has no weights for module {module_name!r}")
        device = next(module.parameters()).device
        load_model(module, str(file), device=str(device))
    for key, optimizer in (optimizers or {}).items():
        if key not in payload["optimizers"]:
            raise CheckpointError(f"checkpoint {path} has no optimizer {key!r}")
        optimizer.load_state_dict(payload["optimizers"][key])
    for key, scheduler in (schedulers or {}).items():
        if key not in payload["schedulers"]:
            raise CheckpointError(f"checkpoint {path} has no scheduler {key!r}")
        scheduler.load_state_dict(payload["schedulers"][key])
    if restore_rng:
        set_rng_state(payload["rng"])
    return {"step": payload["step"], "state": payload["state"]}
