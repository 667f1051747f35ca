"""Model compression for serving: dynamic / weight-only int8, distillation, pruning.

`restore` re-applies a compression when a saved model loads (torch + transformers
only, shipped to Triton beside `model.py`); `classifiers` compresses sequence
classifiers; `policy` causal LMs; `measure` measures size, memory, latency and
throughput beside the source model. The pipeline stage is `rlhf.workflows.compression`.
"""

from rlhf.engine.compression.restore import (
    MARKER_KEY,
    Int8WeightOnlyLinear,
    load_model,
    quantize_dynamic_int8,
    quantize_weight_only_int8,
    read_marker,
)

__all__ = [
    "MARKER_KEY",
    "Int8WeightOnlyLinear",
    "load_model",
    "quantize_dynamic_int8",
    "quantize_weight_only_int8",
    "read_marker",
]
