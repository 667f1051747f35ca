"""`rlhf train --run-config FILE`: one training run, as a Kubernetes Job runs it."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def train(
    run_config: Path = typer.Option(..., "--run-config", help="YAML written by the trainer"),
) -> None:
    """Execute the run config; the model goes to <output_dir>/model, metrics to
    <output_dir>/metrics.json (the trainer service reads both from the shared volume)."""
    import yaml

    from rlhf.engine import distributed
    from rlhf.workflows.stages import RunConfig, run_adhoc

    if not run_config.exists():
        raise typer.BadParameter(f"{run_config} does not exist", param_hint="--run-config")
    try:
        run = RunConfig(**yaml.safe_load(run_config.read_text()))
    except TypeError as exc:
        raise typer.BadParameter(f"{run_config}: {exc}", param_hint="--run-config") from None
    result = run_adhoc(run)
    if not distributed.is_main():  # under torchrun rank 0 reports the run
        return
    out = Path(run.output_dir)
    (out / "metrics.json").write_text(json.dumps(result.metrics))
    typer.echo(json.dumps({"model_dir": str(result.model_dir), "metrics": result.metrics}))


app = train
