"""Robustness metrics over a list of attack results.

Definitions (the usual ones in the TextAttack literature):
- clean accuracy: the model is right on the original text, over all examples;
- attack success rate (ASR): successful attacks over the ORIGINALLY CORRECT examples
  (attacking an example the model already gets wrong proves nothing);
- robust accuracy: right on the original AND not flipped by the attack, over all
  examples (= clean accuracy x (1 - ASR));
- mean edits, min/mean similarity: over the successful attacks only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rlhf.engine.adversarial.base import AdversarialInputError, AttackResult


@dataclass
class RobustnessReport:
    """Aggregate robustness of one model under one attack."""

    examples: int
    clean_accuracy: float
    robust_accuracy: float
    attack_success_rate: float
    successes: int
    attacked: int  # originally-correct examples, the ASR denominator
    mean_edits: float
    max_edits: int
    min_similarity: float
    mean_similarity: float
    mean_queries: float
    budget_exhausted: int  # attacks stopped by the query budget (counted as failures)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def robustness_report(results: Sequence[AttackResult]) -> RobustnessReport:
    """Aggregate metrics; raises on an empty list or an inconsistent result."""
    if not results:
        raise AdversarialInputError("no attack results to aggregate")
    for i, r in enumerate(results):
        if r.success and (r.predicted_before != r.label or r.predicted_after == r.label):
            raise AdversarialInputError(
                f"results[{i}] claims success but the prediction did not move off the true "
                f"label (label {r.label}, before {r.predicted_before}, after {r.predicted_after})"
            )
    n = len(results)
    correct = [r for r in results if r.originally_correct]
    wins = [r for r in correct if r.success]
    return RobustnessReport(
        examples=n,
        clean_accuracy=len(correct) / n,
        robust_accuracy=(len(correct) - len(wins)) / n,
        attack_success_rate=len(wins) / len(correct) if correct else 0.0,
        successes=len(wins),
        attacked=len(correct),
        mean_edits=sum(r.edits for r in wins) / len(wins) if wins else 0.0,
        max_edits=max((r.edits for r in wins), default=0),
        min_similarity=min((r.similarity for r in wins), default=1.0),
        mean_similarity=sum(r.similarity for r in wins) / len(wins) if wins else 1.0,
        mean_queries=sum(r.queries for r in results) / n,
        budget_exhausted=sum(r.status == "budget" for r in results),
    )


def report_to_event(report: RobustnessReport, *, run_id: str, target_version: str, stage: str):
    """The `rlhf.robustness.report` event payload (rlhf.v1.events_pb2.RobustnessReport)."""
    from rlhf.v1 import events_pb2

    return events_pb2.RobustnessReport(
        run_id=run_id,
        stage=stage,
        target_version=target_version,
        clean_accuracy=report.clean_accuracy,
        robust_accuracy=report.robust_accuracy,
        attack_success_rate=report.attack_success_rate,
        mean_edits=report.mean_edits,
        min_similarity=report.min_similarity,
        mean_similarity=report.mean_similarity,
    )


def report_to_proto(
    report: RobustnessReport,
    results: Sequence[AttackResult],
    *,
    run_id: str,
    target_version: str,
    label_names: Sequence[str] | None = None,
    max_examples: int = 100,
):
    """The `GetReport` answer (rlhf.v1.adversary_pb2.AttackReport), successes first."""
    from rlhf.v1 import adversary_pb2

    def name(y: int) -> str:
        return label_names[y] if label_names is not None and 0 <= y < len(label_names) else str(y)

    ordered = sorted(results, key=lambda r: not r.success)[:max_examples]
    return adversary_pb2.AttackReport(
        run_id=run_id,
        target_version=target_version,
        clean_accuracy=report.clean_accuracy,
        robust_accuracy=report.robust_accuracy,
        attack_success_rate=report.attack_success_rate,
        mean_edits=report.mean_edits,
        min_similarity=report.min_similarity,
        mean_similarity=report.mean_similarity,
        examples=[
            adversary_pb2.AdversarialExample(
                original=r.original,
                perturbed=r.perturbed,
                label=name(r.label),
                predicted_before=name(r.predicted_before),
                predicted_after=name(r.predicted_after),
                edits=r.edits,
                similarity=r.similarity,
                success=r.success,
            )
            for r in ordered
        ],
    )
