"""The training kit: what every trainer in the engine shares, written once.

PPO, RLOO/GRPO, DPO and SFT/pre-training differ in their maths; what surrounds the
maths is the same and lives here (the classifier and reward-model epoch loop in
``finetune.py`` takes its schedule, optimizer, clipping and metrics from here too):

* ``TrainConfig``: the fields every trainer takes, with one name and meaning each;
* precision and device: ``autocast``, ``attention_kernel``, ``training_forward``;
* ``lr_multiplier``: the one learning-rate schedule (linear warm-up, then constant,
  linear or cosine decay); ``optimizer_and_schedule``: AdamW and that schedule;
* ``adamw``: the optimizer (torch's fused kernel where it has one); ``clip_grad``;
  ``micro_batches`` for gradient accumulation;
* ``DataCursor``: the position in an endlessly reshuffled dataset (resumable);
* ``MetricsLogger``: ``metrics.jsonl``, and the trackers named in ``report_to``;
* ``TrainingRun``: resume from the latest checkpoint, count steps, log them, show
  progress, stop at the time limit, checkpoint, and save the final model; under
  ``torchrun`` it joins the process group (``distributed.py``) and lets rank 0 alone
  write.

An algorithm's loop then reads, in the spirit of CleanRL and nanoGPT::

    run = TrainingRun(cfg, "ppo", cfg.total_steps, {"policy": model}, optimizer, scheduler,
                      state={"cursor": cursor})
    while run.running():
        ...  # the algorithm's maths
        run.end_step(row)
    final_dir = run.finish(model, tokenizer)
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from rlhf.engine import distributed
from rlhf.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

T = TypeVar("T")

TRACKERS = ("tensorboard", "mlflow")
DECAYS = ("constant", "linear", "cosine")
Decay = Literal["constant", "linear", "cosine"]


@dataclass
class TrainConfig:
    """Settings every trainer shares; each algorithm's config adds its own and may
    change these defaults."""

    learning_rate: float = 1e-5
    """Peak AdamW learning rate."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up, in optimizer steps."""
    lr_decay: Decay = "constant"
    """After warm-up: "constant", "linear" (to 0 at the last step) or "cosine" (to
    min_lr_ratio at the last step)."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine decay, as a fraction of learning_rate."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    """Clip the gradient to this global norm (0 = no clipping)."""
    gradient_accumulation_steps: int = 1
    """Run each batch as this many micro-batches, forward and backward one at a time,
    and step once: the same update in less memory (DPO, SFT, pre-training)."""
    seed: int = 0
    """Seeds weight initialisation, sampling and data order."""
    device: str = "cpu"
    autocast: bool = True
    """bf16 autocast on CPU, where the CPU has native bf16 (AVX512-BF16, AMX); float32
    on CPUs that would emulate it, and on CUDA."""
    output_dir: str | None = None
    """Run directory: metrics.jsonl, checkpoints/, final/ (None = keep nothing)."""
    checkpoint_every: int = 0
    """Save a checkpoint every N steps (0 = only at the end)."""
    resume: bool = True
    """Resume from output_dir's latest checkpoint when there is one."""
    time_limit_s: float | None = None
    """Stop after this many seconds of training (checked between steps)."""
    progress: bool = True
    """Show a progress bar."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers besides metrics.jsonl: "tensorboard", "mlflow" (as in TRL)."""

    def __post_init__(self) -> None:
        check_train_fields(self)


def check_train_fields(cfg: Any) -> None:
    """ValueError naming the field for values no trainer can use."""
    check_fields(cfg, "> 0", "learning_rate")
    check_fields(cfg, ">= 0", "warmup_steps", "weight_decay", "checkpoint_every", "time_limit_s")
    check_fields(cfg, ">= 1", "gradient_accumulation_steps")
    check_fields(cfg, "in [0, 1]", "min_lr_ratio")
    if cfg.lr_decay not in DECAYS:
        raise ValueError(f"lr_decay: expected one of {list(DECAYS)}, got {cfg.lr_decay!r}")
    try:
        torch.device(cfg.device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {cfg.device!r} is not a torch device ({exc})") from exc
    check_trackers(cfg.report_to)


def check_trackers(report_to: Sequence[str]) -> None:
    """ValueError for a tracker name the kit does not know."""
    unknown = sorted(set(report_to) - set(TRACKERS))
    if unknown:
        raise ValueError(f"report_to: unknown trackers {unknown} (known: {list(TRACKERS)})")


RULES: dict[str, Callable[[float], bool]] = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
    "in [0, 0.5)": lambda v: 0 <= v < 0.5,
}


