"""Compressing causal-LM policies: weight-only int8 (or dynamic int8), and perplexity.

Decoding a small LM on a CPU reads every weight once per generated token, so it is
bound by memory bandwidth: int8 weights (a quarter of fp32, half of bf16) with bf16
activations make each step cheaper while the arithmetic stays in bf16.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.engine.compression.restore import MARKER_KEY, load_model


def save_compressed_policy(
    model: nn.Module,
    tokenizer: Any,
    out_dir: str | Path,
    method: str,
    lineage: dict[str, Any] | None = None,
) -> Path:
    """fp16 weights + a marker (`int8` or `weight_int8`): the loader quantises."""
    if method not in ("int8", "weight_int8"):
        raise ValueError(f"policy compression method must be int8 or weight_int8, got {method!r}")
    out = Path(out_dir)
    copy_ = copy.deepcopy(model).cpu().half()
    marker: dict[str, Any] = {"method": method, "storage": "float16", **(lineage or {})}
    if method == "weight_int8":
        marker["activation_dtype"] = "bfloat16"
    setattr(copy_.config, MARKER_KEY, marker)
    copy_.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def load_policy(directory: str | Path, device: str = "cpu") -> nn.Module:
    """A causal LM directory, re-applying its compression marker if it has one."""
    from transformers import AutoModelForCausalLM

    return load_model(AutoModelForCausalLM, directory, device=device)


@torch.no_grad()
def perplexity(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int = 256
) -> float:
    """exp(mean token negative log-likelihood) of `texts` (each truncated)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)
        input_ids = ids["input_ids"].to(device)
        if input_ids.shape[1] < 2:
            continue
        logits = model(input_ids=input_ids).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1)
        nll = -logp.gather(-1, input_ids[:, 1:, None])[..., 0]
        total += float(nll.sum())
        count += int(nll.numel())
    if not count:
        raise ValueError("perplexity needs texts of at least two tokens (got none)")
    return math.exp(total / count)
