"""What PPO and RLOO/GRPO share: their config, their result, and the start of a step.

Both algorithms sample continuations of a batch of prompts from the current policy,
score them with a reward function, and measure per-token KL against a frozen
reference; they differ in how they turn that into a loss (``ppo.py``, ``rloo.py``).

Under torchrun each rank samples, scores and trains on its shard of each step's
prompts (``Episodes.sample``); what steers the run (KL, scores, whitening, the KL
controller and budget) is reduced over ranks, so all ranks decide alike.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.engine import distributed
from rlhf.engine.algorithms.kl_control import KLControl, KLControlConfig
from rlhf.engine.algorithms.rollout import (
    RewardFn,
    Rollout,
    SamplingCopy,
    decode_queries,
    decode_responses,
    encode_prompts,
    forward_response,
    response_logprobs,
    rollout_logprobs,
    score,
)
from rlhf.engine.training import (
    DataCursor,
    TrainConfig,
    TrainingResult,
    TrainingRun,
    attention_kernel,
    check_fields,
    training_forward,
)


@dataclass
class RLConfig(TrainConfig, KLControlConfig):
    """Settings of online RL from a reward function (plus TrainConfig's and
    KLControlConfig's fields)."""

    total_steps: int = 100
    """Number of steps (rollout batch + update)."""
    use_chat_template: bool = False
    """Wrap each prompt as a user turn with the tokenizer's chat template."""
    max_prompt_tokens: int = 64
    """Prompts are left-truncated to this many tokens."""
    max_new_tokens: int = 32
    """Generated tokens per episode."""
    temperature: float = 1.0
    """Sampling temperature (log-probs use the same temperature)."""
    score_full_text: bool = True
    """Score prompt+continuation (True) or the continuation alone."""
    score_scale: float = 1.0
    """Multiply the reward function's score by this."""
    cliprange: float = 0.2
    """Policy ratio clip epsilon."""
    attn_implementation: str | None = "auto"
    """Attention kernel for the policy's training forward/backward: "auto" = eager on
    CPU (faster backward at these lengths), the model's own on CUDA; None = as loaded."""

    def __post_init__(self) -> None:
        TrainConfig.__post_init__(self)
        KLControlConfig.__post_init__(self)
        check_fields(self, ">= 0", "total_steps")
        check_fields(self, ">= 1", "max_new_tokens")
        if self.gradient_accumulation_steps != 1:
            raise ValueError(
                "gradient_accumulation_steps: PPO and RLOO step once per mini-batch; "
                "set mini_batch_size (and epochs) instead"
            )


@dataclass
class RLResult(TrainingResult):
    """A PPO or RLOO/GRPO run: TrainingResult plus how KL control ended."""

    stopped_on_budget: bool = False
    kl_coef: float = 0.0
    budget_overshoots: int = 0
    final_kl: float | None = None
    """KL (nats/seq) of one more batch sampled from the last update's weights (with a
    KL budget): those weights are otherwise never measured."""
    restored_at_end: bool = False
    """The final batch was past the budget: the kept weights are the last ones within
    it, not the last update's."""


class Episodes:
    """Where a step's episodes come from: prompts in a reshuffled order (resumable:
    checkpointed as "cursor"), continuations sampled from the current policy, their
    scores, and the frozen reference's log-probs of them."""

    def __init__(
        self,
        cfg: RLConfig,
        policy_lm: Any,
        ref_model: Any | None,
        tokenizer: Any,
        prompts: Sequence[str],
        reward_fn: RewardFn,
    ) -> None:
        if not prompts:
            raise ValueError("prompts: empty prompt list")
        self.cfg, self.tokenizer, self.reward_fn = cfg, tokenizer, reward_fn
        self.ref = ref_model if ref_model is not None else copy.deepcopy(policy_lm)
        self.ref.to(cfg.device).eval().requires_grad_(False)
        self.prompt_ids = encode_prompts(
            tokenizer, prompts, cfg.use_chat_template, cfg.max_prompt_tokens
        )
        self.cursor = DataCursor(size=len(self.prompt_ids), seed=cfg.seed)
        self.sampler = SamplingCopy(policy_lm, cfg.device, cfg.autocast)
        self.sampled = 0  # batches sampled by this process (0: no update happened here)

    def sample(self, num_prompts: int, repeat: int = 1) -> tuple[Rollout, torch.Tensor]:
        """``repeat`` continuations (adjacent rows) of each of the next ``num_prompts``
        prompts, and their scores; under torchrun, of this rank's shard of them."""
        cfg, tokenizer = self.cfg, self.tokenizer
        distributed.check_divisible(num_prompts, "prompts per step")
        prompts = distributed.shard(self.cursor.take(num_prompts))
        batch_ids = [self.prompt_ids[i] for i in prompts for _ in range(repeat)]
        rollout = self.sampler.rollout(
            tokenizer, batch_ids, cfg.max_new_tokens, cfg.temperature, distributed.sampling_shard()
        )
        self.sampled += 1
        queries = decode_queries(tokenizer, rollout)
        responses = decode_responses(tokenizer, rollout)
        scores = score(self.reward_fn, queries, responses, cfg.score_full_text)
        return rollout, scores.to(cfg.device) * cfg.score_scale

    def reference_logprobs(self, rollout: Rollout) -> torch.Tensor:
        """Per-token log-probs of the responses under the frozen reference.

        Same attention kernel as the policy's training forward: at step 0 the KL is then
        exactly 0, not the eager-vs-SDPA rounding difference (~0.02-0.05 nats).
        """
        cfg = self.cfg
        with attention_kernel(self.ref, cfg.attn_implementation, cfg.device):
            return rollout_logprobs(self.ref, rollout, cfg.autocast, cfg.temperature)

    def state_dict(self) -> dict[str, int]:
        return self.cursor.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.cursor.load_state_dict(state)


def policy_logprobs(
    cfg: RLConfig, model: Any, rollout: Rollout, idx: torch.Tensor, with_values: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Policy log-probs (and, for a model with a value head, values) for rows ``idx``."""
    lm = model.lm if with_values else model
    with training_forward(lm, cfg):
        logits, values = forward_response(
            model,
            rollout.input_ids[idx],
            rollout.attention_mask[idx],
            rollout.response.shape[1],
            with_values=with_values,
        )
    logp = response_logprobs(logits, rollout.response[idx], cfg.temperature)
    return logp, values.float() if values is not None else None


def final_budget_check(
    cfg: RLConfig,
    episodes: Episodes,
    kl_control: KLControl,
    model: Any,
    num_prompts: int,
    repeat: int = 1,
) -> tuple[float | None, bool]:
    """Keep weights that are within the KL budget at the end of training.

    The budget is checked on samples of the current weights before each update, so
    the last update's weights are never measured: a run could end past its budget.
    Sample one more batch from them; past the budget, go back to the last weights the
    budget accepted. Returns (that batch's KL, whether the weights were restored);
    (None, False) without a budget, or when the run already stopped on it (its weights
    are the restored ones)."""
    if kl_control.budget.budget is None or kl_control.stopped or not episodes.sampled:
        return None, False
    lm = getattr(model, "lm", model)
    device = torch.device(cfg.device)
    # A measurement: whatever runs after training draws the random numbers it would have
    # drawn without it.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        rollout, _ = episodes.sample(num_prompts, repeat)
    with torch.no_grad(), attention_kernel(lm, cfg.attn_implementation, cfg.device):
        logp = rollout_logprobs(lm, rollout, cfg.autocast, cfg.temperature)
    ref_logp = episodes.reference_logprobs(rollout)
    kl = distributed.all_reduce_mean(((logp - ref_logp) * rollout.response_mask).sum(1).mean())
    kl = kl.item()
    restored = kl_control.budget.exceeded(kl, model)
    return kl, restored


def finish_rl_run(
    run: TrainingRun,
    model: Any,
    tokenizer: Any,
    kl_control: KLControl,
    episodes: Episodes,
    num_prompts: int,
    repeat: int = 1,
) -> RLResult:
    """Keep weights within the KL budget (`final_budget_check`), save the final model
    (with an output_dir) and report the run."""
    final_check = final_budget_check(episodes.cfg, episodes, kl_control, model, num_prompts, repeat)
    final_dir = run.finish(model, tokenizer)
    return RLResult(
        steps=run.step,
        history=run.history,
        final_dir=final_dir,
        stopped_on_budget=kl_control.stopped,
        kl_coef=kl_control.beta,
        budget_overshoots=kl_control.overshoots,
        final_kl=final_check[0],
        restored_at_end=final_check[1],
    )
