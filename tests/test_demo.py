"""`rlhf demo` end to end on the tiny e2e pipeline: one JSON report with a promoted
version, per-stage metrics and exactly one feedback-driven retraining round."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import rlhf.pipelines
from rlhf.demo import DemoOptions, run_demo

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
    assert report["feedback"] == {"sent": 50, "duplicates": 5}