def check_fields(cfg: Any, rule: str, *names: str) -> None:
    """ValueError naming the first of ``cfg``'s fields ``names`` that breaks ``rule``
    (a key of ``RULES``); None means "not set" and passes."""
    holds = RULES[rule]
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not holds(value):
            raise ValueError(f"{name}: must be {rule}, got {value!r}")


# --------------------------------------------------------------------------------------
# Precision and devices


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16, AMX, or oneDNN's AVX-512
    path). On an AVX2-only CPU torch emulates bf16: a MiniLM training step ran 10-15x
    slower than in float32 (AMD EPYC, AVX2, measured), SmolLM2's linear layers ~7x."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: trust the config
        return True


def cpu_bf16(device: str | torch.device, requested: bool) -> bool:
    """Whether a CPU run asked to use bf16 (autocast, a bf16 sampling copy) does so:
    only where the CPU has native bf16; elsewhere float32 is the fast choice. Off the
    CPU the request stands."""
    if not requested or torch.device(device).type != "cpu":
        return requested
    return cpu_has_native_bf16()


def autocast(device: str | torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on a CPU with native bf16 when asked (1.3-2.5x faster there); on a
    CPU that would emulate it, on CUDA and when not asked, float32 unchanged.

    Inside one autocast region torch caches the bf16 copies of trainable weights, so
    a whole ``generate`` call pays for the casts once.
    """
    if torch.device(device).type == "cpu" and cpu_bf16(device, enabled):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def attention_kernel(model: Any, name: str | None, device: str | torch.device) -> Iterator[None]:
    """Run the block with the model's attention kernel switched to ``name``.

    "auto" means "eager" on CPU and the model's own kernel elsewhere: at RLHF lengths
    (tens to hundreds of tokens) SDPA's CPU flash-attention backward was 37% of a
    SmolLM2 backward pass, and eager attention (a few batched matmuls) made the whole
    backward 1.4-1.8x faster. ``None`` leaves the model alone. The switch is cheap
    (~0.5 ms) and is undone on exit, so sampling and saved configs are unaffected.
    """
    if name == "auto":
        name = "eager" if torch.device(device).type == "cpu" else None
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if name is None or current is None or name == current:
        yield
        return
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(current)


@contextlib.contextmanager
def training_forward(model: Any, cfg: Any) -> Iterator[None]:
    """The kernel and precision of a policy's training forward/backward: attention
    ``cfg.attn_implementation`` on ``cfg.device``, under ``cfg.autocast``."""
    kernel = attention_kernel(model, cfg.attn_implementation, cfg.device)
    with kernel, autocast(cfg.device, cfg.autocast):
        yield


# --------------------------------------------------------------------------------------
# Learning-rate schedule and optimizer


def lr_multiplier(
    step: int,
    warmup_steps: int,
    total_steps: int,
    decay: Decay = "constant",
    min_lr_ratio: float = 0.0,
) -> float:
    """The learning rate at optimizer step ``step`` as a fraction of the peak.

    Linear warm-up over ``warmup_steps``: (step + 1) / warmup_steps. After it:
      constant  1;
      linear    (total - step) / (total - warmup), down to 0 at ``total_steps``;
      cosine    min_lr_ratio + (1 - min_lr_ratio) (1 + cos(pi progress)) / 2.
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    if decay == "constant":
        return warm
    if decay == "linear":
        return min(warm, max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps)))
    if decay == "cosine":
        if step < warmup_steps:
            return warm
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"decay: expected 'constant', 'linear' or 'cosine', got {decay!r}")


def adamw(
    params: Any, device: str | torch.device, fused: bool | None = True, **kwargs: Any
) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where it has one (CPU, CUDA); ``fused=None``
    leaves the choice to torch.

    One pass over each parameter instead of a dozen multi-tensor ops: on this CPU a
    SmolLM2-135M step takes 0.4-0.8 s instead of 1.4-1.6 s. Same update rule and
    state_dict format, so checkpoints load either way.
    """
    if fused:
        fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.AdamW(params, fused=fused, **kwargs)


def optimizer_and_schedule(
    cfg: TrainConfig, params: Any, total_steps: int, **adamw_kwargs: Any
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW at ``cfg.learning_rate`` and the config's schedule over ``total_steps``
    (a LambdaLR: its state_dict is the step, so it resumes)."""
    optimizer = adamw(
        params, cfg.device, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, **adamw_kwargs
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_multiplier(s, cfg.warmup_steps, total_steps, cfg.lr_decay, cfg.min_lr_ratio),
    )
    return optimizer, scheduler


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: weight decay on matrices, none on biases and
    norm weights (the GPT/BERT recipe)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]


