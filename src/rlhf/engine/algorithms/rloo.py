"""RLOO and GRPO: critic-free policy gradients with a group of samples per prompt.

One step, for ``num_prompts`` prompts with ``k`` samples each (``num_prompts * k``
episodes):

  1. sample k continuations per prompt; score each with ``reward_fn``;
  2. per-token KL estimate against the frozen reference, k_t = log pi - log ref;
  3. advantages, per group of k samples of one prompt:
       RLOO (Ahmadian et al. 2024): r_i = score_i - beta * sum_t k_t   (KL in the reward)
                                    A_i = r_i - mean_{j != i} r_j      (leave-one-out baseline)
       GRPO (Shao et al. 2024):     A_i = (score_i - mean_j score_j) / (std_j score_j + eps)
                                    loss += beta mean_t[exp(-d_t) + d_t - 1], d_t = log pi - log ref
                                    (the non-negative "k3" KL estimator, in the loss)
  4. token-level clipped surrogate  L = -mean_t min(A ratio_t, A clip(ratio_t, 1 +- eps));
  5. adaptive beta toward ``kl_target`` and an early stop at ``kl_budget`` (as in PPO).

With ``epochs == 1`` the log-probs that the KL and the ratio need come from the same
forward pass as the gradient (ratio == 1), so a step costs one generation, one
reference forward and one policy forward/backward: no critic, no second pass.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from rlhf.engine.algorithms.rollout import (
    AdaptiveKLController,
    DataCursor,
    KLBudget,
    MetricsLogger,
    RewardFn,
    Rollout,
    SamplingCopy,
    adamw,
    attention_kernel,
    autocast,
    clip_grad,
    decode_queries,
    decode_responses,
    encode_prompts,
    forward_response,
    masked_mean,
    response_logprobs,
    rollout_logprobs,
    score,
)
from rlhf.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


@dataclass
class RLOOConfig:
    """RLOO/GRPO hyper-parameters; defaults: 8 prompts x 4 samples, 32 tokens."""

    estimator: Literal["rloo", "grpo"] = "rloo"
    """Advantage estimator: leave-one-out (KL in reward) or group-normalised (KL in loss)."""
    total_steps: int = 100
    num_prompts: int = 8
    """Prompts per step."""
    k: int = 4
    """Samples per prompt (>= 2)."""
    epochs: int = 1
    """Passes over each batch (1 = on-policy REINFORCE with one forward)."""
    mini_batch_size: int | None = None
    """Episodes per gradient step when epochs > 1 (None = whole batch)."""
    max_new_tokens: int = 32
    max_prompt_tokens: int = 64
    temperature: float = 1.0
    learning_rate: float = 1e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    cliprange: float = 0.2
    init_kl_coef: float = 0.05
    """Initial beta."""
    kl_target: float | None = 4.0
    """Adaptive KL target, nats per sequence; None keeps beta fixed."""
    kl_horizon: float = 64.0
    """Adaptive KL horizon in episodes."""
    kl_budget: float | None = None
    """Stop when the mean KL (nats/seq) exceeds this (as in PPOConfig)."""
    kl_budget_smoothing: float = 1.0
    """Weight of the newest batch in the KL average the budget checks (as in PPOConfig)."""
    restore_on_budget: bool = True
    kl_budget_retries: int = 0
    """Budget overshoots survived before stopping (as in PPOConfig)."""
    kl_overshoot_factor: float = 2.0
    """Beta's multiplier at a survived overshoot."""
    min_kl_coef: float = 0.0
    """Floor for the adaptive beta (as in PPOConfig)."""
    score_scale: float = 1.0
    score_full_text: bool = True
    use_chat_template: bool = False
    seed: int = 0
    device: str = "cpu"
    autocast: bool = True
    attn_implementation: str | None = "auto"
    """Attention kernel for the policy's training forward/backward: "auto" = eager on
    CPU (faster backward at these lengths), the model's own on CUDA; None = as loaded."""
    output_dir: str | None = None
    checkpoint_every: int = 0
    resume: bool = True
    time_limit_s: float | None = None
    progress: bool = True


@dataclass
class RLOOResult:
    steps: int
    stopped_on_budget: bool
    kl_coef: float
    budget_overshoots: int
    history: list[dict[str, float]]
    final_dir: str | None


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """A_i = r_i - mean of the other k-1 rewards of the same prompt ([P*k] -> [P*k])."""
    grouped = rewards.view(-1, k)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).flatten()


