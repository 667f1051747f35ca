"""What `rlhf generate`, `rlhf chat` and `rlhf feedback` share: connection options, the
mapping of gRPC errors to exit statuses, and local generation with transformers.

Exit statuses: 2 for a request that can never succeed as given (bad input, here or
reported by the server as INVALID_ARGUMENT), 3 for a service that cannot be reached
now (UNAVAILABLE, DEADLINE_EXCEEDED: retrying later may work), 1 for anything else.

Nothing here imports grpc, torch or transformers at module level: every subcommand
module is imported when `rlhf` starts, and `rlhf --help` has to stay fast.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    import grpc

    from rlhf.client import Client

INFERENCE_ENV = "RLHF_INFERENCE_ADDR"
TOKEN_ENV = "RLHF_TOKEN"
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3

# --- options shared by the commands ------------------------------------------------

Inference = Annotated[
    str | None,
    typer.Option(
        "--inference",
        "-i",
        help=f"Inference service HOST:PORT (default: ${INFERENCE_ENV}).",
        show_default=False,
    ),
]
ModelDir = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Generate locally with this Hugging Face causal-LM directory (or 'smollm2'); "
        f"${INFERENCE_ENV} is then ignored.",
        show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option("--token", envvar=TOKEN_ENV, help="Bearer token for the service."),
]
TlsCa = Annotated[
    Path | None,
    typer.Option("--tls-ca", help="CA certificate that signed the server's (enables TLS)."),
]
ClientCert = Annotated[
    Path | None, typer.Option("--client-cert", help="Client certificate for mTLS.")
]
ClientKey = Annotated[
    Path | None, typer.Option("--client-key", help="Client private key for mTLS.")
]
Timeout = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds each call may take.")]
MaxNewTokens = Annotated[
    int, typer.Option("--max-new-tokens", min=1, max=1024, help="Tokens to generate at most.")
]
Temperature = Annotated[
    float, typer.Option("--temperature", "-t", min=0.0, help="Sampling temperature; 0 = greedy.")
]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass, in (0, 1].")]
Seed = Annotated[int | None, typer.Option("--seed", min=0, help="Seed for reproducible sampling.")]
Device = Annotated[str, typer.Option("--device", help="Device for --model (cpu, cuda, ...).")]
ModelVersion = Annotated[
    str,
    typer.Option(
        "--model-version",
        help="Served version to use (inference service only; default: the promoted one).",
    ),
]


@dataclass(frozen=True)
class Sampling:
    """The sampling options as given; validated once for both back ends."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def check(self) -> None:
        if not 0 < self.top_p <= 1:
            fail(f"--top-p must be in (0, 1] (got {self.top_p})")

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Client.generate`/`SamplingParams` (no seed when unset)."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.seed is not None:
            kwargs["seed"] = self.seed
        return kwargs


def fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def hint(text: str) -> None:
    """A dim line for people (colour only on a terminal)."""
    typer.echo(typer.style(text, dim=True))


def version_hint(model_version: str, request_id: str) -> str:
    """What a user needs to give feedback on a reply."""
    return f"[version {model_version or '?'} · request {request_id or '?'}]"


def pick_backend(inference: str | None, model: str | None) -> str | None:
    """The inference address to use, or None for the local --model.

    RLHF_INFERENCE_ADDR counts only when --model is not given, so an exported address
    never silently overrides an explicit local model.
    """
    if inference and model:
        fail("pass either --inference or --model, not both")
    if model:
        return None
    address = inference or os.environ.get(INFERENCE_ENV, "")
    if not address:
        fail(f"pass --inference HOST:PORT (or set {INFERENCE_ENV}) or --model DIR")
    return address


# --- the inference service ---------------------------------------------------------


def connect(
    address: str,
    token: str | None,
    tls_ca: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
    timeout: float,
) -> Client:
    """A `Client` for the inference service; unreadable certificates exit 2."""
    from rlhf.client import Client

    try:
        return Client(
            inference=address,
            token=token,
            tls_ca=tls_ca,
            client_cert=client_cert,
            client_key=client_key,
            timeout=timeout,
        )
    except ValueError as exc:  # missing cert/key pair or an unreadable file
        fail(str(exc))


def describe_rpc_error(exc: grpc.RpcError, address: str) -> tuple[str, int]:
    """(message, exit status) for a failed call, in words a shell user can act on."""
    import grpc

    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = (exc.details() if callable(getattr(exc, "details", None)) else None) or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return details or "the service rejected the request", EXIT_INVALID
    if code == grpc.StatusCode.UNAVAILABLE:
        return (
            f"the inference service at {address} is unavailable ({details or 'no details'})",
            EXIT_UNAVAILABLE,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the inference service at {address} did not answer in time", EXIT_UNAVAILABLE
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return f"{code.name}: {details} (pass --token or set {TOKEN_ENV})", 1
    name = code.name if code is not None else "RPC failed"
    return f"{name}: {details}", 1


def rpc_failed(exc: grpc.RpcError, address: str) -> NoReturn:
    message, code = describe_rpc_error(exc, address)
    fail(message, code)


# --- local generation with transformers --------------------------------------------


@dataclass
class LocalModel:
    """A causal LM and its tokenizer loaded from a directory, for one CLI invocation."""

    model: Any
    tokenizer: Any
    version: str

    @classmethod
    def load(cls, name_or_dir: str, device: str) -> LocalModel:
        from rlhf.engine.models import ModelLoadError, load_policy, load_tokenizer

        try:
            model = load_policy(name_or_dir, device=device)
            tokenizer = load_tokenizer(name_or_dir)
        except (ModelLoadError, OSError, ValueError) as exc:
            fail(str(exc))
        model.eval()
        # No registry version for a directory: its name stands in, marked as local.
        return cls(model, tokenizer, f"local:{Path(name_or_dir).name or name_or_dir}")

    def _generate_kwargs(self, sampling: Sampling) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False)
        return kwargs

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        """Continuations of `prompts` (the new text only), one batch."""
        import torch

        encoded = self.tokenizer(list(prompts), return_tensors="pt", padding=True)
        encoded = encoded.to(self.model.device)
        with torch.no_grad():
            output = self.model.generate(**encoded, **self._generate_kwargs(sampling))
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def chat_inputs(self, messages: Sequence[dict[str, str]]) -> dict[str, Any]:
        """Token ids for the conversation so far, ending where the assistant speaks.

        The tokenizer's chat template when it has one; otherwise a plain transcript
        ("User: ...\\nAssistant:"), which a base model can at least continue.
        """
        if getattr(self.tokenizer, "chat_template", None):
            encoded = self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        else:
            lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
            encoded = self.tokenizer("\n".join([*lines, "Assistant:"]), return_tensors="pt")
        return {k: v.to(self.model.device) for k, v in encoded.items()}

    def stream_chat(self, messages: Sequence[dict[str, str]], sampling: Sampling) -> Iterator[str]:
        """The assistant's reply as text pieces, while the model generates it."""
        import torch
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = self.chat_inputs(messages)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(
                        **inputs, streamer=streamer, **self._generate_kwargs(sampling)
                    )
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
                streamer.end()  # else the consumer below waits forever

        worker = threading.Thread(target=run, name="rlhf-chat-generate", daemon=True)
        worker.start()
        yield from (piece for piece in streamer if piece)
        worker.join()
        if errors:
            raise errors[0]


def new_request_id() -> str:
    """An id for a locally generated reply, so feedback can still refer to it."""
    return uuid.uuid4().hex


def read_lines(file: Path) -> list[str]:
    """Non-blank lines of `file` ('-' = stdin)."""
    if str(file) == "-":
        lines = list(sys.stdin)
    else:
        if not file.is_file():
            fail(f"--file {file}: file not found")
        lines = file.read_text(encoding="utf-8").splitlines()
    return [line.rstrip("\r\n") for line in lines if line.strip()]
