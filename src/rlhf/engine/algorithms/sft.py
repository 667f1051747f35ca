"""Supervised fine-tuning on (prompt, response) examples, loss on the response only.

The prompt is rendered with the tokenizer's chat template (a user turn, an HH-format
dialogue, or a list of chat messages) ending with the assistant header; the response
follows and ends with EOS. Only response tokens (and that EOS) carry loss, so the
model learns to answer, not to imitate users.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf.engine.algorithms.lm_training import LMTrainConfig, LMTrainResult, train_lm
from rlhf.engine.algorithms.rollout import encode_chat_prompt


@dataclass
class SFTConfig(LMTrainConfig):
    """SFT settings (plus everything in LMTrainConfig)."""

    learning_rate: float = 2e-5
    warmup_steps: int = 5
    weight_decay: float = 0.0
    use_chat_template: bool = True
    """Render prompts with the chat template (when the tokenizer has one)."""
    max_prompt_tokens: int = 256
    """Prompts are left-truncated to this many tokens."""
    max_response_tokens: int = 256
    """Responses are right-truncated to this many tokens."""
    eval_fraction: float = 0.0
    """Fraction of examples held out for loss/perplexity."""


@dataclass
class SFTExample:
    """A prompt (text, HH dialogue or chat messages) and the target response."""

    prompt: str | list[dict[str, str]]
    response: str


def _as_example(item: Any, index: int) -> SFTExample:
    if isinstance(item, SFTExample):
        return item
    if isinstance(item, dict):
        if "messages" in item:
            messages = item["messages"]
            if not messages or messages[-1].get("role") != "assistant":
                raise ValueError(f"examples[{index}].messages: must end with an assistant turn")
            return SFTExample(messages[:-1], messages[-1]["content"])
        if "prompt" in item and "response" in item:
            return SFTExample(item["prompt"], item["response"])
        raise ValueError(f"examples[{index}]: expected keys prompt/response or messages")
    if hasattr(item, "prompt") and (hasattr(item, "response") or hasattr(item, "chosen")):
        return SFTExample(item.prompt, getattr(item, "response", None) or item.chosen)
    raise ValueError(f"examples[{index}]: unsupported example type {type(item).__name__}")


def encode_sft(
    tokenizer: Any, example: SFTExample, cfg: SFTConfig, index: int = 0
) -> tuple[list[int], list[float]]:
    """(ids, loss mask) with the mask on response tokens and the final EOS."""
    if not isinstance(example.response, str) or not example.response.strip():
        raise ValueError(f"examples[{index}].response: expected a non-empty string")
    chat = bool(cfg.use_chat_template and getattr(tokenizer, "chat_template", None))
    prompt = encode_chat_prompt(tokenizer, example.prompt, chat)[-cfg.max_prompt_tokens :]
    response_text = example.response.strip() if chat else example.response
    response = tokenizer(response_text, add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    response = response[: cfg.max_response_tokens - len(eos)] + eos
    return prompt + response, [0.0] * len(prompt) + [1.0] * len(response)


def train_sft(
    config: SFTConfig,
    model: Any,
    tokenizer: Any,
    examples: Sequence[Any],
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> LMTrainResult:
    """Fine-tune ``model`` in place; examples are SFTExample, dicts or preference pairs (chosen)."""
    encoded = [encode_sft(tokenizer, _as_example(e, i), config, i) for i, e in enumerate(examples)]
    n_eval = int(len(encoded) * config.eval_fraction)
    train, held_out = encoded[: len(encoded) - n_eval], encoded[len(encoded) - n_eval :]
    return train_lm(config, model, tokenizer, train, held_out, name="sft", on_step=on_step)
