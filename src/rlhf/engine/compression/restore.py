"""Re-apply a compression when a saved model is loaded: torch and transformers only.

A compressed model is saved as an ordinary Hugging Face directory plus one key in its
config.json, `rlhf_compression`, saying what a loader must do on top of
`from_pretrained`:

* `{"method": "int8"}`: `torch.ao` dynamic int8 quantisation of every `nn.Linear` is
  applied after loading (CPU only; on GPU the weights run as they are). Classifiers
  keep their fp32 weights on disk, policies store fp16. Any transformers loader still
  reads the directory (unquantised).
* `{"method": "weight_int8"}`: weights stored in fp16; every `nn.Linear` becomes an
  `Int8WeightOnlyLinear` (int8 weights, one scale per output channel, activations in
  the model's dtype). Meant for causal LMs, whose decoding is memory-bound.
* `{"method": "prune", "heads": [...], "intermediate": [...]}`: attention heads and FFN
  channels were removed; the layer shapes are rebuilt from these per-layer counts
  before the weights load (plain `from_pretrained` cannot: the shapes differ).

This file imports nothing from the project: the Triton model repository carries a
copy of it next to `model.py` (see `rlhf.serving.repository`), so a Triton server
without this project installed serves compressed versions too.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

#: The config.json key that marks a compressed model.
MARKER_KEY = "rlhf_compression"
METHODS = ("int8", "weight_int8", "prune")


# ---------------------------------------------------------------------------- int8
def linear_layers_from_conv1d(model: nn.Module) -> nn.Module:
    """Replace GPT-2 style `Conv1D` layers (y = x W + b, W stored [in, out]) by the
    equivalent nn.Linear, so the int8 methods see every projection."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child).__name__ == "Conv1D" and hasattr(child, "nf"):
                weight = child.weight.detach()
                linear = nn.Linear(weight.shape[0], weight.shape[1], device=weight.device)
                linear.to(weight.dtype)
                with torch.no_grad():
                    linear.weight.copy_(weight.t())
                    linear.bias.copy_(child.bias.detach())
                setattr(module, name, linear)
    return model


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation of every nn.Linear (weights int8 per channel,
    activations quantised on the fly). CPU kernels only: returns the model unchanged
    on another device."""
    if next(model.parameters()).device.type != "cpu":
        return model
    import warnings

    model = linear_layers_from_conv1d(model.float())
    with warnings.catch_warnings():  # torch.ao is deprecated in favour of torchao (not a
        warnings.simplefilter("ignore")  # dependency here); its kernels are still there
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(  # in place: no second fp32 copy at the memory peak
            model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
        )


class Int8WeightOnlyLinear(nn.Module):
    """A Linear layer with int8 weights (symmetric, one scale per output row).

    On CPU the product runs in `aten._weight_int8pack_mm` (bf16 activations are the
    fast case); elsewhere the weights are dequantised per call.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        quantized = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", quantized.contiguous())
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        self.bias = (
            nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
            if linear.bias is not None
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).contiguous()
        if flat.device.type == "cpu":
            out = torch.ops.aten._weight_int8pack_mm(
                flat, self.weight_int8, self.scale.to(flat.dtype)
            )
        else:
            out = nn.functional.linear(flat, self.weight_int8.to(flat.dtype)) * self.scale.to(
                flat.dtype
            )
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_weight_only_int8(model: nn.Module, skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace every nn.Linear (except names ending in `skip`) by Int8WeightOnlyLinear."""
    linear_layers_from_conv1d(model)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and not full.endswith(skip):
                setattr(module, child_name, Int8WeightOnlyLinear(child))
    return model


# ----------------------------------------------------------------------------- prune
def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer layers of a BERT-style encoder (`<base>.encoder.layer`)."""
    base = getattr(model, model.base_model_prefix, model)
    try:
        return list(base.encoder.layer)
    except AttributeError as exc:
        raise ValueError(
            f"{type(model).__name__}: structured pruning supports BERT-style encoders "
            "(encoder.layer[i].attention / intermediate / output)"
        ) from exc


def _resized(linear: nn.Linear, out_features: int | None = None, in_features: int | None = None):
    out_features = out_features if out_features is not None else linear.out_features
    in_features = in_features if in_features is not None else linear.in_features
    return nn.Linear(
        in_features,
        out_features,
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )


def shrink_layer(layer: nn.Module, heads: int, intermediate: int) -> None:
    """Give one BERT layer `heads` attention heads and `intermediate` FFN channels
    (fresh weights of the new shapes: the caller loads or copies the kept ones)."""
    attention = layer.attention.self
    width = heads * attention.attention_head_size
    for name in ("query", "key", "value"):
        setattr(attention, name, _resized(getattr(attention, name), out_features=width))
    attention.num_attention_heads = heads
    attention.all_head_size = width
    output = layer.attention.output
    output.dense = _resized(output.dense, in_features=width)
    layer.intermediate.dense = _resized(layer.intermediate.dense, out_features=intermediate)
    layer.output.dense = _resized(layer.output.dense, in_features=intermediate)


def shrink_for_pruning(model: nn.Module, marker: dict[str, Any]) -> nn.Module:
    """Rebuild the layer shapes a prune marker records (per layer: heads, FFN channels)."""
    layers = encoder_layers(model)
    heads, intermediate = marker["heads"], marker["intermediate"]
    if len(heads) != len(layers) or len(intermediate) != len(layers):
        raise ValueError(
            f"{MARKER_KEY}: {len(heads)} head counts / {len(intermediate)} FFN widths for "
            f"a model of {len(layers)} layers"
        )
    for layer, h, i in zip(layers, heads, intermediate, strict=True):
        shrink_layer(layer, int(h), int(i))
    return model


# ----------------------------------------------------------------------------- load
def read_marker(model_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The compression marker of a saved model directory, or None."""
    path = os.path.join(os.fspath(model_dir), "config.json")
    with open(path, encoding="utf-8") as handle:
        marker = json.load(handle).get(MARKER_KEY)
    if marker is not None and marker.get("method") not in METHODS:
        raise ValueError(f"{path}: {MARKER_KEY}.method {marker.get('method')!r} not in {METHODS}")
    return marker


def _load_weights(model: nn.Module, model_dir: str) -> None:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as handle:
            files = sorted(set(json.load(handle)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for name in files:
        state.update(load_file(os.path.join(model_dir, name)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "position_ids" in k or k.endswith("decoder.weight")}
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"{model_dir}: weights do not match the pruned shapes "
            f"(missing {sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )


def apply_after_load(model: nn.Module, marker: dict[str, Any] | None) -> nn.Module:
    """Quantise a loaded model as its marker says (a no-op for prune and no marker)."""
    if not marker:
        return model
    if marker["method"] == "int8":
        return quantize_dynamic_int8(model)
    if marker["method"] == "weight_int8":
        return quantize_weight_only_int8(model, skip=tuple(marker.get("skip", ())))
    return model


def load_model(
    auto_class: Any,
    model_dir: str | os.PathLike[str],
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """`auto_class.from_pretrained(model_dir)` that re-applies a compression marker."""
    model_dir = os.fspath(model_dir)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    marker = read_marker(model_dir)
    if marker and marker["method"] == "prune":
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir)
        model = auto_class.from_config(config, dtype=torch.float32)
        shrink_for_pruning(model, marker)
        _load_weights(model, model_dir)
        model = model.to(dtype)
    else:
        if marker and marker["method"] == "int8":
            dtype = torch.float32  # the dynamic-quantised kernels take fp32 activations
        if marker and marker["method"] == "weight_int8" and torch.device(device).type == "cpu":
            # The int8 x bf16 kernel is the fast CPU path (int8 x fp32 is slower than fp32).
            dtype = getattr(torch, marker.get("activation_dtype", "bfloat16"))
        model = auto_class.from_pretrained(model_dir, dtype=dtype)
    model = model.to(device).eval()
    return apply_after_load(model, marker)
