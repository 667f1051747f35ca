"""`rlhf classify`: one JSON line per input, in order; clear errors for bad paths."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import typer
from typer.testing import CliRunner

from rlhf.cli import classify
from rlhf.engine.classifier import ClassifierTrainConfig, tiny_classifier, train_classifier
from rlhf.engine.data import LabeledText

TEXTS = ["the film was great", "the film was awful", "the plot was great", "the cast was awful"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train = [
            LabeledText(f"the {noun} was {adj}", label)
            for noun in ("film", "plot", "cast", "show")
            for adj, label in (("great", "positive"), ("awful", "negative"))
        ] * 8
        classifier = tiny_classifier(texts=[r.text for r in train], max_length=16)
        config = ClassifierTrainConfig(
            learning_rate=3e-3, batch_size=16, max_length=16, epochs=6, warmup_ratio=0.1
        )
        train_classifier(config, train, classifier=classifier)
        return classifier.save(tmp_path_factory.mktemp("clf"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    app.command()(classify.app)
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def test_texts_in_order(cli, model_dir):
    result = cli("--model", model_dir, *TEXTS)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["positive", "negative", "positive", "negative"]
    assert all(0.5 <= r["score"] <= 1.0 and set(r) == {"label", "score"} for r in rows)


def test_file_one_line_per_input(cli, model_dir, tmp_path):
    file = tmp_path / "in.txt"
    file.write_text("\n".join(TEXTS * 20) + "\n")  # 80 lines: more than one batch
    result = cli("--model", model_dir, "--file", file, "--batch-size", "32")
    assert result.exit_code == 0, result.output
    labels = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    assert labels == ["positive", "negative", "positive", "negative"] * 20


def test_not_a_model_dir_is_a_clear_error(cli, tmp_path):
    result = cli("--model", tmp_path, "hello")
    assert result.exit_code == 2
    assert f"{tmp_path}: not a model directory (no config.json)" in result.output


def test_missing_file_is_a_clear_error(cli, model_dir, tmp_path):
    result = cli("--model", model_dir, "--file", tmp_path / "nope.txt")
    assert result.exit_code != 0
    assert "nope.txt: file not found" in result.output


def test_registered_in_the_rlhf_command(model_dir):
    """The real entry point, as a user runs it."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from rlhf.cli import main; main()",
            "classify",
            "--model",
            str(model_dir),
            "the show was great",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip())["label"] == "positive"
