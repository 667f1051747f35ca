"""`rlhf demo`: the end-to-end RLHF demo on embedded defaults."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer


def demo(
    pipeline: str = typer.Option(
        "reviews-en",
        help="pipeline spec; the default and sentiment-zh need no data fetched by hand",
    ),
    quick: bool = typer.Option(
        False, "--quick", help="fewer steps, smaller held-out split (~10-15 min on 2 cores)"
    ),
    workdir: Path = typer.Option(Path("artifacts/demo"), help="artifact directory"),
    data_dir: Path | None = typer.Option(
        None, help="data sets named by relative paths (e.g. sentiment-en's SST-2/IMDB)"
    ),
    device: str = typer.Option("cpu", help="torch device"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    fresh: bool = typer.Option(True, help="start from an empty artifact directory"),
) -> None:
    """Run a pipeline end to end in one process, then feedback-driven retraining."""
    import logging
    import shutil

    from rich.console import Console

    from rlhf.demo import DemoError, DemoOptions, render_report, run_demo
    from rlhf.runtime.logging import configure_logging

    configure_logging("WARNING")
    logging.getLogger("rlhf").setLevel(logging.WARNING)
    console = Console(stderr=as_json)
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    options = DemoOptions(
        pipeline=pipeline, quick=quick, workdir=workdir, data_dir=data_dir, device=device
    )
    try:
        report = run_demo(options, console, show_progress=True)
    except DemoError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False, default=str) + "\n")
    else:
        render_report(report, console)


app = demo
