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

Under torchrun each rank samples the k continuations of ``num_prompts / world`` prompts
(a prompt's group stays on one rank); the losses are its shares of the global masked
means and the gradients are summed (``distributed.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlhf.engine import distributed
from rlhf.engine.algorithms.kl_control import KLControl
from rlhf.engine.algorithms.rl import Episodes, RLConfig, RLResult, finish_rl_run, policy_logprobs
from rlhf.engine.algorithms.rollout import RewardFn
from rlhf.engine.distributed import masked_mean_share
from rlhf.engine.training import TrainingRun, clip_grad, optimizer_and_schedule


@dataclass
class RLOOConfig(RLConfig):
    """RLOO/GRPO hyper-parameters (plus RLConfig's); defaults: 8 prompts x 4 samples."""

    estimator: Literal["rloo", "grpo"] = "rloo"
    """Advantage estimator: leave-one-out (KL in reward) or group-normalised (KL in loss)."""
    num_prompts: int = 8
    """Prompts per step."""
    k: int = 4
    """Samples per prompt (>= 2)."""
    epochs: int = 1
    """Passes over each batch (1 = on-policy REINFORCE with one forward)."""
    mini_batch_size: int | None = None
    """Episodes per gradient step when epochs > 1 (None = whole batch)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 2:
            raise ValueError("k: need at least 2 samples per prompt for a group baseline")
        if self.estimator not in ("rloo", "grpo"):
            raise ValueError(f"estimator: expected 'rloo' or 'grpo', got {self.estimator!r}")
        if (self.num_prompts * self.k) % (self.mini_batch_size or 1) != 0:
            raise ValueError("mini_batch_size must divide num_prompts * k")


RLOOResult = RLResult


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


def train_rloo(
    config: RLOOConfig,
    policy: Any,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: Sequence[str],
    ref_model: Any | None = None,
) -> RLResult:
    """Train the causal LM ``policy`` in place with RLOO or GRPO."""
    cfg = config
    n = cfg.num_prompts * cfg.k
    mb = cfg.mini_batch_size or n
    torch.manual_seed(cfg.seed)
    policy.to(cfg.device).train()
    episodes = Episodes(cfg, policy, ref_model, tokenizer, prompts, reward_fn)
    optimizer, scheduler = optimizer_and_schedule(cfg, policy.parameters(), cfg.total_steps)
    kl_control = KLControl(cfg)
    checkpointed = {"cursor": episodes, **kl_control.checkpoint_state()}
    run = TrainingRun(
        cfg, cfg.estimator, cfg.total_steps, {"policy": policy}, optimizer, scheduler, checkpointed
    )

    single_pass = cfg.epochs == 1 and mb == n
    distributed.check_divisible(mb, "mini_batch_size")
    n, mb = n // distributed.world_size(), mb // distributed.world_size()
    while run.running() and not kl_control.stopped:
        t0 = time.perf_counter()
        # 1. k samples per prompt (each prompt repeated k times, adjacent)
        rollout, scores = episodes.sample(cfg.num_prompts, repeat=cfg.k)
        mask = rollout.response_mask.float()
        t_gen = time.perf_counter()

        # 2. KL against the reference
        ref_logp = episodes.reference_logprobs(rollout)
        t_ref = time.perf_counter()
        all_idx = torch.arange(n, device=rollout.query.device)
        if single_pass:
            logp_grad, _ = policy_logprobs(cfg, policy, rollout, all_idx)
            old_logp = logp_grad.detach() * mask
        else:
            with torch.no_grad():
                old_logp = policy_logprobs(cfg, policy, rollout, all_idx)[0] * mask
        kl = (old_logp - ref_logp) * mask
        kl_seq = kl.sum(1)
        kl_per_seq = distributed.all_reduce_mean(kl_seq.mean()).item()
        if not kl_control.within_budget(kl_per_seq, policy):
            continue  # back to good weights: a firmer beta, or the end of training

        # 3. advantages
        beta = kl_control.beta
        if cfg.estimator == "rloo":
            advantages = rloo_advantages(scores - beta * kl_seq, cfg.k)
        else:
            advantages = grpo_advantages(scores, cfg.k)
        advantages = advantages.detach()

        # 4. clipped token-level surrogate (+ k3 KL for GRPO)
        losses, clipfracs = [], []
        for _epoch in range(cfg.epochs):
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + run.step)
            order = torch.randperm(n, generator=gen).to(all_idx.device)
            for start in range(0, n, mb):
                idx = all_idx if single_pass else order[start : start + mb]
                logp = logp_grad if single_pass else policy_logprobs(cfg, policy, rollout, idx)[0]
                m, adv = mask[idx], advantages[idx].unsqueeze(1)
                ratio = torch.exp(logp - old_logp[idx])
                surrogate = torch.min(
                    adv * ratio, adv * ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange)
                )
                loss = -masked_mean_share(surrogate, m)
                if cfg.estimator == "grpo":
                    d = logp - ref_logp[idx]
                    loss = loss + beta * masked_mean_share(torch.exp(-d) + d - 1.0, m)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.sum_grads(policy.parameters())
                clip_grad(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
                losses.append(loss.item())
                clipfracs.append(
                    masked_mean_share(((ratio - 1).abs() > cfg.cliprange).float(), m).item()
                )
        scheduler.step()
        kl_control.update(kl_per_seq, n * distributed.world_size())
        t_end = time.perf_counter()
        means = distributed.all_reduce_means(
            {"score": scores.mean().item(), "response_tokens": mask.sum(1).mean().item()}
        )
        shares = distributed.all_reduce_sums(
            {"loss": sum(losses) / len(losses), "clipfrac": sum(clipfracs) / len(clipfracs)}
        )
        row = {
            "score": means["score"],
            "kl_per_sequence": kl_per_seq,
            "kl_coef": beta,
            "loss": shares["loss"],
            "clipfrac": shares["clipfrac"],
            "response_tokens": means["response_tokens"],
            "lr": scheduler.get_last_lr()[0],
            "time_generate_s": t_gen - t0,
            "time_reference_s": t_ref - t_gen,
            "time_update_s": t_end - t_ref,
            "time_step_s": t_end - t0,
        }
        run.end_step(row, score=f"{row['score']:.3f}", kl=f"{kl_per_seq:.2f}", beta=f"{beta:.3f}")

    return finish_rl_run(run, policy, tokenizer, kl_control, episodes, cfg.num_prompts, cfg.k)
