"""Paths and URIs from clients and events, confined to allow-listed roots.

Every path a request or an event names is untrusted: `file:///etc/passwd`, a `../..`
walk, a symlink out of the data directory, a FIFO that blocks a reader forever,
`/dev/zero` that never ends. `confined_path` resolves the path (following symlinks)
and accepts it only when it lies under one of the roots and is what the caller needs:
a regular file under a size cap, a directory, or a prepared dataset. Errors name the
field and quote at most a short prefix of what the client sent; they never say whether
a path outside the roots exists.

    path = confined_path(request.uri, ctx.data_roots, "uri", kind="file")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from rlhf.runtime.grpc.errors import NotFound, RequestInvalid

MAX_URI_CHARS = 4096
#: Default ceiling on a source file read by data prep (bytes).
MAX_FILE_BYTES = 4 * 1024**3

Kind = Literal["file", "dir", "dataset"]


def shown(value: str, limit: int = 80) -> str:
    """A client's string as quoted back in an error: a short prefix only."""
    return repr(value[:limit] + ("..." if len(value) > limit else ""))


def confined_path(
    uri: str,
    roots: Sequence[Path],
    field: str,
    *,
    kind: Kind = "file",
    max_bytes: int = MAX_FILE_BYTES,
) -> Path:
    """The resolved local path of `uri` (a `file://` URI or a path; a relative path is
    looked up in each root in turn) if it is a `kind` under one of `roots`.

    RequestInvalid: bad scheme, too long, outside the roots, not the right kind, too
    big. NotFound: inside the roots but missing.
    """
    if len(uri) > MAX_URI_CHARS:
        raise RequestInvalid(field, f"must be at most {MAX_URI_CHARS} characters")
    if "\x00" in uri:
        raise RequestInvalid(field, "must not contain NUL characters")
    raw = uri.removeprefix("file://")
    if "://" in raw:
        raise RequestInvalid(field, f"only file:// URIs or paths are accepted, got {shown(uri)}")
    if not roots:
        raise RequestInvalid(field, "no data roots are configured on this service")
    resolved_roots = [Path(root).resolve() for root in roots]
    candidate = Path(raw)
    if not candidate.is_absolute():  # relative to the first root that has it
        options = [root / candidate for root in resolved_roots]
        candidate = next((o for o in options if o.exists()), options[0])
    path = candidate.resolve()
    if not any(path.is_relative_to(root) for root in resolved_roots):
        raise RequestInvalid(
            field, f"{shown(uri)} is outside the directories this service may read"
        )
    if not path.exists():
        raise NotFound(f"{field}: {shown(uri)} does not exist")
    if kind == "file":
        if not path.is_file():  # FIFOs, devices and sockets are not regular files
            raise RequestInvalid(field, f"{shown(uri)} is not a regular file")
        size = os.stat(path).st_size
        if size > max_bytes:
            raise RequestInvalid(field, f"{shown(uri)} is {size} bytes; the limit is {max_bytes}")
    elif kind == "dir":
        if not path.is_dir():
            raise RequestInvalid(field, f"{shown(uri)} is not a directory")
    elif not (path / "manifest.json").is_file():
        raise NotFound(f"{field}: {shown(uri)} is not a prepared dataset")
    return path


def regular_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> Path:
    """`path` if it is a regular file within the size cap (for paths a pipeline spec or a
    registered source names); ValueError otherwise."""
    if not path.is_file():
        raise ValueError(f"{path.name}: not a regular file")
    size = os.stat(path).st_size
    if size > max_bytes:
        raise ValueError(f"{path.name}: {size} bytes is over the limit of {max_bytes}")
    return path


# -- run configs from clients ---------------------------------------------------------
MAX_CONFIG_JSON_BYTES = 64 * 1024
#: Ceilings on the knobs of a client's run config (StartRun / Train `config_json`): what
#: one request may make a worker do. Keys not listed pass through to the algorithm's
#: config, which rejects unknown names.
RUN_CONFIG_CEILINGS: dict[str, float] = {
    "total_steps": 100_000,
    "epochs": 100,
    "batch_size": 1024,
    "mini_batch_size": 1024,
    "eval_batch_size": 1024,
    "group_size": 64,
    "samples_per_prompt": 64,
    "max_new_tokens": 1024,
    "max_length": 8192,
    "max_prompt_tokens": 8192,
    "max_response_tokens": 8192,
    "block_size": 8192,
    "gpus_per_node": 8,
    "nproc_per_node": 64,
    "time_limit_s": 7 * 24 * 3600,
}


def run_config(text: str, field: str = "config_json") -> dict:
    """A client's JSON run config: an object within the size cap whose bounded knobs are
    numbers in [0, ceiling]. RequestInvalid names the key and its ceiling."""
    import json

    if len(text.encode()) > MAX_CONFIG_JSON_BYTES:
        raise RequestInvalid(field, f"must be at most {MAX_CONFIG_JSON_BYTES} bytes")
    try:
        config = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise RequestInvalid(field, f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(config, dict):
        raise RequestInvalid(field, f"must be a JSON object, got {type(config).__name__}")
    for key, ceiling in RUN_CONFIG_CEILINGS.items():
        if key not in config:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RequestInvalid(f"{field}.{key}", f"must be a number, got {shown(str(value))}")
        if not 0 <= value <= ceiling:
            raise RequestInvalid(f"{field}.{key}", f"must be in [0, {ceiling:g}], got {value}")
    return config
