"""KL control for online RL: the adaptive penalty coefficient and the hard budget.

PPO and RLOO/GRPO both keep the policy near its reference with a penalty beta * KL
whose coefficient adapts toward a target, and both may stop (or back off) at a hard
KL budget. ``KLControlConfig`` holds the nine settings once; ``KLControl`` is what a
training loop asks each step ("may I update?", "what is beta?").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlhf.engine.training import check_fields


@dataclass
class KLControlConfig:
    """The KL penalty and budget settings shared by PPO and RLOO/GRPO."""

    init_kl_coef: float = 0.05
    """Initial KL penalty beta."""
    kl_target: float | None = 4.0
    """Adaptive KL target in nats per sequence; None keeps beta fixed."""
    kl_horizon: float = 64.0
    """Adaptive KL horizon in episodes (smaller adapts faster)."""
    kl_budget: float | None = None
    """Stop training when the mean KL (nats/seq) exceeds this (see kl_budget_smoothing)."""
    kl_budget_smoothing: float = 1.0
    """Weight of the newest batch in the moving average of KL that the budget checks
    (1.0 = each batch alone; 0.5 averages over about three batches of noise)."""
    restore_on_budget: bool = True
    """On hitting the budget, restore the last weights that were within it."""
    kl_budget_retries: int = 0
    """Overshoots of the budget survived before stopping: each restores the last good
    weights (with restore_on_budget), multiplies beta by kl_overshoot_factor (at least
    back to init_kl_coef) and goes on."""
    kl_overshoot_factor: float = 2.0
    """Beta's multiplier at a survived overshoot."""
    min_kl_coef: float = 0.0
    """Floor for the adaptive beta, so it still brakes when KL turns upward."""

    def __post_init__(self) -> None:
        check_fields(self, ">= 0", "init_kl_coef", "kl_budget_retries")
        check_fields(self, "> 0", "kl_horizon")
        check_fields(self, "in (0, 1]", "kl_budget_smoothing")
        check_fields(self, ">= 1", "kl_overshoot_factor")


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, "Fine-Tuning LMs from Human Prefs").

    After each batch:  e = clip(KL / target - 1, -0.2, 0.2);  beta *= 1 + e * n / horizon,
    where n is the number of episodes in the batch. KL above target raises beta (more
    penalty), below target lowers it. ``horizon`` is in episodes: smaller = faster.

    Beta is an integral controller: while KL stays above target it keeps growing, and
    the policy answers a new beta only after several steps, so a short horizon winds
    beta up well past the value that holds KL at the target; KL then falls far below it
    and the reward learned on the way up is partly undone. A horizon of a few batches
    (e.g. 128 episodes for batches of 32) moves beta at most ~5% per batch.

    Two brakes for a hard KL budget: ``min_coef`` keeps beta from decaying to nothing
    while KL sits under target (it then has no grip when KL turns), and
    ``budget_overshoot()`` (KL went past the budget) multiplies beta by
    ``overshoot_factor``, at least back to its initial value, and counts the overshoot.
    """

    def __init__(
        self,
        init_coef: float,
        target: float | None,
        horizon: float,
        min_coef: float = 0.0,
        overshoot_factor: float = 2.0,
    ) -> None:
        if overshoot_factor < 1.0:
            raise ValueError(f"overshoot_factor must be >= 1, got {overshoot_factor}")
        self.value = float(init_coef)
        self.init_coef = float(init_coef)
        self.target = target
        self.horizon = float(horizon)
        self.min_coef = float(min_coef)
        self.overshoot_factor = float(overshoot_factor)
        self.overshoots = 0

    def update(self, current_kl: float, n_episodes: int) -> float:
        if self.target is None or self.target <= 0:
            return self.value
        error = max(-0.2, min(0.2, current_kl / self.target - 1.0))
        self.value = max(self.min_coef, self.value * (1.0 + error * n_episodes / self.horizon))
        return self.value

    def budget_overshoot(self) -> float:
        self.overshoots += 1
        self.value = max(self.overshoot_factor * self.value, self.init_coef, self.min_coef)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "init_coef": self.init_coef,
            "target": self.target,
            "horizon": self.horizon,
            "min_coef": self.min_coef,
            "overshoot_factor": self.overshoot_factor,
            "overshoots": self.overshoots,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.init_coef = float(state.get("init_coef", self.init_coef))
        self.target = state["target"]
        self.horizon = float(state["horizon"])
        self.min_coef = float(state.get("min_coef", self.min_coef))
        self.overshoot_factor = float(state.get("overshoot_factor", self.overshoot_factor))
        self.overshoots = int(state.get("overshoots", 0))


class KLBudget:
    """Hard ceiling on KL(policy || ref) in nats per sequence, checked before each update.

    Each batch's KL is measured on samples of the current weights. The check reads an
    exponential moving average over batches (``smoothing`` = weight of the newest
    batch; 1.0 = that batch alone): one 32-episode batch is noisy, about +-1 nat near
    a 7-nat target, and a noise spike that restores weights and firms up beta costs
    the policy 10-20 steps of progress. Past the budget the model goes back to the
    last weights whose batch passed (``restore``); the caller then stops, or raises
    beta and goes on.

    With a moving average the check judges weights, not batches: the restored weights
    are ones the average accepted, so the next batch drawn from them enters the average
    unchecked. Checking it would only test the noise a second time (the average sits
    just under the budget there) and, in a benchmark run, compounded two overshoots
    into beta x2.25 and a 20-step fall in KL and score.
    """

    def __init__(self, budget: float | None, smoothing: float = 1.0, restore: bool = True):
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"KL budget smoothing must be in (0, 1], got {smoothing}")
        self.budget = budget
        self.smoothing = float(smoothing)
        self.restore = restore
        self.smoothed: float | None = None
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._just_restored = False

    def exceeded(self, kl_per_seq: float, model: torch.nn.Module) -> bool:
        """True (and ``model`` restored) when the smoothed KL is past the budget."""
        if self.budget is None:
            return False
        smoothed = (
            kl_per_seq
            if self.smoothed is None
            else self.smoothing * kl_per_seq + (1.0 - self.smoothing) * self.smoothed
        )
        if smoothed > self.budget and not self._just_restored:
            # The restored weights are the ones the running average already describes,
            # so the rejected batch does not enter it.
            if self.restore and self._snapshot is not None:
                model.load_state_dict(self._snapshot)
                self._just_restored = self.smoothing < 1.0
            return True
        self._just_restored = False
        self.smoothed = smoothed
        if self.restore:
            self._snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"smoothed": self.smoothed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.smoothed = state.get("smoothed")


class KLControl:
    """Beta and the budget as a training loop uses them: one object, two checkpoint
    entries ("kl_ctl", "kl_budget")."""

    def __init__(self, cfg: KLControlConfig) -> None:
        self.coef = AdaptiveKLController(
            cfg.init_kl_coef,
            cfg.kl_target,
            cfg.kl_horizon,
            cfg.min_kl_coef,
            cfg.kl_overshoot_factor,
        )
        self.budget = KLBudget(cfg.kl_budget, cfg.kl_budget_smoothing, cfg.restore_on_budget)
        self.retries = cfg.kl_budget_retries
        self.stopped = False
        """Set when KL went past the budget with no retries left: training stops."""

    @property
    def beta(self) -> float:
        return self.coef.value

    @property
    def overshoots(self) -> int:
        return self.coef.overshoots

    def within_budget(self, kl_per_seq: float, model: torch.nn.Module) -> bool:
        """Before an update, on samples of the current weights: True to update. Past the
        budget ``model`` goes back to its last good weights (with restore_on_budget) and
        beta is raised while retries remain; after that ``stopped`` is set."""
        if not self.budget.exceeded(kl_per_seq, model):
            return True
        if self.coef.overshoots < self.retries:
            self.coef.budget_overshoot()
        else:
            self.stopped = True
        return False

    def update(self, kl_per_seq: float, n_episodes: int) -> float:
        """Move beta toward the target after a step."""
        return self.coef.update(kl_per_seq, n_episodes)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"kl_ctl": self.coef, "kl_budget": self.budget}
