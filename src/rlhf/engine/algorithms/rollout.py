"""Prompts, sampling, log-probabilities and scores: what the algorithms read from models.

Kept in one place so PPO, RLOO/GRPO, DPO and SFT compute log-probabilities and KL
exactly the same way (a mismatch there silently biases every KL figure). KL control
is in ``kl_control``; precision, optimizer, schedule and metrics in ``rlhf.engine.training``.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.engine import distributed, training
from rlhf.engine.data.readers import dialogue_to_messages as hh_to_messages
from rlhf.engine.training import autocast

Shard = tuple[int, int]
"""(rank, world size) of a rollout whose rows are one rank's equal, contiguous part of
a global batch: sampling then draws the global batch's random numbers and keeps its
rows, so N ranks sample exactly the tokens one process samples for the whole batch."""

RewardFn = Callable[[list[str]], torch.Tensor]
"""A reward is any callable from texts to a float tensor [N] (a TextClassifier's
``positive_scores``, a lambda in a test, a remote scoring service...)."""


# --------------------------------------------------------------------------------------
# Masked statistics


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True
) -> torch.Tensor:
    """Normalise to unit variance over the masked entries (PPO advantage whitening);
    under torchrun the mean and variance are the global batch's."""
    mean = distributed.global_masked_mean(values, mask)
    var = distributed.global_masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


# --------------------------------------------------------------------------------------
# Prompts and data order


_HH_TURN = re.compile(r"\n\n(Human|Assistant|System):")


def encode_chat_prompt(
    tokenizer: Any, prompt: str | list[dict[str, str]], use_chat_template: bool
) -> list[int]:
    """Prompt token ids: chat messages, HH-format text or a plain user message rendered
    with the chat template (ending with the assistant header); else raw text."""
    if not use_chat_template:
        if not isinstance(prompt, str):
            raise ValueError("a message-list prompt needs use_chat_template=True")
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if isinstance(prompt, str):
        messages = hh_to_messages(prompt) if _HH_TURN.search(prompt) else []
        messages = messages or [{"role": "user", "content": prompt.strip()}]
    else:
        messages = list(prompt)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], use_chat_template: bool, max_prompt_tokens: int
) -> list[list[int]]:
    """Token ids of each prompt (chat-wrapped as a user turn when asked), left-truncated."""
    encoded: list[list[int]] = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompts[{i}]: expected a non-empty string, got {prompt!r}")
        ids = encode_chat_prompt(tokenizer, prompt, use_chat_template)
        encoded.append(ids[-max_prompt_tokens:])
    return encoded


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (ids [B, T], attention_mask [B, T])."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


# --------------------------------------------------------------------------------------
# Sampling and log-probabilities


@dataclass
class Rollout:
    """One batch of sampled continuations.

    query/query_mask: left-padded prompts [B, P]; response: [B, R] right-padded with
    the pad id; response_mask: 1 on generated tokens up to and including the first EOS.
    """

    query: torch.Tensor
    query_mask: torch.Tensor
    response: torch.Tensor
    response_mask: torch.Tensor

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query, self.response], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)


