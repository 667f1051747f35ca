"""Robustness metrics on hand-made attack results, and the protobuf payloads."""

from __future__ import annotations

import pytest

from rlhf.engine.adversarial import (
    AdversarialInputError,
    AttackResult,
    report_to_event,
    report_to_proto,
    robustness_report,
)


def result(label, before, after, success, edits=0, sim=1.0, status=None):
    status = status or ("success" if success else ("skipped" if before != label else "failed"))
    return AttackResult("x", "y", label, before, after, success, status, edits, sim, queries=10)


HAND_MADE = [
    result(1, 1, 0, True, edits=1, sim=0.9),  # correct, flipped
    result(0, 0, 1, True, edits=3, sim=0.82),  # correct, flipped
    result(1, 1, 1, False, edits=2, sim=0.95),  # correct, survived
    result(0, 0, 0, False),  # correct, survived
    result(1, 0, 0, False),  # wrong from the start: not in the ASR denominator
]


def test_asr_and_robust_accuracy_by_hand():
    r = robustness_report(HAND_MADE)
    assert r.examples == 5 and r.attacked == 4 and r.successes == 2
    assert r.clean_accuracy == pytest.approx(4 / 5)
    assert r.attack_success_rate == pytest.approx(2 / 4)
    assert r.robust_accuracy == pytest.approx(2 / 5)
    assert r.robust_accuracy == pytest.approx(r.clean_accuracy * (1 - r.attack_success_rate))
    assert r.mean_edits == pytest.approx(2.0) and r.max_edits == 3
    assert r.min_similarity == pytest.approx(0.82)
    assert r.mean_similarity == pytest.approx(0.86)
    assert r.mean_queries == pytest.approx(10)


def test_no_successes_and_inconsistent_results():
    r = robustness_report([result(1, 1, 1, False), result(0, 1, 1, False)])
    assert r.attack_success_rate == 0.0 and r.clean_accuracy == 0.5 and r.robust_accuracy == 0.5
    assert r.min_similarity == 1.0 and r.mean_edits == 0.0
    with pytest.raises(AdversarialInputError, match="no attack results"):
        robustness_report([])
    with pytest.raises(AdversarialInputError, match=r"results\[0\] claims success"):
        robustness_report([result(1, 1, 1, True)])


def test_proto_payloads():
    r = robustness_report(HAND_MADE)
    event = report_to_event(r, run_id="run-1", target_version="clf-v3", stage="adversarial")
    assert event.attack_success_rate == pytest.approx(0.5) and event.target_version == "clf-v3"
    proto = report_to_proto(r, HAND_MADE, run_id="run-1", target_version="clf-v3",
                            label_names=["negative", "positive"], max_examples=3)  # fmt: skip
    assert len(proto.examples) == 3 and proto.examples[0].success
    assert proto.examples[0].label == "positive" and proto.examples[0].predicted_after == "negative"
