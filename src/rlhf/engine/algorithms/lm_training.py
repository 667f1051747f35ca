"""The supervised next-token loop shared by pre-training and SFT.

Both minimise masked cross-entropy  L = -sum_t m_t log p(x_t | x_<t) / sum_t m_t
(m_t = 1 on every token for pre-training, on response tokens only for SFT); they
differ only in how examples become (ids, loss mask). Checkpoints hold the model,
AdamW, the warm-up + cosine schedule, RNG states and the data cursor, so a killed
run resumes exactly.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rlhf.engine.algorithms.rollout import (
    DataCursor,
    MetricsLogger,
    adamw,
    autocast,
    clip_grad,
)
from rlhf.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


@dataclass
class LMTrainConfig:
    """Optimisation settings shared by pre-training and SFT."""

    total_steps: int = 100
    batch_size: int = 8
    learning_rate: float = 3e-4
    min_lr_ratio: float = 0.1
    """Cosine decay floor as a fraction of learning_rate."""
    warmup_steps: int = 10
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "cpu"
    autocast: bool = True
    """bf16 autocast on CPU (ignored on CUDA)."""
    output_dir: str | None = None
    """Run directory: metrics.jsonl, checkpoints/, final/ (None = keep nothing)."""
    checkpoint_every: int = 0
    """Checkpoint every N steps (0 = only at the end)."""
    resume: bool = True
    time_limit_s: float | None = None
    progress: bool = True


@dataclass
class LMTrainResult:
    steps: int
    history: list[dict[str, float]]
    final_dir: str | None


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """LR multiplier: linear warm-up, then cosine decay to ``floor``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def collate(examples: Sequence[tuple[list[int], list[float]]], pad_id: int, device: str):
    """Right-pad (ids, mask) pairs into ids, attention mask and loss mask."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    loss_mask = torch.zeros((len(examples), width), dtype=torch.float32)
    for row, (seq, mask) in enumerate(examples):
        ids[row, : len(seq)] = torch.tensor(seq)
        attn[row, : len(seq)] = 1
        loss_mask[row, : len(seq)] = torch.tensor(mask)
    return ids.to(device), attn.to(device), loss_mask.to(device)


def masked_lm_loss(
    model: Any, ids: torch.Tensor, attn: torch.Tensor, loss_mask: torch.Tensor, use_autocast: bool
):
    """Mean cross-entropy over the tokens whose loss mask is 1."""
    with autocast(ids.device, use_autocast):
        logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
    target_mask = loss_mask[:, 1:]
    nll = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        ids[:, 1:].reshape(-1),
        reduction="none",
    ).view_as(target_mask)
    return (nll * target_mask).sum() / target_mask.sum().clamp(min=1.0)


@torch.no_grad()
def evaluate_lm(
    model: Any, examples: Sequence[tuple[list[int], list[float]]], pad_id: int, cfg: LMTrainConfig
):
    """Token-weighted mean loss and perplexity on held-out examples."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    for start in range(0, len(examples), cfg.batch_size):
        ids, attn, mask = collate(examples[start : start + cfg.batch_size], pad_id, cfg.device)
        n = mask[:, 1:].sum().item()
        total += masked_lm_loss(model, ids, attn, mask, cfg.autocast).item() * n
        count += n
    model.train(was_training)
    loss = total / max(count, 1.0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def train_lm(
    cfg: LMTrainConfig,
    model: Any,
    tokenizer: Any,
    examples: Sequence[tuple[list[int], list[float]]],
    eval_examples: Sequence[tuple[list[int], list[float]]] = (),
    name: str = "lm",
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> LMTrainResult:
    """Minimise the masked next-token loss over ``examples`` for ``cfg.total_steps`` steps."""
    if not examples:
        raise ValueError(f"{name}: no training examples")
    torch.manual_seed(cfg.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.to(cfg.device).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = adamw(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        cfg.device,
        lr=cfg.learning_rate,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.total_steps, cfg.min_lr_ratio)
    )
    cursor = DataCursor(size=len(examples), seed=cfg.seed)
    history: list[dict[str, float]] = []
    start_step = 0
    out_dir = Path(cfg.output_dir) if cfg.output_dir else None
    if out_dir and cfg.resume and (ckpt := latest_checkpoint(out_dir)) is not None:
        restored = load_checkpoint(ckpt, {"model": model}, {"opt": optimizer}, {"sched": scheduler})
        start_step = restored["step"]
        cursor.load_state_dict(restored["state"]["cursor"])
        history = restored["state"]["history"]
    metrics_log = MetricsLogger(out_dir / "metrics.jsonl" if out_dir else None, start_step)

    def checkpoint(step: int) -> None:
        if out_dir is not None:
            state = {"cursor": cursor.state_dict(), "history": history}
            save_checkpoint(
                out_dir, step, {"model": model}, {"opt": optimizer}, {"sched": scheduler}, state
            )

    t_start = time.perf_counter()
    step = start_step
    bar = tqdm(total=cfg.total_steps, initial=start_step, disable=not cfg.progress, desc=name)
    while step < cfg.total_steps:
        if cfg.time_limit_s is not None and time.perf_counter() - t_start > cfg.time_limit_s:
            break
        t0 = time.perf_counter()
        batch = [examples[i] for i in cursor.take(cfg.batch_size)]
        ids, attn, mask = collate(batch, pad_id, cfg.device)
        loss = masked_lm_loss(model, ids, attn, mask, cfg.autocast)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_grad(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        tokens = mask[:, 1:].sum().item()
        row = {
            "loss": loss.item(),
            "grad_norm": grad_norm,
            "lr": scheduler.get_last_lr()[0],
            "tokens_per_s": tokens / max(time.perf_counter() - t0, 1e-9),
        }
        history.append(row)
        metrics_log.log(step, row)
        if on_step is not None:  # progress reporting; may raise to stop (cancellation)
            on_step(step, row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.total_steps:
            checkpoint(step)
    bar.close()

    final_dir = None
    if out_dir is not None:
        checkpoint(step)
        final = out_dir / "final"
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        (final / f"{name}_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        final_dir = str(final)
    if eval_examples:
        metrics = evaluate_lm(model, eval_examples, pad_id, cfg)
        metrics_log.log(step, {f"eval_{k}": v for k, v in metrics.items()})
        history.append({f"eval_{k}": v for k, v in metrics.items()})
    return LMTrainResult(steps=step, history=history, final_dir=final_dir)
