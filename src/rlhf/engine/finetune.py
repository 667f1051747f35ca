"""The epoch loop for fine-tuning encoders: classifiers, reward models, adversarial training.

Unlike the algorithms' loops (which draw batches from an endless cursor), this one
walks whole epochs, so the step counter is the data position: epoch e, batch b is
step e * batches_per_epoch + b, and each epoch's batches depend only on (seed, epoch).
Restoring the step, weights, optimizer, scheduler and RNG states therefore resumes
exactly. Schedule, optimizer, clipping and metrics come from the training kit.
Under torchrun each rank runs its shard of every batch and the gradients are summed
(``distributed.py``); rank 0 alone writes checkpoints and metrics.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.engine import checkpoint as ckpt
from rlhf.engine import distributed, training
from rlhf.engine.training import (
    MetricsLogger,
    adamw,
    check_fields,
    check_trackers,
    clip_grad,
    decay_groups,
    lr_multiplier,
)

log = logging.getLogger(__name__)


@dataclass
class TrainLoopConfig:
    """Settings every fine-tuning loop here shares (classifier and reward model).

    A knob `TrainConfig` also has carries its name (learning_rate, autocast, output_dir,
    time_limit_s, ...); defaults are this loop's own (no autocast, checkpoints every 200
    steps, no progress bar)."""

    backbone: str = "minilm"  # "minilm", "tiny", or a model directory (when no model is given)
    learning_rate: float = 5e-5  # AdamW peak learning rate
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06  # linear warmup share of the steps, then linear decay to 0
    batch_size: int = 32
    max_length: int = 64  # tokens per text (truncated)
    epochs: float = 1.0  # passes over the training data (fractions allowed)
    total_steps: int | None = None  # optimizer steps; overrides epochs when set
    time_limit_s: float | None = None  # wall-clock budget: checkpoint and stop when reached
    max_grad_norm: float = 1.0
    freeze_embeddings: bool = False  # keep the word-embedding table fixed (about half of
    # MiniLM's 22.7M parameters): cheaper optimizer steps, little effect on accuracy
    autocast: bool = False  # bf16 autocast for forward/backward (CPU: ~1.35x for MiniLM)
    seed: int = 0  # head init, dropout and data order
    device: str = "cpu"
    group_by_length: bool = True  # batch similar lengths together: less padding, same data
    eval_every: int = 0  # evaluate every N steps (0: only at the end)
    eval_batch_size: int = 64
    output_dir: str | None = None  # run directory: checkpoints/ and metrics.jsonl
    checkpoint_every: int = 200  # steps between checkpoints (also written on stop)
    resume: bool = True  # continue from the last checkpoint in output_dir if any
    log_every: int = 20  # steps between metric lines in metrics.jsonl
    progress: bool = False  # tqdm progress bar
    report_to: list[str] = field(default_factory=list)  # trackers besides metrics.jsonl:
    # "tensorboard", "mlflow" (as TrainConfig.report_to)

    def __post_init__(self) -> None:
        check_fields(self, "> 0", "learning_rate")
        check_fields(self, ">= 0", "time_limit_s")
        check_fields(self, "in [0, 1]", "warmup_ratio")
        check_fields(self, ">= 1", "batch_size", "total_steps", "log_every")
        check_trackers(self.report_to)


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """The batches of one epoch: a function of (seed, epoch) only, so resumable.

    With `group_by_length`, a random permutation is cut into chunks of 50 batches,
    each chunk is sorted by length and cut into batches, and the batch order is
    shuffled: every example still appears once per epoch, with far less padding.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if group_by_length:
        chunk = batch_size * 50
        order = [
            i
            for s in range(0, len(order), chunk)
            for i in sorted(order[s : s + chunk], key=lambda j: lengths[j])
        ]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if group_by_length:
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[i] for i in perm]
    return batches