def response_mask_from(response: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """1 for tokens up to and including the first EOS, 0 after it."""
    if eos_token_id is None:
        return torch.ones_like(response)
    is_eos = response == eos_token_id
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return (~after_eos).long()


def sample_categorical(
    logits: torch.Tensor, temperature: float = 1.0, shard: Shard | None = None
) -> torch.Tensor:
    """One token per row from softmax(logits / temperature); greedy if temperature <= 0.

    Inverse-CDF sampling: one uniform number per row and a binary search in the
    cumulative probabilities. ``torch.multinomial`` (what ``generate`` uses) draws an
    exponential variate for every vocabulary entry instead: 1.5M random numbers per
    step for 32 rows of a 49k vocabulary, a quarter of SmolLM2's decode time on CPU.
    Same distribution, different random stream. With a ``shard`` the rows are rank r's
    part of a global batch: the global batch's uniform numbers are drawn and r's kept.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float()
    probs = torch.softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)
    cdf = probs.cumsum(dim=-1)
    rows = cdf.shape[0]
    rank, world = shard or (0, 1)
    u = torch.rand(rows * world, 1, device=cdf.device)[rank * rows : (rank + 1) * rows]
    u = u * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)


@torch.no_grad()
def decode(
    lm: Any,
    query: torch.Tensor,
    query_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    eos_token_id: int | None,
    pad_token_id: int,
    shard: Shard | None = None,
) -> torch.Tensor:
    """KV-cached autoregressive sampling from left-padded prompts -> response [B, R].

    A plain loop instead of ``generate``: no logits processors or stopping-criteria
    machinery per token, the prompt's logits only at its last position, and the
    sampler above. Tokens after a row's EOS are the pad id; the loop ends early once
    every row has finished, so R <= max_new_tokens (with a ``shard``, every row of the
    global batch: all ranks draw as many numbers as one process would).
    """
    cache_arg = cache_argument(lm)
    position_ids = position_ids_from(query_mask)
    out = lm(
        input_ids=query,
        attention_mask=query_mask,
        position_ids=position_ids,
        use_cache=True,
        logits_to_keep=1,
    )
    attention_mask = query_mask
    next_position = position_ids[:, -1:] + 1
    finished = torch.zeros(query.shape[0], dtype=torch.bool, device=query.device)
    tokens: list[torch.Tensor] = []
    for t in range(max_new_tokens):
        token = sample_categorical(out.logits[:, -1, :], temperature, shard)
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        tokens.append(token)
        if eos_token_id is not None:
            finished |= token == eos_token_id
        done = bool(finished.all())
        if t == max_new_tokens - 1 or (distributed.all_true(done) if shard else done):
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(token), 1)], 1)
        out = lm(
            input_ids=token.unsqueeze(1),
            attention_mask=attention_mask,
            position_ids=next_position,
            use_cache=True,
            **{cache_arg: getattr(out, cache_arg)},
        )
        next_position = next_position + 1
    if not tokens:
        return query.new_zeros(query.shape[0], 0)
    return torch.stack(tokens, dim=1)


@torch.no_grad()
def sample(
    lm: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    use_autocast: bool = True,
    shard: Shard | None = None,
) -> Rollout:
    """Sample continuations from the full distribution (no top-k/top-p, so the sampled
    tokens' log-probs are the ones the KL estimate needs); ``shard``: see ``Shard``."""
    device = next(lm.parameters()).device
    pad_id = tokenizer.pad_token_id
    query, query_mask = left_pad(prompt_ids, pad_id)
    query, query_mask = query.to(device), query_mask.to(device)
    was_training = lm.training
    lm.eval()
    with autocast(device, use_autocast):
        response = decode(
            lm,
            query,
            query_mask,
            max_new_tokens,
            temperature,
            tokenizer.eos_token_id,
            pad_id,
            shard,
        )
    lm.train(was_training)
    mask = response_mask_from(response, tokenizer.eos_token_id)
    response = torch.where(mask.bool(), response, torch.full_like(response, pad_id))
    return Rollout(query=query, query_mask=query_mask, response=response, response_mask=mask)


def cache_argument(lm: Any) -> str:
    """Name of the KV-cache argument and output field of ``lm.forward``: transformers
    5.2x renamed ``past_key_values`` to ``cache`` (the old name warns)."""
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, matching what ``generate`` used."""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def lm_forward(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any
) -> Any:
    """``model`` on padded rows, with positions that skip the (left) padding."""
    position_ids = position_ids_from(attention_mask)
    return model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
    )


class _TokenLogProb(torch.autograd.Function):
    """log softmax(logits)[target] without materialising the [B, R, V] log-softmax.

    log p(y) = z_y - logsumexp(z), and its gradient is onehot(y) - softmax(z). Computed
    row-chunk by row-chunk in float32 and written back in the logits' dtype, so the
    forward keeps only the [B, R] log-sum-exp and the backward writes one tensor the
    size of the logits (the plain gather(log_softmax) path keeps a float32 copy, the
    log-softmax and a zero-filled scatter target: ~11% of a policy update on CPU).
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        flat = logits.reshape(-1, logits.shape[-1])
        lse = torch.cat([torch.logsumexp(c.float(), -1) for c in flat.split(_ROW_CHUNK)])
        picked = flat.gather(1, target.reshape(-1, 1)).squeeze(1).float()
        ctx.save_for_backward(flat, target, lse)
        return (picked - lse).view(target.shape)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        flat, target, lse = ctx.saved_tensors
        grad = torch.empty_like(flat)
        g = grad_out.reshape(-1).float()
        for start in range(0, flat.shape[0], _ROW_CHUNK):
            rows = slice(start, start + _ROW_CHUNK)
            probs = (flat[rows].float() - lse[rows, None]).exp_()
            grad[rows] = probs.mul_(-g[rows, None])
        grad.scatter_add_(1, target.reshape(-1, 1), g.unsqueeze(1).to(grad.dtype))
        return grad.view(*target.shape, flat.shape[-1]), None


_ROW_CHUNK = 64
"""Rows (token positions) per chunk: 64 x 49k float32 = 12.6 MB, cache-sized work."""


def token_logprobs(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[..., target] in float32 ([..., V], [...] -> [...])."""
    return _TokenLogProb.apply(logits, target)


def response_logprobs(
    logits: torch.Tensor, response: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log p(response_t | ...) from logits aligned with the response ([B, R, V] -> [B, R])."""
    if temperature != 1.0:
        logits = logits.float() / temperature
    return token_logprobs(logits, response)


class SamplingCopy:
    """The policy's weights in bf16, for sampling only, refreshed before each rollout.

    Why: under CPU bf16 autocast every op of every decode step goes through autocast's
    dispatch and casts its activations; a model already in bf16 decodes the same
    32 x 32-token batch in ~0.8x the time (SmolLM2-135M), and the refresh is one cast
    of the weights. The samples come from the bf16 model; the training forward still
    runs under autocast with float32 master weights and recomputes their log-probs,
    so the update is exact for what it scores. Off (``model()`` returns the policy)
    unless autocast is on and the device is a CPU: CUDA autocast is cheap.
    """

    def __init__(self, policy: Any, device: str | torch.device, use_autocast: bool) -> None:
        self.policy = policy
        self.use_autocast = use_autocast
        self.copy: Any | None = None
        if torch.device(device).type == "cpu" and training.cpu_bf16(device, use_autocast):
            self.copy = copy.deepcopy(policy).eval().requires_grad_(False)
            # Parameters only: float buffers (RoPE frequencies) stay float32.
            for param in self.copy.parameters():
                param.data = param.data.to(torch.bfloat16)

    @property
    def active(self) -> bool:
        return self.copy is not None

    @torch.no_grad()
    def model(self) -> Any:
        """The model to sample from, with the policy's current weights."""
        if self.copy is None:
            return self.policy
        for dst, src in zip(self.copy.parameters(), self.policy.parameters(), strict=True):
            dst.copy_(src)
        return self.copy

    def rollout(
        self,
        tokenizer: Any,
        prompt_ids: Sequence[Sequence[int]],
        max_new_tokens: int,
        temperature: float = 1.0,
        shard: Shard | None = None,
    ) -> Rollout:
        """``sample`` from the current weights; autocast only when sampling the policy."""
        return sample(
            self.model(),
            tokenizer,
            prompt_ids,
            max_new_tokens,
            temperature,
            self.use_autocast and not self.active,
            shard,
        )


def forward_response(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_len: int,
    with_values: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (and values) at the positions that predict the last ``response_len`` tokens.

    Asks the model for only the last R+1 positions' logits (``logits_to_keep``), so
    the vocabulary projection is not wasted on the prompt.
    """
    keep = response_len + 1
    if with_values:
        logits, values = lm_forward(model, input_ids, attention_mask, logits_to_keep=keep)
        return logits[:, :-1], values[:, -response_len - 1 : -1]
    out = lm_forward(model, input_ids, attention_mask, use_cache=False, logits_to_keep=keep)
    return out.logits[:, :-1], None


@torch.no_grad()
def rollout_logprobs(
    model: Any, rollout: Rollout, use_autocast: bool, temperature: float = 1.0
) -> torch.Tensor:
    """Log-probs of the rollout's response tokens under ``model`` (no gradient)."""
    device = rollout.query.device
    with autocast(device, use_autocast):
        logits, _ = forward_response(
            model, rollout.input_ids, rollout.attention_mask, rollout.response.shape[1]
        )
    return response_logprobs(logits, rollout.response, temperature) * rollout.response_mask


def decode_responses(tokenizer: Any, rollout: Rollout) -> list[str]:
    return [
        tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
        for ids, mask in zip(rollout.response, rollout.response_mask, strict=True)
    ]


def decode_queries(tokenizer: Any, rollout: Rollout) -> list[str]:
    return [
        tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
        for ids, mask in zip(rollout.query, rollout.query_mask, strict=True)
    ]


def score(
    reward_fn: RewardFn, queries: list[str], responses: list[str], full_text: bool
) -> torch.Tensor:
    """Call the reward on prompt+response (or the response alone) and check its shape."""
    texts = [q + r for q, r in zip(queries, responses, strict=True)] if full_text else responses
    with torch.no_grad():
        scores = reward_fn(texts)
    scores = torch.as_tensor(scores, dtype=torch.float32).detach().cpu().flatten()
    if scores.numel() != len(texts):
        raise ValueError(f"reward_fn returned {scores.numel()} scores for {len(texts)} texts")
    return scores
