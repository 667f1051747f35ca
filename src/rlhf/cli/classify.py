"""`rlhf classify --model DIR (--file F | TEXT...)`: one JSON line per input, in order.

Each line is {"label": "positive"|"negative", "score": p}, p the probability of that
label. A single-logit model (a Bradley-Terry reward model) is read as log-odds of
"positive".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer


def _read_lines(file: Path) -> list[str]:
    if str(file) == "-":
        return [line.rstrip("\r\n") for line in sys.stdin]
    if not file.is_file():
        typer.echo(f"error: --file {file}: file not found", err=True)
        raise typer.Exit(2)
    with open(file, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f]


def app(
    texts: list[str] | None = typer.Argument(None, help="Texts to classify."),
    model: Path = typer.Option(..., "--model", "-m", help="Saved classifier directory."),
    file: Path | None = typer.Option(
        None, "--file", "-f", help="Text file, one input per line ('-' for stdin)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Classify texts with a trained classifier; prints one JSON object per input."""
    if file is not None and texts:
        raise typer.BadParameter("pass either --file or TEXT arguments, not both")
    inputs = _read_lines(file) if file is not None else list(texts or [])
    if not inputs:
        raise typer.BadParameter("nothing to classify: pass TEXT arguments or --file")

    import torch

    from rlhf.engine.classifier import ClassifierLoadError, load_classifier

    try:
        classifier = load_classifier(model, device=device)
    except ClassifierLoadError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    labels = [label.lower() for label in classifier.labels]
    binary = classifier.num_labels == 1 or labels == ["negative", "positive"]
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        if binary:
            p_pos = torch.sigmoid(classifier.positive_scores(chunk, batch_size)).tolist()
            rows = [
                {"label": "positive", "score": p}
                if p >= 0.5
                else {"label": "negative", "score": 1.0 - p}
                for p in p_pos
            ]
        else:
            rows = [
                {"label": p.label, "score": p.score} for p in classifier.predict(chunk, batch_size)
            ]
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    sys.stdout.flush()
