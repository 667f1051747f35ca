"""PPO for language models (Ziegler et al. 2019; Stiennon et al. 2020), CleanRL style.

One step:
  1. sample a continuation for each of ``batch_size`` prompts from the policy;
  2. score prompt+continuation with ``reward_fn`` (any ``list[str] -> tensor``);
  3. per-token log-probs under the policy (old) and the frozen reference model;
     per-token KL estimate  k_t = log pi(y_t) - log ref(y_t);
  4. per-token reward  r_t = -beta * k_t,  plus the score on the last generated token;
  5. GAE over the response tokens with the value head's estimates V_t:
       delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lambda A_{t+1};
     returns R_t = A_t + V_t; advantages whitened over the batch;
  6. ``ppo_epochs`` passes over mini-batches of the clipped losses
       L_pi = E[max(-A ratio, -A clip(ratio, 1-eps, 1+eps))],  ratio = pi / pi_old,
       L_V  = 0.5 E[max((V - R)^2, (clip(V, V_old +- eps_v) - R)^2)];
  7. the adaptive KL controller moves beta toward ``kl_target`` nats per sequence;
  8. when KL (one batch's, or a moving average) exceeds ``kl_budget`` the policy goes
     back to the last weights whose samples were within budget (by default); training
     then stops, or, up to ``kl_budget_retries`` times, raises beta and goes on.

With ``ppo_epochs == 1`` and one mini-batch the "old" policy is the current one, so
the old log-probs/values come from the same forward pass as the loss (ratio == 1,
the gradient is unchanged): one policy forward per step instead of two.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    masked_whiten,
    response_logprobs,
    rollout_logprobs,
    score,
)
from rlhf.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from rlhf.engine.models import CausalLMWithValueHead


@dataclass
class PPOConfig:
    """PPO hyper-parameters; defaults suit SmolLM2-135M on a small CPU."""

    total_steps: int = 100
    """Number of PPO steps (rollout batch + update)."""
    batch_size: int = 32
    """Prompts (= episodes) per step."""
    mini_batch_size: int = 32
    """Episodes per gradient step inside an update."""
    ppo_epochs: int = 1
    """Passes over each rollout batch."""
    max_new_tokens: int = 32
    """Generated tokens per episode."""
    max_prompt_tokens: int = 64
    """Prompts are left-truncated to this many tokens."""
    temperature: float = 1.0
    """Sampling temperature (log-probs use the same temperature)."""
    learning_rate: float = 1e-5
    warmup_steps: int = 0
    """Linear learning-rate warm-up, in steps."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gamma: float = 1.0
    """Discount over generated tokens."""
    lam: float = 0.95
    """GAE lambda. With a value head trained from scratch prefer 1.0 (returns minus the
    value baseline): while the value estimate is still flat, lambda < 1 scales the credit
    of token t by lambda^(T-t), so the first tokens of a 32-token answer learn ~5x slower."""
    cliprange: float = 0.2
    """Policy ratio clip epsilon."""
    cliprange_value: float = 0.2
    """Value prediction clip around the old values."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    init_kl_coef: float = 0.05
    """Initial KL penalty beta."""
    kl_target: float | None = 4.0
    """Adaptive KL target in nats per sequence; None keeps beta fixed."""
    kl_horizon: float = 64.0
    """Adaptive KL horizon in episodes (smaller adapts faster)."""
    kl_budget: float | None = None
    """Stop training when the mean KL (nats/seq) exceeds this (see kl_budget_smoothing)."""
    kl_budget_smoothing: float = 1.0
    """Weight of the newest batch in the moving average of KL that the budget checks
    (1.0 = each batch alone; 0.5 averages over about three batches of noise)."""
    restore_on_budget: bool = True
    """On hitting the budget, restore the last weights that were within it."""
    kl_budget_retries: int = 0
    """Overshoots of the budget survived before stopping: each restores the last good
    weights (with restore_on_budget), multiplies beta by kl_overshoot_factor (at least
    back to init_kl_coef) and goes on."""
    kl_overshoot_factor: float = 2.0
    """Beta's multiplier at a survived overshoot."""
    min_kl_coef: float = 0.0
    """Floor for the adaptive beta, so it still brakes when KL turns upward."""
    score_scale: float = 1.0
    """Multiply the reward function's score by this."""
    score_full_text: bool = True
    """Score prompt+continuation (True) or the continuation alone."""
    use_chat_template: bool = False
    """Wrap each prompt as a user turn with the tokenizer's chat template."""
    seed: int = 0
    device: str = "cpu"
    autocast: bool = True
    """bf16 autocast on CPU (ignored on CUDA)."""
    attn_implementation: str | None = "auto"
    """Attention kernel for the policy's training forward/backward: "auto" = eager on
    CPU (faster backward at these lengths), the model's own on CUDA; None = as loaded."""
    output_dir: str | None = None
    """Run directory: metrics.jsonl, checkpoints/, final/ (None = keep nothing)."""
    checkpoint_every: int = 0
    """Save a checkpoint every N steps (0 = only at the end)."""
    resume: bool = True
    """Resume from output_dir's latest checkpoint when there is one."""
    time_limit_s: float | None = None
    """Stop after this many seconds of training (checked between steps)."""
    progress: bool = True


