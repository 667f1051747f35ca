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

Under torchrun each rank holds ``batch_size / world`` episodes; the losses are its
shares of the global masked means and the gradients are summed, so with one
mini-batch an update equals one process's. With several mini-batches each rank
shuffles its own shard (as DDP does), which differs from one process's shuffle.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.engine import distributed
from rlhf.engine.algorithms.kl_control import KLControl
from rlhf.engine.algorithms.rl import Episodes, RLConfig, RLResult, finish_rl_run, policy_logprobs
from rlhf.engine.algorithms.rollout import RewardFn, masked_whiten
from rlhf.engine.distributed import masked_mean_share
from rlhf.engine.models import CausalLMWithValueHead
from rlhf.engine.training import TrainingRun, clip_grad, optimizer_and_schedule


@dataclass
class PPOConfig(RLConfig):
    """PPO hyper-parameters (plus RLConfig's); defaults suit SmolLM2-135M on a small CPU."""

    batch_size: int = 32
    """Prompts (= episodes) per step."""
    mini_batch_size: int | None = None
    """Episodes per gradient step inside an update (None = the whole batch)."""
    ppo_epochs: int = 1
    """Passes over each rollout batch."""
    gamma: float = 1.0
    """Discount over generated tokens."""
    lam: float = 0.95
    """GAE lambda. With a value head trained from scratch prefer 1.0 (returns minus the
    value baseline): while the value estimate is still flat, lambda < 1 scales the credit
    of token t by lambda^(T-t), so the first tokens of a 32-token answer learn ~5x slower."""
    cliprange_value: float = 0.2
    """Value prediction clip around the old values."""
    vf_coef: float = 0.1
    """Weight of the value loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size % (self.mini_batch_size or self.batch_size) != 0:
            raise ValueError("mini_batch_size must divide batch_size")


PPOResult = RLResult


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


def train_ppo(
    config: PPOConfig,
    policy: CausalLMWithValueHead | Any,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: Sequence[str],
    ref_model: Any | None = None,
) -> RLResult:
    """Train ``policy`` in place with PPO; return the per-step history.

    ``policy`` may be a plain causal LM (a fresh value head is added) or a
    ``CausalLMWithValueHead``. ``ref_model`` defaults to a frozen copy of the policy.
    """
    cfg = config
    torch.manual_seed(cfg.seed)
    model = policy if isinstance(policy, CausalLMWithValueHead) else CausalLMWithValueHead(policy)
    model.to(cfg.device).train()
    episodes = Episodes(cfg, model.lm, ref_model, tokenizer, prompts, reward_fn)
    optimizer, scheduler = optimizer_and_schedule(cfg, model.parameters(), cfg.total_steps)
    kl_control = KLControl(cfg)
    checkpointed = {"cursor": episodes, **kl_control.checkpoint_state()}
    run = TrainingRun(
        cfg, "ppo", cfg.total_steps, {"policy": model}, optimizer, scheduler, checkpointed
    )

    mb = cfg.mini_batch_size or cfg.batch_size
    single_pass = cfg.ppo_epochs == 1 and mb == cfg.batch_size
    distributed.check_divisible(mb, "mini_batch_size")
    n, mb = cfg.batch_size // distributed.world_size(), mb // distributed.world_size()
    while run.running() and not kl_control.stopped:
        t0 = time.perf_counter()
        # 1-2. rollouts and scores
        rollout, scores = episodes.sample(cfg.batch_size)
        mask = rollout.response_mask.float()
        t_gen = time.perf_counter()

        # 3. reference log-probs (and old policy stats unless fused with the update)
        ref_logp = episodes.reference_logprobs(rollout)
        all_idx = torch.arange(n, device=rollout.query.device)
        if single_pass:
            logp_grad, values_grad = policy_logprobs(cfg, model, rollout, all_idx, with_values=True)
            old_logp, old_values = logp_grad.detach() * mask, values_grad.detach() * mask
        else:
            with torch.no_grad():
                old_logp, old_values = policy_logprobs(
                    cfg, model, rollout, all_idx, with_values=True
                )
            old_logp, old_values = old_logp * mask, old_values * mask
        kl = (old_logp - ref_logp) * mask
        kl_per_seq = distributed.all_reduce_mean(kl.sum(1).mean()).item()

        # 8. budget check: these samples came from the current weights
        if not kl_control.within_budget(kl_per_seq, model):
            continue  # back to good weights: a firmer beta, or the end of training

        # 4. per-token rewards: KL penalty everywhere, score on the last real token
        beta = kl_control.beta
        rewards = -beta * kl
        last = (mask.sum(1).long() - 1).clamp(min=0)
        rewards[torch.arange(n), last] += scores
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
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + run.step)
            order = torch.randperm(n, generator=gen).to(all_idx.device)
            for start in range(0, n, mb):
                idx = all_idx if single_pass else order[start : start + mb]
                if single_pass:
                    logp, vpred = logp_grad, values_grad
                else:
                    logp, vpred = policy_logprobs(cfg, model, rollout, idx, with_values=True)
                m, adv, ret = mask[idx], advantages[idx], returns[idx]
                ratio = torch.exp(logp - old_logp[idx])
                pg_losses = -adv * ratio
                pg_losses2 = -adv * ratio.clamp(1.0 - cfg.cliprange, 1.0 + cfg.cliprange)
                pg_loss = masked_mean_share(torch.max(pg_losses, pg_losses2), m)
                v_old = old_values[idx]
                vpred_clipped = v_old + (vpred - v_old).clamp(
                    -cfg.cliprange_value, cfg.cliprange_value
                )
                vf_loss = 0.5 * masked_mean_share(
                    torch.max((vpred - ret) ** 2, (vpred_clipped - ret) ** 2), m
                )
                loss = pg_loss + cfg.vf_coef * vf_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.sum_grads(model.parameters())
                clip_grad(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    stats["pg_loss"].append(pg_loss.item())
                    stats["vf_loss"].append(vf_loss.item())
                    clipped = (pg_losses2 > pg_losses).float()
                    stats["clipfrac"].append(masked_mean_share(clipped, m).item())
                    stats["approx_kl"].append(
                        masked_mean_share(0.5 * (logp - old_logp[idx]) ** 2, m).item()
                    )
        scheduler.step()

        # 7. adaptive KL
        kl_control.update(kl_per_seq, cfg.batch_size)
        means = distributed.all_reduce_means(
            {
                "score": scores.mean().item(),
                "non_score_reward": (-beta * kl.sum(1)).mean().item(),
                "response_tokens": mask.sum(1).mean().item(),
            }
        )
        row = {
            "score": means["score"],
            "kl_per_sequence": kl_per_seq,
            "kl_coef": beta,
            "non_score_reward": means["non_score_reward"],
            "response_tokens": means["response_tokens"],
            "lr": scheduler.get_last_lr()[0],
            "time_rollout_s": t_gen - t0,
            "time_step_s": time.perf_counter() - t0,
            # each rank's shares of the global means add up to them
            **distributed.all_reduce_sums({k: sum(v) / len(v) for k, v in stats.items()}),
        }
        run.end_step(row, score=f"{row['score']:.3f}", kl=f"{kl_per_seq:.2f}", beta=f"{beta:.3f}")

    return finish_rl_run(run, model, tokenizer, kl_control, episodes, cfg.batch_size)
