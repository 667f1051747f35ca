"""`rlhf demo` end to end on the tiny e2e pipeline: one JSON report with a promoted
version, per-stage metrics, the policy's figures, base / v1 / v2 samples side by side
and exactly one feedback-driven retraining round (labels, preferences and thumbs)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import rlhf.pipelines
from rlhf.demo import DEMO_PROMPTS, POLICY_METRICS, DemoOptions, render_report, run_demo

pytestmark = [pytest.mark.triton, pytest.mark.timeout(600)]


def test_demo_promotes_serves_and_retrains(tmp_path, monkeypatch):
    monkeypatch.setattr(rlhf.pipelines, "PIPELINES_DIR", Path(__file__).parent / "services/e2e")
    options = DemoOptions(pipeline="e2e-zh", workdir=tmp_path / "demo", timeout_s=400)
    report = run_demo(options, Console(file=io.StringIO()), show_progress=False)
    json.dumps(report)  # one JSON object
    first, retrain = report["promoted_version"], report["retrain"]
    assert report["served"]["version"] == first
    assert retrain["triggered"] == 1
    assert retrain["promoted_version"] != first
    assert retrain["served"]["version"] == retrain["promoted_version"]
    assert report["lineage"][retrain["promoted_version"]]["parent"] == first
    assert {"robustness_before", "robustness_after", "policy"} <= set(report["stages"])

    # feedback: the trigger's count, about a third each of labels, preferences and thumbs
    feedback = report["feedback"]
    assert (feedback["sent"], feedback["duplicates"]) == (50, 5)
    kinds = feedback["by_kind"]
    assert sum(kinds.values()) == 50 and kinds["label"] == 16
    assert kinds["preference"] > 0 and kinds["thumbs"] >= 16
    assert set(retrain["feedback"]) >= {"thumbs", "rating", "preference", "label", "prompt"}
    assert sum(retrain["feedback"].values()) > 0

    # the policy's figures, from the registry's lineage metrics of each version
    for policy in (report["policy"], retrain["policy"]):
        assert set(policy) == set(POLICY_METRICS)
        for key in ("judge_positive_rate_before", "judge_positive_rate_after"):
            assert 0 <= policy[key] <= 1
        assert policy["kl_per_sequence"] is not None
    assert retrain["judge_positive_rate_after"] == retrain["policy"]["judge_positive_rate_after"]
    assert isinstance(retrain["judge_improved"], bool)

    # base / v1 / v2 for the fixed prompts with one seed
    samples = report["samples"]
    assert [s["prompt"] for s in samples] == DEMO_PROMPTS["zh"]
    for row in samples:
        assert all(row[key].startswith(row["prompt"]) for key in ("base", "v1", "v2"))
    assert [s["v1"] for s in samples] == report["served"]["samples"]
    assert [s["v2"] for s in samples] == retrain["served"]["samples"]
    assert report["minutes"] > 0
    # a finished stage keeps its model, not its resume checkpoints (GBs on a real model)
    assert not list(options.workdir.rglob("step-*"))

    console = Console(file=io.StringIO(), width=160)
    render_report(report, console)
    shown = console.file.getvalue()
    assert samples[0]["prompt"] in shown and first in shown
