"""Promotion and retraining decisions, written once for every service.

- `evaluate_gates`: which of a spec's enabled gates a candidate's metrics pass;
- `failed_gates`: one line naming each failed gate with the numbers it read;
- `retrain_plan`: what a retraining round re-runs, and which service starts it (the
  reward service first when the round retrains a classifier or reward model; its
  `reward.model.ready` then starts the policy stage).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf.pipelines import Gates, PipelineSpec

POLICY_KINDS = ("ppo", "rloo", "grpo", "dpo")
REWARD_KINDS = ("classifier", "reward")


def evaluate_gates(gates: Gates, metrics: dict[str, float]) -> dict[str, bool]:
    """Each enabled gate whose inputs exist -> passed? A candidate is promoted only when
    every returned gate passed."""
    tol = gates.tolerance
    results: dict[str, bool] = {}
    if gates.reward_up and {"reward_before", "reward_after"} <= metrics.keys():
        results["reward_up"] = metrics["reward_after"] > metrics["reward_before"]
    if gates.kl_budget is not None and "kl_per_sequence" in metrics:
        results["kl_within_budget"] = metrics["kl_per_sequence"] <= gates.kl_budget
    judge = {"judge_positive_rate_before", "judge_positive_rate_after"}
    if gates.judge_not_worse and judge <= metrics.keys():
        results["judge_not_worse"] = (
            metrics["judge_positive_rate_after"] >= metrics["judge_positive_rate_before"] - tol
        )
    robust = {"robust_accuracy_before", "robust_accuracy_after"}
    if gates.robustness_not_worse and robust <= metrics.keys():
        results["robustness_not_worse"] = (
            metrics["robust_accuracy_after"] >= metrics["robust_accuracy_before"] - tol
        )
    accuracy = {"classifier_accuracy", "classifier_accuracy_baseline"}
    if gates.accuracy_not_worse and accuracy <= metrics.keys():
        results["accuracy_not_worse"] = (
            metrics["classifier_accuracy"] >= metrics["classifier_accuracy_baseline"] - tol
        )
    # What a user would read: fluent (the reference does not find it much less likely
    # than its own text), diverse, not looping, not empty.
    bounds = {
        "max_ref_perplexity_ratio": ("ref_perplexity_ratio", "fluency", max),
        "min_distinct_2": ("distinct_2", "distinct_2", min),
        "max_repetition_rate": ("repetition_rate", "repetition", max),
        "max_empty_rate": ("empty_rate", "empty_answers", max),
    }
    for field_name, (metric, gate, kind) in bounds.items():
        limit = getattr(gates, field_name)
        if limit is not None and metric in metrics:
            value = metrics[metric]
            results[gate] = value <= limit if kind is max else value >= limit
    hacking = {"reward_hacking_rate_before", "reward_hacking_rate_after"}
    if gates.max_reward_hacking_increase is not None and hacking <= metrics.keys():
        rise = metrics["reward_hacking_rate_after"] - metrics["reward_hacking_rate_before"]
        results["reward_hacking"] = rise <= gates.max_reward_hacking_increase
    pairwise = {"pairwise_accuracy_before", "pairwise_accuracy_after"}
    if gates.pairwise_not_worse and pairwise <= metrics.keys():
        results["pairwise_not_worse"] = (
            metrics["pairwise_accuracy_after"] >= metrics["pairwise_accuracy_before"] - tol
        )
    if gates.min_win_rate is not None and "win_rate" in metrics:
        results["win_rate"] = metrics["win_rate"] >= gates.min_win_rate - tol
    # A compress stage records its own bound (the stage's, else gates.max_quality_drop).
    bound = metrics.get("max_quality_drop", gates.max_quality_drop)
    if bound is not None and "quality_drop" in metrics:
        results["compression_quality"] = metrics["quality_drop"] <= bound
    return results


#: The lineage metrics each gate reads (what a report or a page shows beside it).
GATE_INPUTS: dict[str, tuple[str, ...]] = {
    "reward_up": ("reward_before", "reward_after"),
    "kl_within_budget": ("kl_per_sequence",),
    "judge_not_worse": ("judge_positive_rate_before", "judge_positive_rate_after"),
    "robustness_not_worse": ("robust_accuracy_before", "robust_accuracy_after"),
    "accuracy_not_worse": ("classifier_accuracy_baseline", "classifier_accuracy"),
    "fluency": ("ref_perplexity_ratio",),
    "distinct_2": ("distinct_2",),
    "repetition": ("repetition_rate",),
    "empty_answers": ("empty_rate",),
    "reward_hacking": ("reward_hacking_rate_before", "reward_hacking_rate_after"),
    "pairwise_not_worse": ("pairwise_accuracy_before", "pairwise_accuracy_after"),
    "win_rate": ("win_rate",),
    "compression_quality": ("quality_before", "quality_after", "quality_drop", "max_quality_drop"),
}


def failed_gates(gates: dict[str, bool], metrics: dict[str, float]) -> str:
    """One line naming each failed gate with the numbers it read."""
    parts = []
    for gate in sorted(k for k, ok in gates.items() if not ok):
        numbers = ", ".join(
            f"{key}={metrics[key]:.4g}" for key in GATE_INPUTS.get(gate, ()) if key in metrics
        )
        parts.append(f"{gate} ({numbers})" if numbers else gate)
    return "; ".join(parts)


@dataclass(frozen=True)
class RetrainPlan:
    """What one retraining round of a pipeline does."""

    reward_kind: str | None  # "classifier" / "reward" when the round retrains one
    policy: bool  # whether a policy stage re-runs

    @property
    def reward_first(self) -> bool:
        """The reward service retrains first; the trainer waits for its model."""
        return self.reward_kind is not None


def retrain_plan(spec: PipelineSpec) -> RetrainPlan:
    kinds = {spec.stage(name).kind for name in spec.retrain.stages}
    reward_kind = next((k for k in REWARD_KINDS if k in kinds), None)
    return RetrainPlan(reward_kind, any(k in POLICY_KINDS for k in kinds))
