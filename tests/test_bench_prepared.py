"""bench/prepared.py: benchmarks build the models they need once, then reuse them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import prepared  # noqa: E402


def test_a_cached_model_is_reused_and_a_missing_one_is_trained_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_run(args):
        calls.append(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        return {"accuracy": 0.9, "judge": args.judge}

    import quality_classifier

    monkeypatch.setattr(quality_classifier, "run", fake_run)
    first = prepared.prepared("judge-imdb", data_dir=tmp_path / "data", log=lambda m: None)
    again = prepared.prepared("judge-imdb", data_dir=tmp_path / "data", log=lambda m: None)
    assert first == again == tmp_path / "bench-models" / "judge-imdb"
    assert len(calls) == 1 and calls[0].judge and str(calls[0].data_dir) == str(tmp_path / "data")
    assert json.loads((first / "bench.json").read_text())["accuracy"] == 0.9
    assert prepared.model_or_prepared("/my/model", "judge-imdb") == "/my/model"
    with pytest.raises(ValueError, match="unknown prepared model"):
        prepared.prepared("nope")


def test_no_benchmark_defaults_to_a_path_of_one_machine():
    bench = Path(__file__).resolve().parents[1] / "bench"
    offenders = [p.name for p in bench.glob("*.py") if "/work/" in p.read_text()]
    assert offenders == []