def clip_grad(parameters: Any, max_norm: float | None) -> float:
    """Clip to ``max_norm`` and return the norm before clipping (NaN when off)."""
    if max_norm is None or max_norm <= 0:
        return float("nan")
    return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))


def micro_batches(batch: Sequence[T], parts: int) -> list[Sequence[T]]:
    """A batch cut into ``parts`` consecutive, nearly equal slices (gradient
    accumulation: each slice runs forward and backward alone, the optimizer steps once)."""
    size = math.ceil(len(batch) / parts)
    return [batch[start : start + size] for start in range(0, len(batch), size)]


# --------------------------------------------------------------------------------------
# Data order


@dataclass
class DataCursor:
    """Position in an endlessly reshuffled dataset; part of the checkpoint state.

    The order of epoch e is a permutation drawn from its own generator seeded with
    (seed, e), so resuming needs only (epoch, index), not the global RNG.
    """

    size: int
    seed: int
    epoch: int = 0
    index: int = 0

    def _order(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.size, generator=gen).tolist()

    def take(self, n: int) -> list[int]:
        if self.size == 0:
            raise ValueError("dataset is empty")
        out: list[int] = []
        order = self._order()
        while len(out) < n:
            if self.index >= self.size:
                self.epoch, self.index = self.epoch + 1, 0
                order = self._order()
            out.append(order[self.index])
            self.index += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


# --------------------------------------------------------------------------------------
# Metrics and trackers


