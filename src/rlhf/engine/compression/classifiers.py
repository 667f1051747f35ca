"""Compressing sequence classifiers: dynamic int8, distillation, structured pruning.

Each function takes a `TextClassifier` (the teacher / source, left unchanged) and writes
a new Hugging Face directory that `load_classifier` below (and the Triton backend)
loads, with the `rlhf_compression` marker where a loader must do more than
`from_pretrained` (see `restore`).

* `int8_classifier`: the weights as they are, dynamic int8 quantisation on load.
* `distill_classifier`: a student with fewer layers (evenly spaced layers of the teacher
  as its initialisation) trained on the teacher's temperature-scaled soft labels (KL,
  times T^2) over labelled and unlabelled texts, plus cross-entropy on the known labels.
* `prune_classifier`: attention heads and FFN channels removed by first-order
  importance (|weight x gradient| summed over a calibration set), then a short
  recovery fine-tune with the same distillation loss against the unpruned model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.engine.classifier import (
    MAX_LENGTH_KEY,
    TAIL_LENGTH_KEY,
    TextClassifier,
    check_classifier_dir,
    pad_batch,
)
from rlhf.engine.compression.restore import MARKER_KEY, encoder_layers, load_model
from rlhf.engine.finetune import TrainLoopConfig, run_training_loop

OnStep = Callable[[int, dict[str, float]], None]


def load_classifier(directory: str | Path, device: str = "cpu") -> TextClassifier:
    """Load a classifier directory, re-applying its compression marker if it has one."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = check_classifier_dir(directory)
    model = load_model(AutoModelForSequenceClassification, directory, device=device)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    max_length = int(config.get(MAX_LENGTH_KEY) or min(tokenizer.model_max_length, 512))
    tail_length = int(config.get(TAIL_LENGTH_KEY) or 0)
    return TextClassifier(
        model, tokenizer, max_length=max_length, device=device, tail_length=tail_length
    )


def _save(
    model: nn.Module, source: TextClassifier, out_dir: str | Path, marker: dict | None
) -> Path:
    """Save `model` with the source's tokenizer and truncation settings (+ marker)."""
    if marker is not None:
        setattr(model.config, MARKER_KEY, marker)
    saved = TextClassifier(
        model,
        source.tokenizer,
        max_length=source.max_length,
        device=next(model.parameters()).device,
        tail_length=source.tail_length,
    )
    return saved.save(out_dir)


# ------------------------------------------------------------------------------ int8
def int8_classifier(
    source: TextClassifier, out_dir: str | Path, lineage: dict[str, Any] | None = None
) -> Path:
    """Dynamic int8 (Linear layers): the source's fp32 weights on disk, quantised when
    loaded. (Not fp16: quantising fp16-rounded weights cost the SST-2 MiniLM about a
    point of accuracy more than quantising the originals.)"""
    model = copy.deepcopy(source.model).cpu().float()
    marker = {"method": "int8", "storage": "float32", **(lineage or {})}
    return _save(model, source, out_dir, marker)


# ----------------------------------------------------------------------- distillation
@dataclass
class DistillConfig(TrainLoopConfig):
    """Knowledge distillation (also the recovery fine-tune after pruning)."""

    temperature: float = 2.0  # softens both distributions; the KL is scaled by T^2
    hard_weight: float = 0.5  # weight of cross-entropy on known labels (0: soft labels only)
    learning_rate: float = 1e-4  # a fresh, shallower student moves further than a fine-tune
    freeze_embeddings: bool = True  # the teacher's word embeddings, kept as they are
    teacher_batch_size: int = 64  # texts per teacher forward when computing soft labels


def student_layers(teacher_layers: int, layers: int) -> list[int]:
    """Evenly spaced teacher layers a student of `layers` layers starts from (the top
    layer always kept): 6 -> 2 gives [2, 5], 6 -> 3 gives [1, 3, 5]."""
    if not 1 <= layers <= teacher_layers:
        raise ValueError(f"student layers must be in 1..{teacher_layers}, got {layers}")
    return [round((i + 1) * teacher_layers / layers) - 1 for i in range(layers)]


