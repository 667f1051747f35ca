"""Metrics of the RLHF loop itself: feedback, retraining windows, gates and promotions.

Defined once here so every service that records one uses the same name and labels,
and the chart's alerting rules and dashboards (`charts/rlhf/files/`) can be checked
against them (tests/charts/test_monitoring.py). Run, bus and health metrics live
beside the code that updates them (`runtime/runs.py`, `runtime/bus/core.py`,
`runtime/grpc/health.py`).
"""

from __future__ import annotations

from rlhf.runtime import metrics
from rlhf.v1 import events_pb2

FEEDBACK_RECORDED = metrics.counter(
    "rlhf_feedback_recorded",
    "Feedback acknowledged to clients by RecordFeedback (durable on the bus), by kind.",
    ("kind",),
)
FEEDBACK_STORED = metrics.counter(
    "rlhf_feedback_stored",
    "Feedback events data prep stored for a pipeline's next window (duplicates skipped).",
    ("pipeline", "kind"),
)
FEEDBACK_WINDOWS = metrics.counter(
    "rlhf_feedback_windows",
    "Feedback windows closed, each requesting one retraining round.",
    ("pipeline",),
)
FEEDBACK_IN_WINDOWS = metrics.counter(
    "rlhf_feedback_in_windows",
    "Feedback events claimed by a closed window (used by a retraining round).",
    ("pipeline",),
)
GATE_EVALUATIONS = metrics.counter(
    "rlhf_gate_evaluations",
    "Promotion gates evaluated on candidate versions, by gate and result (passed/failed).",
    ("pipeline", "gate", "result"),
)
PROMOTIONS = metrics.counter(
    "rlhf_promotions",
    "Model versions promoted to serving, by model name.",
    ("pipeline", "model"),
)
ROLLBACKS = metrics.counter(
    "rlhf_rollbacks", "Promotions rolled back by an operator, by model name.", ("model",)
)


def feedback_kind(kind: int) -> str:
    """`FEEDBACK_KIND_PREFERENCE` -> "preference" (a metric label)."""
    try:
        return events_pb2.FeedbackKind.Name(kind).removeprefix("FEEDBACK_KIND_").lower()
    except ValueError:
        return "unknown"


def record_gates(pipeline: str, gates: dict[str, bool]) -> None:
    """Count each evaluated gate's result."""
    for gate, passed in gates.items():
        GATE_EVALUATIONS.labels(pipeline, gate, "passed" if passed else "failed").inc()
