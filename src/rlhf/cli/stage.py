"""`rlhf stage run --request FILE`: one pipeline stage, as a Kubernetes workload runs it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("run")
def run(
    request: Path = typer.Option(..., "--request", help="stage-request.json the trainer wrote"),
) -> None:
    """Train the stage of the request (under torchrun: data-parallel over its ranks).

    Rank 0 alone reports progress, saves the model, evaluates and writes
    stage-result.json beside it; the other ranks train and exit."""
    from rlhf.engine import distributed
    from rlhf.workflows import stage_jobs

    if not request.exists():
        raise typer.BadParameter(f"{request} does not exist", param_hint="--request")
    try:
        stage_request = stage_jobs.StageRequest.load(request)
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(f"{request}: {exc}", param_hint="--request") from None
    distributed.init(stage_request.device)  # before the stage, so ranks know who writes
    out = Path(stage_request.out_dir)
    main = distributed.is_main()
    report = stage_jobs.progress_writer(out) if main else (lambda *args, **kwargs: None)
    result = stage_jobs.run_stage(stage_request, report)
    if not main:
        return
    stage_jobs.save_result(out, result)
    typer.echo(json.dumps({"model_dir": str(result.model_dir), "metrics": result.metrics}))