class MetricsLogger:
    """Per-step metrics as JSON lines in ``metrics.jsonl`` (and to ``report_to`` trackers).

    On resume, lines after the checkpoint are dropped so the file matches an
    uninterrupted run; a fresh run starts a fresh file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        resume_step: int = 0,
        report_to: Sequence[str] = (),
        run_name: str = "train",
    ) -> None:
        self.path = Path(path) if path else None
        self.trackers = [_tracker(name, self.path, run_name) for name in report_to]
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step > 0 and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {k: _jsonable(v) for k, v in metrics.items()}
        for tracker in self.trackers:
            tracker.log(step, row)
        if self.path is None:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, **row}) + "\n")

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Tracker(Protocol):
    def log(self, step: int, metrics: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class _TensorBoard:
    """Scalars to ``<run dir>/tensorboard`` (needs the ``tensorboard`` package)."""

    def __init__(self, run_dir: Path | None, run_name: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str((run_dir or Path("runs")) / "tensorboard" / run_name))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class _MLflow:
    """Metrics to the active (or a new) MLflow run (needs the ``mlflow`` package)."""

    def __init__(self, run_name: str) -> None:
        import mlflow

        self.mlflow = mlflow
        self.owned = mlflow.active_run() is None
        if self.owned:
            mlflow.start_run(run_name=run_name)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        numbers = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.mlflow.log_metrics(numbers, step=step)

    def close(self) -> None:
        if self.owned:
            self.mlflow.end_run()


def _tracker(name: str, metrics_path: Path | None, run_name: str) -> Tracker:
    run_dir = metrics_path.parent if metrics_path else None
    try:
        if name == "tensorboard":
            return _TensorBoard(run_dir, run_name)
        if name == "mlflow":
            return _MLflow(run_name)
    except ImportError as exc:
        raise ValueError(
            f"report_to: {name!r} needs the {name} package ({exc}); metrics.jsonl is always written"
        ) from exc
    raise ValueError(f"report_to: unknown tracker {name!r} (known: {list(TRACKERS)})")


# --------------------------------------------------------------------------------------
# One training run: resume, steps, checkpoints, final save


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainingResult:
    """What every trainer returns: steps done, per-step metrics, the saved model."""

    steps: int
    history: list[dict[str, float]]
    final_dir: str | None


class TrainingRun:
    """The bookkeeping around an algorithm's loop, so the loop keeps only its maths.

    On creation it resumes from ``cfg.output_dir``'s latest checkpoint (weights,
    optimizer, scheduler, RNG states and every ``state`` object), so ``step`` and
    ``history`` continue where the run stopped. ``end_step`` counts a finished step:
    history, metrics.jsonl, progress bar, periodic checkpoint. ``finish`` writes the
    last checkpoint and ``final/`` (model, tokenizer, ``<name>_config.json``), logs the
    final evaluation and closes the trackers.

    Under ``torchrun`` every rank creates one: it joins the process group, resumes from
    the same checkpoint (each rank its own RNG states), and starts from rank 0's
    weights; only rank 0 writes checkpoints, ``final/``, metrics and progress.
    ``checkpoint`` and ``finish`` are collectives: every rank calls them.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        name: str,
        total_steps: int,
        modules: dict[str, nn.Module],
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: dict[str, Stateful] | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = name
        self.total_steps = total_steps
        self.modules = modules
        self.optimizers = {"opt": optimizer}  # checkpoint keys: what runs wrote before
        self.schedulers = {"sched": scheduler}
        self.state = state or {}
        distributed.init(cfg.device)
        self.out_dir = Path(cfg.output_dir) if cfg.output_dir else None
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.final_eval: dict[str, float] = {}
        if self.out_dir and cfg.resume and (ckpt := latest_checkpoint(self.out_dir)) is not None:
            restored = load_checkpoint(ckpt, modules, self.optimizers, self.schedulers)
            self.step = restored["step"]
            for key, obj in self.state.items():
                if key in restored["state"]:
                    obj.load_state_dict(restored["state"][key])
            self.history = restored["state"]["history"]
            distributed.restore_rank_rng(restored["state"].get("rank_rng"))
        for module in modules.values():
            distributed.broadcast_params(module)
        main = distributed.is_main()
        self.metrics = MetricsLogger(
            self.out_dir / "metrics.jsonl" if self.out_dir and main else None,
            self.step,
            cfg.report_to if main else (),
            name,
        )
        show = cfg.progress and main
        self.bar = tqdm(total=total_steps, initial=self.step, disable=not show, desc=name)
        self._started = time.perf_counter()

    def running(self) -> bool:
        """True while steps remain and the time limit (if any) is not reached."""
        limit = self.cfg.time_limit_s
        if limit is not None and time.perf_counter() - self._started > limit:
            return False
        return self.step < self.total_steps

    def end_step(
        self,
        row: dict[str, Any],
        on_step: Callable[[int, dict[str, Any]], None] | None = None,
        **postfix: str,
    ) -> None:
        """Count one optimizer step: history, metrics, ``on_step`` hook (which may raise
        to stop the run), progress bar, and a checkpoint every ``checkpoint_every``."""
        self.step += 1
        self.history.append(row)
        self.metrics.log(self.step, row)
        if on_step is not None:
            on_step(self.step, row)
        self.bar.update(1)
        self.bar.set_postfix(**postfix)
        every = self.cfg.checkpoint_every
        if every and self.step % every == 0 and self.step < self.total_steps:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Save everything an exact resume needs (nothing without an output_dir); rank 0
        writes it, with every rank's RNG states when distributed."""
        if self.out_dir is None:
            return
        rank_rng = distributed.rank_rng_states()
        if distributed.is_main():
            state = {key: obj.state_dict() for key, obj in self.state.items()}
            state["history"] = self.history
            if rank_rng is not None:
                state["rank_rng"] = rank_rng
            save_checkpoint(
                self.out_dir, self.step, self.modules, self.optimizers, self.schedulers, state
            )
        distributed.barrier()

    def finish(
        self,
        model: Any,
        tokenizer: Any,
        evaluate: Callable[[], dict[str, float]] | None = None,
    ) -> str | None:
        """End the run: with an output_dir, checkpoint and save ``final/`` (returned);
        then ``evaluate()`` the final model into ``final_eval`` and metrics.jsonl
        (``eval_*``), and close the progress bar and trackers. Distributed, rank 0 saves
        and every rank gets the path once it is written."""
        self.bar.close()
        final_dir = None
        if self.out_dir is not None:
            self.checkpoint()
            final = self.out_dir / "final"
            if distributed.is_main():
                model.save_pretrained(final)
                tokenizer.save_pretrained(final)
                config_json = json.dumps(asdict(self.cfg), indent=2)
                (final / f"{self.name}_config.json").write_text(config_json)
            distributed.barrier()
            final_dir = str(final)
        if evaluate is not None:
            self.final_eval = evaluate()
            self.metrics.log(self.step, {f"eval_{k}": v for k, v in self.final_eval.items()})
        self.metrics.close()
        return final_dir
