"""`rlhf generate PROMPT... [--file F]`: continuations from the inference service or a
local model directory.

Plain output shows each prompt with its continuation, then the version and request id
a user needs for `rlhf feedback`. `--json` prints one object per prompt instead:
{"prompt", "completion", "model_version", "request_id"}.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rlhf.cli._inference import (
    ClientCert,
    ClientKey,
    Device,
    Inference,
    LocalModel,
    MaxNewTokens,
    ModelDir,
    ModelVersion,
    Sampling,
    Seed,
    Temperature,
    Timeout,
    TlsCa,
    Token,
    TopP,
    connect,
    fail,
    hint,
    new_request_id,
    pick_backend,
    read_lines,
    rpc_failed,
    version_hint,
)

MAX_PROMPTS_PER_REQUEST = 64  # the service's limit per GenerateRequest


def _prompts(prompts: list[str] | None, file: Path | None) -> list[str]:
    if file is not None and prompts:
        fail("pass either --file or PROMPT arguments, not both")
    found = read_lines(file) if file is not None else list(prompts or [])
    if not found:
        fail("nothing to generate from: pass PROMPT arguments or --file")
    for i, prompt in enumerate(found, 1):
        if not prompt.strip():
            fail(f"PROMPT {i} is empty")
    return found


def _remote(
    address: str,
    prompts: list[str],
    sampling: Sampling,
    model_version: str,
    connection: dict,
) -> list[dict[str, str]]:
    """One Generate call per 64 prompts; every prompt keeps its call's version and id."""
    import grpc

    rows: list[dict[str, str]] = []
    with connect(address, **connection) as client:
        for start in range(0, len(prompts), MAX_PROMPTS_PER_REQUEST):
            chunk = prompts[start : start + MAX_PROMPTS_PER_REQUEST]
            try:
                reply = client.generate(chunk, version=model_version, **sampling.as_kwargs())
            except grpc.RpcError as exc:
                rpc_failed(exc, address)
            rows += [
                {
                    "prompt": prompt,
                    "completion": completion,
                    "model_version": reply.model_version,
                    "request_id": reply.request_id,
                }
                for prompt, completion in zip(chunk, reply.completions, strict=True)
            ]
    return rows


def _local(
    model_dir: str, prompts: list[str], sampling: Sampling, device: str, batch_size: int
) -> list[dict[str, str]]:
    import torch

    local = LocalModel.load(model_dir, device)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    rows: list[dict[str, str]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        request_id = new_request_id()
        rows += [
            {
                "prompt": prompt,
                "completion": completion,
                "model_version": local.version,
                "request_id": request_id,
            }
            for prompt, completion in zip(chunk, local.generate(chunk, sampling), strict=True)
        ]
    return rows


def app(
    prompts: list[str] | None = typer.Argument(None, help="Prompts to continue.", metavar="PROMPT"),
    file: Path | None = typer.Option(
        None, "--file", "-f", help="Prompts, one per line ('-' for stdin); blank lines skipped."
    ),
    inference: Inference = None,
    model: ModelDir = None,
    max_new_tokens: MaxNewTokens = 64,
    temperature: Temperature = 1.0,
    top_p: TopP = 1.0,
    seed: Seed = None,
    model_version: ModelVersion = "",
    as_json: bool = typer.Option(False, "--json", help="One JSON object per prompt."),
    token: Token = None,
    tls_ca: TlsCa = None,
    client_cert: ClientCert = None,
    client_key: ClientKey = None,
    timeout: Timeout = 60.0,
    device: Device = "cpu",
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Prompts per batch (--model)."),
) -> None:
    """Generate continuations of prompts (inference service or a local model)."""
    found = _prompts(prompts, file)
    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    sampling.check()
    address = pick_backend(inference, model)
    if address is None:
        rows = _local(str(model), found, sampling, device, batch_size)
    else:
        connection = {
            "token": token,
            "tls_ca": tls_ca,
            "client_cert": client_cert,
            "client_key": client_key,
            "timeout": timeout,
        }
        rows = _remote(address, found, sampling, model_version, connection)

    for i, row in enumerate(rows):
        if as_json:
            typer.echo(json.dumps(row, ensure_ascii=False))
            continue
        if i:
            typer.echo()
        typer.echo(typer.style(row["prompt"], bold=True) + row["completion"])
        hint(version_hint(row["model_version"], row["request_id"]))