@dataclass
class PPOResult:
    steps: int
    stopped_on_budget: bool
    kl_coef: float
    budget_overshoots: int
    history: list[dict[str, float]]
    final_dir: str | None


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens (masked tail = terminal)."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    values = values * mask
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        last = last * mask[:, t]
        advantages[:, t] = last
    returns = advantages + values
    return advantages, returns


def _forward(model: CausalLMWithValueHead, rollout: Rollout, idx: torch.Tensor, cfg: PPOConfig):
    """Policy log-probs and values for rows ``idx`` of a rollout."""
    input_ids = rollout.input_ids[idx]
    attention_mask = rollout.attention_mask[idx]
    with (
        attention_kernel(model.lm, cfg.attn_implementation, cfg.device),
        autocast(cfg.device, cfg.autocast),
    ):
        logits, values = forward_response(
            model, input_ids, attention_mask, rollout.response.shape[1], with_values=True
        )
    logp = response_logprobs(logits, rollout.response[idx], cfg.temperature)
    return logp, values.float()


def train_ppo(
    config: PPOConfig,
    policy: CausalLMWithValueHead | Any,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: Sequence[str],
    ref_model: Any | None = None,
) -> PPOResult:
    """Train ``policy`` in place with PPO; return the per-step history.

    ``policy`` may be a plain causal LM (a fresh value head is added) or a
    ``CausalLMWithValueHead``. ``ref_model`` defaults to a frozen copy of the policy.
    """
    cfg = config
    if not prompts:
        raise ValueError("prompts: empty prompt list")
    if cfg.batch_size % cfg.mini_batch_size != 0:
        raise ValueError("mini_batch_size must divide batch_size")
    torch.manual_seed(cfg.seed)
    model = policy if isinstance(policy, CausalLMWithValueHead) else CausalLMWithValueHead(policy)
    model.to(cfg.device).train()
    ref = ref_model if ref_model is not None else copy.deepcopy(model.lm)
    ref.to(cfg.device).eval().requires_grad_(False)
    prompt_ids = encode_prompts(tokenizer, prompts, cfg.use_chat_template, cfg.max_prompt_tokens)

    optimizer = adamw(
        model.parameters(), cfg.device, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
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
            ckpt, {"policy": model}, {"opt": optimizer}, {"sched": scheduler}
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
            out_dir, step, {"policy": model}, {"opt": optimizer}, {"sched": scheduler}, state
        )

    sampler = SamplingCopy(model.lm, cfg.device, cfg.autocast)
    single_pass = cfg.ppo_epochs == 1 and cfg.mini_batch_size == cfg.batch_size
    stopped_on_budget = False
    t_start = time.perf_counter()
    step = start_step
    bar = tqdm(total=cfg.total_steps, initial=start_step, disable=not cfg.progress, desc="ppo")
    while step < cfg.total_steps:
        if cfg.time_limit_s is not None and time.perf_counter() - t_start > cfg.time_limit_s:
            break
        t0 = time.perf_counter()
        # 1-2. rollouts and scores
        batch_ids = [prompt_ids[i] for i in cursor.take(cfg.batch_size)]
        rollout = sampler.rollout(tokenizer, batch_ids, cfg.max_new_tokens, cfg.temperature)
        mask = rollout.response_mask.float()
        responses = decode_responses(tokenizer, rollout)
        scores = score(
            reward_fn, decode_queries(tokenizer, rollout), responses, cfg.score_full_text
        )
        scores = scores.to(cfg.device) * cfg.score_scale
        t_gen = time.perf_counter()

        # 3. reference log-probs (and old policy stats unless fused with the update)
        # Same attention kernel as the policy's training forward: at step 0 the KL is
        # then exactly 0, not the eager-vs-SDPA rounding difference (~0.02-0.05 nats).
        with attention_kernel(ref, cfg.attn_implementation, cfg.device):
            ref_logp = rollout_logprobs(ref, rollout, cfg.autocast, cfg.temperature)
        all_idx = torch.arange(cfg.batch_size, device=rollout.query.device)
        if single_pass:
            logp_grad, values_grad = _forward(model, rollout, all_idx, cfg)
            old_logp, old_values = logp_grad.detach() * mask, values_grad.detach() * mask
        else:
            with torch.no_grad():
                old_logp, old_values = _forward(model, rollout, all_idx, cfg)
            old_logp, old_values = old_logp * mask, old_values * mask
        kl = (old_logp - ref_logp) * mask
        kl_per_seq = kl.sum(1).mean().item()

        # 8. budget check: these samples came from the current weights
        if budget.exceeded(kl_per_seq, model):
            if kl_ctl.overshoots < cfg.kl_budget_retries:
                kl_ctl.budget_overshoot()  # back to good weights, firmer beta, go on
                continue
            stopped_on_budget = True
            break

        # 4. per-token rewards: KL penalty everywhere, score on the last real token
        rewards = -kl_ctl.value * kl
        last = (mask.sum(1).long() - 1).clamp(min=0)
        rewards[torch.arange(cfg.batch_size), last] += scores
        # 5. GAE
        advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, mask).detach()
        returns = returns.detach()

        # 6. clipped policy and value losses
        stats: dict[str, list[float]] = {
            "pg_loss": [],
            "vf_loss": [],
            "clipfrac": [],
            "approx_kl": [],
        }
        for _epoch in range(cfg.ppo_epochs):
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
            order = torch.randperm(cfg.batch_size, generator=gen).to(all_idx.device)
            for start in range(0, cfg.batch_size, cfg.mini_batch_size):
                idx = all_idx if single_pass else order[start : start + cfg.mini_batch_size]
                if single_pass:
                    logp, vpred = logp_grad, values_grad
                else:
                    logp, vpred = _forward(model, rollout, idx, cfg)
                m, adv, ret = mask[idx], advantages[idx], returns[idx]
                ratio = torch.exp(logp - old_logp[idx])
                pg_losses = -adv * ratio
                pg_losses2 = -adv * ratio.clamp(1.0 - cfg.cliprange, 1.0 + cfg.cliprange)
                pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), m)
                v_old = old_values[idx]
                vpred_clipped = v_old + (vpred - v_old).clamp(
                    -cfg.cliprange_value, cfg.cliprange_value
                )
                vf_loss = 0.5 * masked_mean(
                    torch.max((vpred - ret) ** 2, (vpred_clipped - ret) ** 2), m
                )
                loss = pg_loss + cfg.vf_coef * vf_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip_grad(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    stats["pg_loss"].append(pg_loss.item())
                    stats["vf_loss"].append(vf_loss.item())
                    clipped = (pg_losses2 > pg_losses).float()
                    stats["clipfrac"].append(masked_mean(clipped, m).item())
                    stats["approx_kl"].append(
                        masked_mean(0.5 * (logp - old_logp[idx]) ** 2, m).item()
                    )
        scheduler.step()

        # 7. adaptive KL
        kl_coef_used = kl_ctl.value
        kl_ctl.update(kl_per_seq, cfg.batch_size)
        step += 1
        row = {
            "score": scores.mean().item(),
            "kl_per_sequence": kl_per_seq,
            "kl_coef": kl_coef_used,
            "non_score_reward": (-kl_coef_used * kl.sum(1)).mean().item(),
            "response_tokens": mask.sum(1).mean().item(),
            "lr": scheduler.get_last_lr()[0],
            "time_rollout_s": t_gen - t0,
            "time_step_s": time.perf_counter() - t0,
            **{k: sum(v) / len(v) for k, v in stats.items()},
        }
        history.append(row)
        metrics_log.log(step, row)
        bar.update(1)
        bar.set_postfix(
            score=f"{row['score']:.3f}", kl=f"{kl_per_seq:.2f}", beta=f"{kl_coef_used:.3f}"
        )
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.total_steps:
            checkpoint(step)
    bar.close()

    final_dir = None
    if out_dir is not None:
        checkpoint(step)
        final = out_dir / "final"
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        (final / "ppo_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        final_dir = str(final)
    return PPOResult(
        steps=step,
        stopped_on_budget=stopped_on_budget,
        budget_overshoots=kl_ctl.overshoots,
        kl_coef=kl_ctl.value,
        history=history,
        final_dir=final_dir,
    )