def grpo_advantages(scores: torch.Tensor, k: int, eps: float = 1e-4) -> torch.Tensor:
    """A_i = (s_i - mean) / (std + eps) within each prompt's group."""
    grouped = scores.view(-1, k)
    return (
        (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + eps)
    ).flatten()


def _logprobs(model: Any, rollout: Rollout, idx: torch.Tensor, cfg: RLOOConfig) -> torch.Tensor:
    with (
        attention_kernel(model, cfg.attn_implementation, cfg.device),
        autocast(cfg.device, cfg.autocast),
    ):
        logits, _ = forward_response(
            model, rollout.input_ids[idx], rollout.attention_mask[idx], rollout.response.shape[1]
        )
    return response_logprobs(logits, rollout.response[idx], cfg.temperature)


def train_rloo(
    config: RLOOConfig,
    policy: Any,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: Sequence[str],
    ref_model: Any | None = None,
) -> RLOOResult:
    """Train the causal LM ``policy`` in place with RLOO or GRPO."""
    cfg = config
    if cfg.k < 2:
        raise ValueError("k: need at least 2 samples per prompt for a group baseline")
    if cfg.estimator not in ("rloo", "grpo"):
        raise ValueError(f"estimator: expected 'rloo' or 'grpo', got {cfg.estimator!r}")
    if not prompts:
        raise ValueError("prompts: empty prompt list")
    n = cfg.num_prompts * cfg.k
    mb = cfg.mini_batch_size or n
    if n % mb != 0:
        raise ValueError("mini_batch_size must divide num_prompts * k")
    torch.manual_seed(cfg.seed)
    policy.to(cfg.device).train()
    ref = ref_model if ref_model is not None else copy.deepcopy(policy)
    ref.to(cfg.device).eval().requires_grad_(False)
    prompt_ids = encode_prompts(tokenizer, prompts, cfg.use_chat_template, cfg.max_prompt_tokens)

    optimizer = adamw(
        policy.parameters(), cfg.device, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    )
    kl_ctl = AdaptiveKLController(
        cfg.init_kl_coef, cfg.kl_target, cfg.kl_horizon, cfg.min_kl_coef, cfg.kl_overshoot_factor
    )
    budget = KLBudget(cfg.kl_budget, cfg.kl_budget_smoothing, cfg.restore_on_budget)
    cursor = DataCursor(size=len(prompt_ids), seed=cfg.seed)
    history: list[dict[str, float]] = []

    start_step = 0
    out_dir = Path(cfg.output_dir) if cfg.output_dir else None
    if out_dir and cfg.resume and (ckpt := latest_checkpoint(out_dir)) is not None:
        restored = load_checkpoint(
            ckpt, {"policy": policy}, {"opt": optimizer}, {"sched": scheduler}
        )
        start_step = restored["step"]
        kl_ctl.load_state_dict(restored["state"]["kl_ctl"])
        budget.load_state_dict(restored["state"].get("kl_budget", {}))
        cursor.load_state_dict(restored["state"]["cursor"])
        history = restored["state"]["history"]
    metrics_log = MetricsLogger(out_dir / "metrics.jsonl" if out_dir else None, start_step)

    def checkpoint(step: int) -> None:
        if out_dir is None:
            return
        state = {
            "kl_ctl": kl_ctl.state_dict(),
            "kl_budget": budget.state_dict(),
            "cursor": cursor.state_dict(),
            "history": history,
        }
        save_checkpoint(
            out_dir, step, {"policy": policy}, {"opt": optimizer}, {"sched": scheduler}, state
        )

    sampler = SamplingCopy(policy, cfg.device, cfg.autocast)
    single_pass = cfg.epochs == 1 and mb == n
    stopped_on_budget = False
    t_start = time.perf_counter()
    step = start_step
    bar = tqdm(
        total=cfg.total_steps, initial=start_step, disable=not cfg.progress, desc=cfg.estimator
    )
    while step < cfg.total_steps:
        if cfg.time_limit_s is not None and time.perf_counter() - t_start > cfg.time_limit_s:
            break
        t0 = time.perf_counter()
        # 1. k samples per prompt (each prompt repeated k times, adjacent)
        batch_ids = [prompt_ids[i] for i in cursor.take(cfg.num_prompts) for _ in range(cfg.k)]
        rollout = sampler.rollout(tokenizer, batch_ids, cfg.max_new_tokens, cfg.temperature)
        mask = rollout.response_mask.float()
        responses = decode_responses(tokenizer, rollout)
        scores = score(
            reward_fn, decode_queries(tokenizer, rollout), responses, cfg.score_full_text
        )
        scores = scores.to(cfg.device) * cfg.score_scale
        t_gen = time.perf_counter()

        # 2. KL against the reference
        # Same attention kernel as the policy's training forward: at step 0 the KL is
        # then exactly 0, not the eager-vs-SDPA rounding difference (~0.02-0.05 nats).
        with attention_kernel(ref, cfg.attn_implementation, cfg.device):
            ref_logp = rollout_logprobs(ref, rollout, cfg.autocast, cfg.temperature)
        t_ref = time.perf_counter()
        all_idx = torch.arange(n, device=rollout.query.device)
        if single_pass:
            logp_grad = _logprobs(policy, rollout, all_idx, cfg)
            old_logp = logp_grad.detach() * mask
        else:
            with torch.no_grad():
                old_logp = _logprobs(policy, rollout, all_idx, cfg) * mask
        kl = (old_logp - ref_logp) * mask
        kl_seq = kl.sum(1)
        kl_per_seq = kl_seq.mean().item()
        if budget.exceeded(kl_per_seq, policy):
            if kl_ctl.overshoots < cfg.kl_budget_retries:
                kl_ctl.budget_overshoot()  # back to good weights, firmer beta, go on
                continue
            stopped_on_budget = True
            break

        # 3. advantages
        beta = kl_ctl.value
        if cfg.estimator == "rloo":
            advantages = rloo_advantages(scores - beta * kl_seq, cfg.k)
        else:
            advantages = grpo_advantages(scores, cfg.k)
        advantages = advantages.detach()

        # 4. clipped token-level surrogate (+ k3 KL for GRPO)
        losses, clipfracs = [], []
        for _epoch in range(cfg.epochs):
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
            order = torch.randperm(n, generator=gen).to(all_idx.device)
            for start in range(0, n, mb):
                idx = all_idx if single_pass else order[start : start + mb]
                logp = logp_grad if single_pass else _logprobs(policy, rollout, idx, cfg)
                m, adv = mask[idx], advantages[idx].unsqueeze(1)
                ratio = torch.exp(logp - old_logp[idx])
                surrogate = torch.min(
                    adv * ratio, adv * ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange)
                )
                loss = -masked_mean(surrogate, m)
                if cfg.estimator == "grpo":
                    d = logp - ref_logp[idx]
                    loss = loss + beta * masked_mean(torch.exp(-d) + d - 1.0, m)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip_grad(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
                losses.append(loss.item())
                clipfracs.append(masked_mean(((ratio - 1).abs() > cfg.cliprange).float(), m).item())
        scheduler.step()
        kl_ctl.update(kl_per_seq, n)
        step += 1
        t_end = time.perf_counter()
        row = {
            "score": scores.mean().item(),
            "kl_per_sequence": kl_per_seq,
            "kl_coef": beta,
            "loss": sum(losses) / len(losses),
            "clipfrac": sum(clipfracs) / len(clipfracs),
            "response_tokens": mask.sum(1).mean().item(),
            "lr": scheduler.get_last_lr()[0],
            "time_generate_s": t_gen - t0,
            "time_reference_s": t_ref - t_gen,
            "time_update_s": t_end - t_ref,
            "time_step_s": t_end - t0,
        }
        history.append(row)
        metrics_log.log(step, row)
        bar.update(1)
        bar.set_postfix(score=f"{row['score']:.3f}", kl=f"{kl_per_seq:.2f}", beta=f"{beta:.3f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.total_steps:
            checkpoint(step)
    bar.close()

    final_dir = None
    if out_dir is not None:
        checkpoint(step)
        final = out_dir / "final"
        policy.save_pretrained(final)
        tokenizer.save_pretrained(final)
        (final / f"{cfg.estimator}_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        final_dir = str(final)
    return RLOOResult(
        steps=step,
        stopped_on_budget=stopped_on_budget,
        budget_overshoots=kl_ctl.overshoots,
        kl_coef=kl_ctl.value,
        history=history,
        final_dir=final_dir,
    )
