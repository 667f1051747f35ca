"""The supervised next-token loop shared by pre-training and SFT.

Both minimise masked cross-entropy  L = -sum_t m_t log p(x_t | x_<t) / sum_t m_t
(m_t = 1 on every token for pre-training, on response tokens only for SFT); they
differ only in how examples become (ids, loss mask). Checkpoints hold the model,
AdamW, the warm-up + cosine schedule, RNG states and the data cursor, so a killed
run resumes exactly. Under torchrun each rank trains on its shard of every batch and
its loss is its share of the batch's token mean (``distributed.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from rlhf.engine import distributed
from rlhf.engine.training import (
    DataCursor,
    Decay,
    TrainConfig,
    TrainingResult,
    TrainingRun,
    autocast,
    clip_grad,
    decay_groups,
    micro_batches,
    optimizer_and_schedule,
)


@dataclass
class LMTrainConfig(TrainConfig):
    """Optimisation settings shared by pre-training and SFT (plus TrainConfig's)."""

    total_steps: int = 100
    batch_size: int = 8
    learning_rate: float = 3e-4
    lr_decay: Decay = "cosine"
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    """On weight matrices only (none on biases and norm weights)."""


LMTrainResult = TrainingResult


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
) -> TrainingResult:
    """Minimise the masked next-token loss over ``examples`` for ``cfg.total_steps`` steps.

    ``on_step(step, metrics)`` runs after each step (progress reporting); it may raise
    to stop the run (cancellation).
    """
    if not examples:
        raise ValueError(f"{name}: no training examples")
    torch.manual_seed(cfg.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.to(cfg.device).train()
    optimizer, scheduler = optimizer_and_schedule(
        cfg, decay_groups(model, cfg.weight_decay), cfg.total_steps, betas=(0.9, 0.95)
    )
    cursor = DataCursor(size=len(examples), seed=cfg.seed)
    run = TrainingRun(
        cfg, name, cfg.total_steps, {"model": model}, optimizer, scheduler, {"cursor": cursor}
    )
    distributed.check_divisible(cfg.batch_size, "batch_size")

    while run.running():
        t0 = time.perf_counter()
        batch = [examples[i] for i in distributed.shard(cursor.take(cfg.batch_size))]
        parts = [
            collate(part, pad_id, cfg.device)
            for part in micro_batches(batch, cfg.gradient_accumulation_steps)
        ]
        local_tokens = sum(mask[:, 1:].sum().item() for _, _, mask in parts)
        tokens = distributed.all_reduce_sum(local_tokens)
        optimizer.zero_grad(set_to_none=True)
        batch_loss = 0.0
        for ids, attn, mask in parts:
            loss = masked_lm_loss(model, ids, attn, mask, cfg.autocast)
            share = mask[:, 1:].sum().item() / tokens  # the loss is a mean over all tokens
            (loss * share).backward()
            batch_loss += loss.item() * share
        distributed.sum_grads(model.parameters())
        batch_loss = distributed.all_reduce_sum(batch_loss)
        grad_norm = clip_grad(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        row = {
            "loss": batch_loss,
            "grad_norm": grad_norm,
            "lr": scheduler.get_last_lr()[0],
            "tokens_per_s": tokens / max(time.perf_counter() - t0, 1e-9),
        }
        run.end_step(row, on_step, loss=f"{row['loss']:.3f}")

    def evaluate() -> dict[str, float]:
        return evaluate_lm(model, eval_examples, pad_id, cfg)

    final_dir = run.finish(model, tokenizer, evaluate if eval_examples else None)
    if run.final_eval:
        run.history.append({f"eval_{k}": v for k, v in run.final_eval.items()})
    return TrainingResult(steps=run.step, history=run.history, final_dir=final_dir)
