"""Exact checkpoint/resume shared by every training algorithm.

A checkpoint is a directory ``<run_dir>/checkpoints/step-<N>/`` holding:

* ``<name>.safetensors`` for every module (bit-exact weights, tied weights handled),
* ``trainer_state.pt``: optimizer and scheduler states, the Python/NumPy/torch RNG
  states and the algorithm's own state (step, data position, KL controller, ...).
  It holds tensors and plain containers only (dict, list, tuple, str, int, float,
  bool, None) and is read with ``torch.load(weights_only=True)``: loading a checkpoint
  never runs code from the file, and one that holds any other pickled object is
  refused with a CheckpointError. NumPy values in the algorithm's state are stored as
  Python numbers or tensors; anything else that is not plain fails on save.

It is written to a temporary directory and renamed into place, and ``latest`` is
updated last, so a run killed at any moment resumes from its last complete
checkpoint. Restoring all of the above makes a resumed run reproduce the
uninterrupted one exactly (the tests check bit-identical weights on CPU).
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import tempfile
from collections import OrderedDict
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
    """Every random number generator a training step can touch, as plain values.

    Python's Mersenne Twister state becomes a dict of ints (a list for its 625 words),
    NumPy's legacy state a dict with its 624 key words as an int64 tensor; torch's CPU
    and CUDA states are ByteTensors already. All of it loads with weights_only=True.
    """
    version, internal, gauss_next = random.getstate()
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": str(bit_generator),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() returned."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(w) for w in py["internal"]), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["bit_generator"],
            np.asarray(npy["keys"].numpy(), dtype=np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# What torch.load(weights_only=True) accepts and a checkpoint may hold as is.
_PLAIN_LEAVES = (
    torch.Tensor,
    torch.Size,
    str,
    bytes,
    int,
    float,
    complex,
    bool,
    type(None),
    torch.dtype,
    torch.device,
)


def _plain(obj: Any, where: str) -> Any:
    """``obj`` with NumPy values and paths made plain; CheckpointError for anything else.

    Run on the whole trainer state before saving, so every checkpoint written loads
    with weights_only=True (a resume would otherwise fail only when it is needed).
    """
    if isinstance(obj, _PLAIN_LEAVES):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise CheckpointError(f"{where}: a NumPy array of Python objects cannot be saved")
        return torch.from_numpy(obj.copy())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        out = {_plain(k, f"{where} key"): _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
        return type(obj)(out) if type(obj) in (dict, OrderedDict) else out
    if isinstance(obj, list | tuple | set | frozenset):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, list):
            return items
        return set(items) if isinstance(obj, set | frozenset) else tuple(items)
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: a checkpoint holds "
        "tensors, numbers, strings and dicts/lists/tuples of them only (it is loaded with "
        "torch.load(weights_only=True)); store this value's state_dict() or plain fields"
    )


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


def discard_run_files(run_dir: str | os.PathLike[str]) -> None:
    """Drop a finished run's resume checkpoints and its ``final/`` copy.

    A stage keeps its product in its own model directory, so once that is saved the
    checkpoints (weights, optimizer moments and RNG states of every module: several GB
    for a 135M-parameter PPO run) only fill the disk. metrics.jsonl stays."""
    root = Path(run_dir)
    for path in (checkpoint_root(root), root / "final"):
        shutil.rmtree(path, ignore_errors=True)


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
        torch.save(_plain(payload, "checkpoint"), tmp / STATE_FILE)
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


def read_trainer_state(state_file: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a trainer_state.pt with ``weights_only=True``: tensors and plain values only.

    A file that holds any other pickled object (a class instance, a function, a NumPy
    array, ...) is refused with a CheckpointError; nothing in it is executed.
    """
    try:
        payload = torch.load(state_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"refusing to load {state_file}: it holds a pickled object{what} that is not a "
            "tensor or plain value, and nothing in it was run (checkpoints are read with "
            "torch.load(weights_only=True)). Do not load a file you did not write. A "
            "checkpoint written by an rlhf version that stored RNG states as NumPy arrays "
            "cannot be resumed: start the run again"
        ) from exc
    if not isinstance(payload, dict) or not {"step", "rng", "state"} <= payload.keys():
        raise CheckpointError(f"{state_file} is not a trainer state (no step/rng/state)")
    return payload


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
    payload = read_trainer_state(state_file)
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
