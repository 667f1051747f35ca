"""`rlhf pipeline list|validate|show`: pipeline specs."""

from __future__ import annotations

import json

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_pipelines() -> None:
    """Names of the shipped pipeline specs."""
    from rlhf.pipelines import available_pipelines, load_pipeline

    for name in available_pipelines():
        typer.echo(f"{name:16s} {load_pipeline(name).description}")


@app.command("validate")
def validate(specs: list[str] = typer.Argument(..., help="names or YAML paths")) -> None:
    """Validate specs; exit 1 naming the bad field of the first invalid one."""
    from rlhf.pipelines import PipelineError, load_pipeline
    from rlhf.workflows.stages import config_problems

    failed = False
    for spec in specs:
        try:
            problems = [
                f"{spec}{' (quick)' if quick else ''}: {problem}"
                for quick in (False, True)
                for problem in config_problems(load_pipeline(spec, quick=quick))
            ]
        except PipelineError as exc:
            problems = [str(exc)]
        for problem in problems:
            typer.echo(problem, err=True)
        failed |= bool(problems)
        if not problems:
            typer.echo(f"{spec}: ok")
    if failed:
        raise typer.Exit(1)


@app.command("show")
def show(name: str, quick: bool = typer.Option(False, help="with the quick overrides")) -> None:
    """Print a spec as JSON after validation (with defaults filled in)."""
    from rlhf.pipelines import PipelineError, load_pipeline

    try:
        spec = load_pipeline(name, quick=quick)
    except PipelineError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(spec.model_dump(mode="json"), indent=2, ensure_ascii=False))


@app.command("run")
def run(
    name: str,
    dataprep: str = typer.Option("127.0.0.1:50051", help="data prep service address"),
    quick: bool = typer.Option(False, help="the spec's quick overrides"),
    token: str | None = typer.Option(None, envvar="RLHF_TOKEN", help="bearer token"),
) -> None:
    """Start a round of pipeline NAME on running services (`rlhf up`, a cluster); prints
    the pipeline run id. Progress follows on the rlhf.run.progress topic."""
    from rlhf.client import Client

    with Client(dataprep=dataprep, token=token) as client:
        typer.echo(client.prepare(pipeline=name, profile="quick" if quick else ""))