def run_training_loop(
    config: TrainLoopConfig,
    model: nn.Module,
    lengths: Sequence[int],
    batch_loss: Callable[[list[int]], torch.Tensor],
    evaluate: Callable[[], dict[str, float]] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    name: str = "train",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Batches, AdamW + linear schedule, clipping, eval, checkpoints; see the module doc.

    `batch_loss(indices)` returns the loss of the examples at `indices` (inside bf16
    autocast when configured). Returns (metrics, history of eval results).
    """
    device = next(model.parameters()).device
    bf16 = training.cpu_bf16(device, config.autocast)
    distributed.init(device)
    main = distributed.is_main()
    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    batches_per_epoch = math.ceil(len(lengths) / config.batch_size)
    total_steps = config.total_steps or max(1, math.ceil(config.epochs * batches_per_epoch))
    # BERT recipe: no decay on biases and LayerNorm weights; torch's default kernel.
    optimizer = adamw(
        decay_groups(model, config.weight_decay), device, fused=None, lr=config.learning_rate
    )
    warmup_steps = max(1, int(total_steps * config.warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, warmup_steps, total_steps, "linear")
    )
    step, history, train_seconds = 0, [], 0.0
    if config.output_dir and config.resume:
        last = ckpt.latest_checkpoint(config.output_dir)
        if last is not None:
            restored = ckpt.load_checkpoint(
                last, {"model": model}, {"optimizer": optimizer}, {"scheduler": scheduler}
            )
            step = restored["step"]
            history = restored["state"].get("history", [])
            train_seconds = restored["state"].get("train_seconds", 0.0)
            distributed.restore_rank_rng(restored["state"].get("rank_rng"))
            log.info("%s: resumed from %s at step %d", name, last, step)
    distributed.broadcast_params(model)
    write_dir = config.output_dir if main else None
    metrics_path = Path(write_dir) / "metrics.jsonl" if write_dir else None
    metrics_log = MetricsLogger(metrics_path, step, config.report_to if main else (), name)

    def save_checkpoint() -> None:
        if not config.output_dir:
            return
        state = {"history": history, "train_seconds": train_seconds, "config": asdict(config)}
        if (rank_rng := distributed.rank_rng_states()) is not None:
            state["rank_rng"] = rank_rng
        if main:
            ckpt.save_checkpoint(
                config.output_dir,
                step,
                {"model": model},
                {"optimizer": optimizer},
                {"scheduler": scheduler},
                state,
            )
        distributed.barrier()

    def run_eval() -> dict[str, float]:
        assert evaluate is not None
        metrics = evaluate()
        entry = {
            "train_minutes": train_seconds / 60,
            **{f"eval_{k}": v for k, v in metrics.items() if isinstance(v, float | int)},
        }
        history.append({"step": step, **entry})
        metrics_log.log(step, entry)
        log.info("%s: step %d eval %s", name, step, entry)
        model.train()
        return metrics

    progress = None
    if config.progress and main:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, initial=step, desc=name, unit="step")
    started = time.monotonic()
    stopped_by_time = False
    epoch_cache: tuple[int, list[list[int]]] | None = None
    loss_sum, loss_count, examples = 0.0, 0, 0
    model.train()
    while step < total_steps:
        if config.time_limit_s is not None and time.monotonic() - started > config.time_limit_s:
            stopped_by_time = True
            break
        epoch, position = divmod(step, batches_per_epoch)
        if epoch_cache is None or epoch_cache[0] != epoch:
            epoch_cache = (
                epoch,
                epoch_batches(
                    lengths, config.batch_size, config.seed, epoch, config.group_by_length
                ),
            )
        indices = epoch_cache[1][position]
        local = list(distributed.shard(indices))
        tick = time.monotonic()
        optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        if local:  # a batch smaller than the world leaves some ranks nothing
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                # this rank's share of the batch's mean loss (the whole loss in one process)
                loss = batch_loss(local) * (len(local) / len(indices))
            loss.backward()
            loss_value = loss.item()
        distributed.sum_grads(model.parameters())
        loss_value = distributed.all_reduce_sum(loss_value)
        grad_norm = clip_grad(
            [p for p in model.parameters() if p.requires_grad], config.max_grad_norm
        )
        optimizer.step()
        scheduler.step()
        step += 1
        train_seconds += time.monotonic() - tick
        loss_sum += loss_value
        loss_count += 1
        examples += len(indices)
        metrics = {"loss": loss_value, "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0]}
        if step % config.log_every == 0 or step == total_steps:
            metrics_log.log(step, {**metrics, "epoch": step / batches_per_epoch})
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4f}")
        if evaluate is not None and config.eval_every and step % config.eval_every == 0:
            run_eval()
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            save_checkpoint()
        if on_step is not None:
            on_step(step, metrics)
    if progress is not None:
        progress.close()
    if stopped_by_time or (config.checkpoint_every and step % config.checkpoint_every):
        save_checkpoint()

    wall = time.monotonic() - started
    result: dict[str, Any] = {
        "steps": step,
        "total_steps": total_steps,
        "epochs": step / batches_per_epoch,
        "train_examples": len(lengths),
        "train_loss": loss_sum / loss_count if loss_count else None,
        "train_minutes": train_seconds / 60,
        "examples_per_s": examples / wall if wall > 0 and examples else None,
        "stopped_by_time": stopped_by_time,
    }
    if evaluate is not None:
        final = run_eval() if not history or history[-1]["step"] != step else evaluate()
        result.update(final)
    metrics_log.close()
    model.eval()
    return result, history
