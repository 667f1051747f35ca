"""The `rlhf` command.

Each subcommand group lives in its own module under rlhf.cli and is imported only when
it runs, so `rlhf --version` stays fast and does not import torch.
"""

from __future__ import annotations

import importlib

import typer

from rlhf import __version__

app = typer.Typer(
    name="rlhf",
    help="Kubernetes-native RLHF platform.",
    no_args_is_help=True,
    add_completion=False,
)

# name -> (module under rlhf.cli, help). Each module exposes `app`: a typer.Typer, or a
# function for a single command.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "Run one of the platform's gRPC services."),
    "data": ("data", "Read, check, prepare and pull data sets."),
    "classify": ("classify", "Classify texts with a trained classifier."),
    "generate": ("generate", "Generate continuations of prompts (service or local model)."),
    "chat": ("chat", "Chat with the policy, streaming replies (service or local model)."),
    "feedback": ("feedback", "Record feedback on a reply (thumbs, rating, preference, label)."),
    "demo": ("demo", "End-to-end RLHF demo on embedded defaults."),
    "pipeline": ("pipeline", "Validate and run pipeline specs."),
    "train": ("train", "Run one training run from a run config (what a Kubernetes Job runs)."),
    "stage": ("stage", "Run one pipeline stage from the trainer's request (a Kubernetes Job)."),
    "models": ("models", "List and show model versions and their lineage."),
    "up": ("up", "Start all five services as local processes against Kafka."),
    "kafka": ("kafka", "Provision and run a local Apache Kafka broker (KRaft)."),
    "console": ("console", "Web console: compare versions, give feedback, promote (operators)."),
}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"rlhf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Kubernetes-native RLHF platform."""


def _register_subcommands() -> None:
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"rlhf.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rlhf.cli.{module_name}":
                raise
            continue  # not built yet
        sub = module.app
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=name, help=help_text)
        else:
            app.command(name=name, help=help_text)(sub)


# Top-level module -> the extra of the wheel that installs it (pyproject.toml): the core
# install has the client SDK and this command, not the engine.
EXTRA_OF: dict[str, str] = dict.fromkeys(
    (
        *("torch", "transformers", "tokenizers", "safetensors", "accelerate", "numpy"),
        *("gguf", "sacrebleu", "rouge_score", "pyarrow", "pypinyin", "vaderSentiment", "tqdm"),
    ),
    "engine",
) | {"tritonclient": "serving", "pytriton": "tritonserver", "kubernetes": "k8s"}


def main() -> None:
    _register_subcommands()
    try:
        app()
    except ModuleNotFoundError as exc:  # a command needs an extra the install lacks
        extra = EXTRA_OF.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        typer.echo(
            f"rlhf: {exc.name} is not installed: pip install 'rlhf-platform[{extra}]'", err=True
        )
        raise SystemExit(1) from exc
