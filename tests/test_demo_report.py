"""The demo's report when the gates keep the retrained candidate: v1 goes on serving,
and the report says which gate kept v2 and why, instead of the demo failing."""

from __future__ import annotations

import io

from rich.console import Console

from rlhf.demo import _side_by_side, render_report

SERVED = {"version": "p-policy-v1", "prompts": ["The movie"], "samples": ["The movie was fun"]}
METRICS = {
    "judge_positive_rate_before": 0.5,
    "judge_positive_rate_after": 0.66,
    "reward_before": 0.1,
    "reward_after": 0.4,
    "kl_per_sequence": 3.0,
    "ref_perplexity_ratio": 1.1,
    "distinct_2": 0.9,
    "repetition_rate": 0.0,
}


def test_a_kept_candidate_is_reported_not_failed():
    rows = _side_by_side(SERVED, ["The movie career"], ["The movie is"])
    assert rows == [
        {
            "prompt": "The movie",
            "base": "The movie is",
            "v1": "The movie was fun",
            "v2": "The movie career",
        }
    ]
    assert _side_by_side(SERVED, None, None)[0]["v2"] is None
    report = {
        "pipeline": "p",
        "promoted_version": "p-policy-v1",
        "policy": METRICS,
        "samples": rows,
        "stages": {},
        "feedback": {"sent": 40, "duplicates": 4, "by_kind": {}},
        "retrain": {
            "triggered": 1,
            "promoted_version": None,
            "candidate_version": "p-policy-v2",
            "failed_gates": "judge_not_worse (judge_positive_rate_before=0.66, "
            "judge_positive_rate_after=0.59)",
            "served": None,
            "feedback": {"label": 13, "preference": 13},
            "policy": METRICS | {"judge_positive_rate_after": 0.59},
        },
        "minutes": 9.5,
    }
    out = io.StringIO()
    render_report(report, Console(file=out, width=200))
    text = out.getvalue()
    assert "p-policy-v2 was kept, not promoted: judge_not_worse" in text
    assert "p-policy-v1 goes on serving" in text
    assert "kept by the gates" in text and "career" in text  # the kept candidate's text