def student_from_teacher(teacher: nn.Module, layers: int) -> nn.Module:
    """A copy of a BERT-style classifier keeping `layers` of its encoder layers."""
    keep = student_layers(len(encoder_layers(teacher)), layers)
    student = copy.deepcopy(teacher)
    base = getattr(student, student.base_model_prefix)
    base.encoder.layer = nn.ModuleList([base.encoder.layer[i] for i in keep])
    student.config.num_hidden_layers = layers
    for index, layer in enumerate(base.encoder.layer):  # layer_idx names cache slots
        attention = getattr(layer.attention, "self", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = index
    return student


def soft_labels(teacher: TextClassifier, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    """[N, num_labels] teacher logits (float32, CPU)."""
    return teacher.logits(list(texts), batch_size=batch_size).detach().float().cpu()


def distill(
    config: DistillConfig,
    teacher: TextClassifier,
    student: nn.Module,
    texts: Sequence[str],
    labels: Sequence[str | None],
    on_step: OnStep | None = None,
    targets: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Train `student` (same tokenizer as the teacher) on the teacher's soft labels.

    `labels[i]` is the known label of `texts[i]` or None (unlabelled text); `targets`
    the teacher's logits when already computed (`soft_labels`). Loss:
    T^2 KL(teacher_T || student_T) + hard_weight * CE(student, label) on labelled rows
    (MSE on the logit for a single-logit reward model).
    """
    if not texts:
        raise ValueError("distillation needs training texts (got none)")
    if targets is None:
        targets = soft_labels(teacher, texts, config.teacher_batch_size)
    if len(targets) != len(texts):
        raise ValueError(f"{len(targets)} teacher logits for {len(texts)} texts")
    label_ids = {name: i for i, name in enumerate(teacher.labels)}
    hard = torch.tensor([label_ids.get(label, -100) if label else -100 for label in labels])
    view = TextClassifier(
        student, teacher.tokenizer, teacher.max_length, config.device, False, teacher.tail_length
    )
    encoded = view.token_ids(list(texts))
    pad_id = teacher.tokenizer.pad_token_id
    device = torch.device(config.device)
    temperature = config.temperature

    def batch_loss(indices: list[int]) -> torch.Tensor:
        batch = pad_batch([encoded[i] for i in indices], pad_id)
        logits = student(**{k: v.to(device) for k, v in batch.items()}).logits.float()
        teacher_logits = targets[indices].to(device)
        if logits.shape[-1] == 1:
            return nn.functional.mse_loss(logits, teacher_logits)
        soft = nn.functional.kl_div(
            nn.functional.log_softmax(logits / temperature, -1),
            nn.functional.log_softmax(teacher_logits / temperature, -1),
            log_target=True,
            reduction="batchmean",
        ) * (temperature**2)
        known = hard[indices].to(device)
        if config.hard_weight > 0 and bool((known >= 0).any()):
            soft = soft + config.hard_weight * nn.functional.cross_entropy(
                logits, known, ignore_index=-100
            )
        return soft

    student.to(device)
    metrics, _ = run_training_loop(
        config, student, [len(ids) for ids in encoded], batch_loss, None, on_step, name="distill"
    )
    student.eval()
    return metrics


def distill_classifier(
    teacher: TextClassifier,
    out_dir: str | Path,
    config: DistillConfig,
    texts: Sequence[str],
    labels: Sequence[str | None],
    layers: int = 2,
    on_step: OnStep | None = None,
    lineage: dict[str, Any] | None = None,
    targets: torch.Tensor | None = None,
) -> tuple[Path, dict[str, Any]]:
    """A `layers`-layer student distilled from `teacher`; saved as a plain HF model."""
    student = student_from_teacher(teacher.model.cpu(), layers)
    teacher.to(config.device)
    metrics = distill(config, teacher, student, texts, labels, on_step, targets)
    # Plain HF directory: no marker needed to load. The config key is for lineage only.
    student.config.rlhf_distilled_from = {"layers": layers, **(lineage or {})}
    return _save(student, teacher, out_dir, None), metrics


# --------------------------------------------------------------------------- pruning
@dataclass
class PruneConfig:
    """Which share of heads and FFN channels to remove, and how importance is measured."""

    head_fraction: float = 0.5  # attention heads removed per layer (at least one stays)
    ffn_fraction: float = 0.5  # FFN (intermediate) channels removed per layer
    calibration_batches: int = 8  # batches of calibration texts for the importance scores
    batch_size: int = 16


def _taylor(param: nn.Parameter | None, rows: bool, size: int, groups: int) -> torch.Tensor:
    """|w * grad| summed per group of `size` rows (rows=True) or columns."""
    if param is None or param.grad is None:
        return torch.zeros(groups)
    score = (param.detach() * param.grad.detach()).abs().float()
    if score.dim() == 1:
        return score.view(groups, size).sum(1)
    score = score if rows else score.t()
    return score.reshape(groups, size, -1).sum((1, 2))


def importance(
    classifier: TextClassifier,
    texts: Sequence[str],
    labels: Sequence[str | None],
    config: PruneConfig,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: [heads] and [FFN channels] first-order importance scores.

    The loss is cross-entropy on the known labels, else on the model's own prediction
    (so unlabelled calibration text works too)."""
    model = classifier.model
    layers = encoder_layers(model)
    model.zero_grad(set_to_none=True)
    model.eval()  # no dropout: the scores describe the model as served
    label_ids = {name: i for i, name in enumerate(classifier.labels)}
    batches = [
        range(start, min(start + config.batch_size, len(texts)))
        for start in range(0, len(texts), config.batch_size)
    ][: config.calibration_batches]
    if not batches:
        raise ValueError("pruning needs calibration texts (got none)")
    for rows in batches:
        batch = classifier.encode([texts[i] for i in rows])
        logits = model(**batch).logits.float()
        if logits.shape[-1] == 1:
            loss = logits.pow(2).mean()
        else:
            own = logits.argmax(-1)
            known = torch.tensor(
                [label_ids.get(labels[i], -1) if labels[i] else -1 for i in rows],
                device=own.device,
            )
            loss = nn.functional.cross_entropy(logits, torch.where(known >= 0, known, own))
        loss.backward()
    heads, channels = [], []
    for layer in layers:
        attention = layer.attention.self
        n, size = attention.num_attention_heads, attention.attention_head_size
        score = sum(
            _taylor(getattr(attention, name).weight, True, size, n)
            + _taylor(getattr(attention, name).bias, True, size, n)
            for name in ("query", "key", "value")
        )
        heads.append(score + _taylor(layer.attention.output.dense.weight, False, size, n))
        width = layer.intermediate.dense.out_features
        channels.append(
            _taylor(layer.intermediate.dense.weight, True, 1, width)
            + _taylor(layer.intermediate.dense.bias, True, 1, width)
            + _taylor(layer.output.dense.weight, False, 1, width)
        )
    model.zero_grad(set_to_none=True)
    return heads, channels


def _take(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A Linear keeping only the output rows (dim=0) or input columns (dim=1) at `index`."""
    weight = linear.weight.detach().index_select(dim, index.to(linear.weight.device))
    out_features, in_features = weight.shape
    new = nn.Linear(in_features, out_features, bias=linear.bias is not None)
    new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            bias = linear.bias.detach()
            new.bias.copy_(bias.index_select(0, index.to(bias.device)) if dim == 0 else bias)
    return new


def prune_model(
    model: nn.Module,
    head_scores: Sequence[torch.Tensor],
    channel_scores: Sequence[torch.Tensor],
    config: PruneConfig,
) -> dict[str, Any]:
    """Remove the least important heads and channels in place; returns the marker."""
    kept_heads, kept_channels = [], []
    for layer, h_score, c_score in zip(
        encoder_layers(model), head_scores, channel_scores, strict=True
    ):
        attention = layer.attention.self
        size = attention.attention_head_size
        n_heads = max(1, len(h_score) - math.floor(len(h_score) * config.head_fraction))
        heads = torch.sort(torch.topk(h_score, n_heads).indices).values
        rows = torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads.tolist()])
        for name in ("query", "key", "value"):
            setattr(attention, name, _take(getattr(attention, name), rows, 0))
        attention.num_attention_heads = n_heads
        attention.all_head_size = n_heads * size
        layer.attention.output.dense = _take(layer.attention.output.dense, rows, 1)
        n_channels = max(1, len(c_score) - math.floor(len(c_score) * config.ffn_fraction))
        channels = torch.sort(torch.topk(c_score, n_channels).indices).values
        layer.intermediate.dense = _take(layer.intermediate.dense, channels, 0)
        layer.output.dense = _take(layer.output.dense, channels, 1)
        kept_heads.append(n_heads)
        kept_channels.append(n_channels)
    return {"method": "prune", "heads": kept_heads, "intermediate": kept_channels}


def prune_classifier(
    source: TextClassifier,
    out_dir: str | Path,
    config: PruneConfig,
    recovery: DistillConfig | None,
    texts: Sequence[str],
    labels: Sequence[str | None],
    on_step: OnStep | None = None,
    lineage: dict[str, Any] | None = None,
    targets: torch.Tensor | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Prune heads and FFN channels by importance, then recover by distillation from
    the unpruned source (`recovery=None` skips the fine-tune; `targets`: the source's
    logits on `texts` when already computed)."""
    device = recovery.device if recovery is not None else str(source.device)
    source.to(device)
    pruned = TextClassifier(
        copy.deepcopy(source.model),
        source.tokenizer,
        source.max_length,
        device,
        False,
        source.tail_length,
    )
    heads, channels = importance(pruned, texts, labels, config)
    marker = prune_model(pruned.model, heads, channels, config)
    metrics: dict[str, Any] = {
        "heads_kept": float(sum(marker["heads"])),
        "ffn_channels_kept": float(sum(marker["intermediate"])),
    }
    if recovery is not None:
        metrics |= distill(recovery, source, pruned.model, texts, labels, on_step, targets)
    return _save(pruned.model, source, out_dir, {**marker, **(lineage or {})}), metrics
