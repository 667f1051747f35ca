"""`rlhf models list|show`: model versions and their lineage from the registry."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from google.protobuf import json_format

app = typer.Typer(no_args_is_help=True)


def _registry(artifact_dir: Path | None):
    from rlhf.registry import ModelRegistry
    from rlhf.runtime.settings import load_settings

    settings = load_settings()
    root = artifact_dir or settings.artifact_dir
    return ModelRegistry(Path(root) / "registry", database=settings.store.postgres_url)


@app.command("list")
def list_models(
    name: str = typer.Option("", help="only this model name"),
    promoted: bool = typer.Option(False, help="only promoted versions"),
    artifact_dir: Path | None = typer.Option(None, help="default: settings.artifact_dir"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """List model versions."""
    models = _registry(artifact_dir).list(name=name, promoted_only=promoted)
    for model in models:
        if as_json:
            typer.echo(json_format.MessageToJson(model, indent=None))
            continue
        metrics = ", ".join(f"{k}={v:.3g}" for k, v in sorted(model.lineage.metrics.items()))
        flag = "*" if model.promoted else " "
        parent = model.lineage.parent_version or "-"
        typer.echo(f"{flag} {model.version:32s} parent={parent:28s} {metrics}")


@app.command("show")
def show_model(
    version: str,
    artifact_dir: Path | None = typer.Option(None, help="default: settings.artifact_dir"),
) -> None:
    """Show one version with its full lineage (data versions, parent, reward model)."""
    from rlhf.registry import ModelNotFound

    try:
        model = _registry(artifact_dir).get(version)
    except ModelNotFound:
        typer.echo(f"no model version {version!r}", err=True)
        raise typer.Exit(1) from None
    payload = json_format.MessageToDict(model, preserving_proto_field_name=True)
    if payload.get("lineage", {}).get("config_json"):
        payload["lineage"]["config"] = json.loads(payload["lineage"].pop("config_json"))
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
