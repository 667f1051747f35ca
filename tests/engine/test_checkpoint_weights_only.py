"""Checkpoints hold tensors and plain values only and load with weights_only=True."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rlhf.engine import checkpoint as ckpt


class _RunsCodeWhenUnpickled:
    """A pickled object whose loading would create ``marker`` (arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _trained(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def test_checkpoint_file_loads_with_weights_only(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    state = {"history": [{"loss": np.float32(0.5), "step": np.int64(3)}], "run": tmp_path}
    path = ckpt.save_checkpoint(tmp_path / "run", 3, {"m": model}, {"o": opt}, {"s": sched}, state)
    payload = torch.load(path / ckpt.STATE_FILE, weights_only=True)
    assert payload["step"] == 3
    # NumPy scalars and paths in the algorithm's state are stored as plain Python values.
    assert payload["state"] == {"history": [{"loss": 0.5, "step": 3}], "run": str(tmp_path)}
    assert isinstance(payload["rng"]["torch"], torch.Tensor)
    assert payload["rng"]["numpy"]["keys"].dtype == torch.int64


def test_rng_states_round_trip_exactly_through_a_checkpoint(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's legacy state
    random.gauss(0.0, 1.0)  # and one in Python's
    path = ckpt.save_checkpoint(tmp_path / "run", 1, {"m": model}, {"o": opt}, {"s": sched})
    expected = (
        random.random(),
        random.gauss(0.0, 1.0),
        np.random.standard_normal(3).tolist(),
        np.random.randint(0, 2**31, 4).tolist(),
        torch.rand(3).tolist(),
    )
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

    other, other_opt, other_sched = _trained(seed=5)
    ckpt.load_checkpoint(path, {"m": other}, {"o": other_opt}, {"s": other_sched})
    again = (
        random.random(),
        random.gauss(0.0, 1.0),
        np.random.standard_normal(3).tolist(),
        np.random.randint(0, 2**31, 4).tolist(),
        torch.rand(3).tolist(),
    )
    assert again == expected
    restored = other_opt.state_dict()["state"]
    for param_id, param_state in opt.state_dict()["state"].items():
        for key, value in param_state.items():
            assert torch.equal(value, restored[param_id][key]), (param_id, key)
    assert other_sched.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"]


def test_pickled_object_in_a_checkpoint_is_refused_not_run(tmp_path: Path) -> None:
    model, opt, _ = _trained()
    path = ckpt.save_checkpoint(tmp_path / "run", 2, {"m": model}, {"o": opt})
    marker = tmp_path / "code-ran"
    payload = torch.load(path / ckpt.STATE_FILE, weights_only=True)
    payload["state"] = {"cursor": _RunsCodeWhenUnpickled(marker)}
    torch.save(payload, path / ckpt.STATE_FILE)  # a tampered (or foreign) checkpoint

    with pytest.raises(ckpt.CheckpointError, match=r"refusing to load .*trainer_state\.pt") as err:
        ckpt.load_checkpoint(path, {"m": model}, {"o": opt})
    assert "weights_only=True" in str(err.value)
    assert "open" in str(err.value)  # names the global it would have called
    assert not marker.exists(), "unpickling ran code from the checkpoint"


def test_a_numpy_array_in_an_old_style_checkpoint_is_refused(tmp_path: Path) -> None:
    model, _, _ = _trained()
    path = ckpt.save_checkpoint(tmp_path / "run", 1, {"m": model})
    payload = torch.load(path / ckpt.STATE_FILE, weights_only=True)
    payload["rng"]["numpy"] = np.random.get_state()  # how checkpoints used to store it
    torch.save(payload, path / ckpt.STATE_FILE)
    with pytest.raises(ckpt.CheckpointError, match="start the run again"):
        ckpt.load_checkpoint(path, {"m": model})


def test_state_that_would_not_load_fails_on_save(tmp_path: Path) -> None:
    model, _, _ = _trained()

    class Controller:
        pass

    with pytest.raises(
        ckpt.CheckpointError, match=r"checkpoint\['state'\]\['kl_ctl'\].*Controller"
    ):
        ckpt.save_checkpoint(tmp_path / "run", 1, {"m": model}, state={"kl_ctl": Controller()})
    assert ckpt.latest_checkpoint(tmp_path / "run") is None
