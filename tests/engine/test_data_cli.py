"""`rlhf data check|prepare|pull` through the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rlhf.cli.data import app
from rlhf.engine.data import load_dataset


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_check_reports_counts_duplicates_and_version(data_dir):
    result = run("check", "imdb/imdb_small.csv", "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records"] == 1000 and summary["labels"] == {"negative": 500, "positive": 500}
    assert summary["version"].startswith("sha256:")


def test_prepare_writes_a_versioned_dataset(tmp_path):
    src = tmp_path / "mine.csv"
    src.write_text(
        "review,stars\nGreat!,pos\ngreat!,pos\nAwful.,neg\nFine film,pos\n"
        "Bad film,neg\nMeh film,neg\n"
    )
    out = tmp_path / "prepared"
    args = (
        "prepare",
        src,
        "--out",
        out,
        "--columns",
        "text=review,label=stars",
        "--splits",
        "train=0.5,test=0.5",
    )
    result = run(*args)
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["metadata"]["read"] == 6 and manifest["metadata"]["after_dedup"] == 5
    loaded = load_dataset(out)
    assert sum(len(v) for v in loaded.splits.values()) == 5
    assert json.loads(run(*args).stdout)["version"] == manifest["version"]  # deterministic


def test_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "positive"}\n{"text": "x", "label": "maybe"}\n')
    result = run("check", bad)
    assert result.exit_code == 1
    assert "bad.jsonl, line 2: label 'maybe' is outside the schema" in result.output


def test_pull_offline_explains(tmp_path):
    result = run("pull", "nope", "--dest", tmp_path)
    assert result.exit_code == 1 and "unknown data set 'nope'" in result.output
