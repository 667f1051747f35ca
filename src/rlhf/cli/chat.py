"""`rlhf chat`: talk to the policy, watching the reply arrive token by token.

Interactive by default: `/reset` forgets the conversation (keeps --system), `/quit` or
end of input (Ctrl-D) exits. `--message TEXT` (repeatable) sends the messages one after
another and exits, for scripts and tests. Each request carries the whole conversation,
so the model sees the earlier turns. After each reply a dim line gives the version and
request id (what `rlhf feedback` needs) unless --quiet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

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
    describe_rpc_error,
    fail,
    hint,
    new_request_id,
    pick_backend,
    version_hint,
)

USER_PROMPT = "you> "
ASSISTANT_PREFIX = "assistant> "


@dataclass
class Reply:
    """Where a streamed reply came from; filled in while it streams."""

    model_version: str = ""
    request_id: str = ""
    text: str = ""


# A back end: the conversation so far -> (reply metadata, pieces of the reply's text).
Backend = Callable[[list[dict[str, str]]], tuple[Reply, Iterator[str]]]


def _remote_backend(client, sampling: Sampling, model_version: str) -> Backend:  # noqa: ANN001
    """Streams from InferenceService.Chat through the client's stub.

    `Client.chat` yields only the text; the chunks also carry the serving version and
    request id, which the hint line and feedback need, so the stub is called directly.
    """
    from rlhf.v1 import inference_pb2

    params = inference_pb2.SamplingParams(**sampling.as_kwargs())

    def send(messages: list[dict[str, str]]) -> tuple[Reply, Iterator[str]]:
        request = inference_pb2.ChatRequest(
            version=model_version,
            messages=[inference_pb2.ChatMessage(**m) for m in messages],
            sampling=params,
        )
        reply = Reply()

        def pieces() -> Iterator[str]:
            for chunk in client.stub("inference").Chat(request, timeout=client.timeout):
                reply.model_version = chunk.model_version or reply.model_version
                reply.request_id = chunk.request_id or reply.request_id
                if chunk.delta:
                    yield chunk.delta

        return reply, pieces()

    return send


def _local_backend(local: LocalModel, sampling: Sampling) -> Backend:
    def send(messages: list[dict[str, str]]) -> tuple[Reply, Iterator[str]]:
        reply = Reply(model_version=local.version, request_id=new_request_id())
        return reply, local.stream_chat(messages, sampling)

    return send


@dataclass
class Conversation:
    """The history sent with every turn, and how one turn is shown."""

    backend: Backend
    system: str | None
    quiet: bool
    address: str
    history: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.history = [{"role": "system", "content": self.system}] if self.system else []

    def turn(self, text: str) -> tuple[str, int] | None:
        """Send one user message and stream the reply; (error, exit status) on failure.

        A failed turn leaves the history as it was, so the user can simply retry.
        """
        import grpc

        messages = [*self.history, {"role": "user", "content": text}]
        if not self.quiet:
            typer.echo(ASSISTANT_PREFIX, nl=False)
        reply, pieces = self.backend(messages)
        try:
            for piece in pieces:
                reply.text += piece
                typer.echo(piece, nl=False)
        except grpc.RpcError as exc:
            typer.echo()
            return describe_rpc_error(exc, self.address)
        typer.echo()
        self.history = [*messages, {"role": "assistant", "content": reply.text}]
        if not self.quiet:
            hint(version_hint(reply.model_version, reply.request_id))
        return None


def _interactive(conversation: Conversation) -> None:
    """Read lines until /quit or end of input; errors are shown and the chat goes on."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - line editing and history for input()
    if not conversation.quiet:
        hint("/reset starts over, /quit or Ctrl-D exits")
    while True:
        try:
            line = input(USER_PROMPT)
        except (EOFError, KeyboardInterrupt):
            typer.echo()
            return
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            return
        if text == "/reset":
            conversation.reset()
            hint("(conversation cleared)")
            continue
        try:
            failed = conversation.turn(text)
        except KeyboardInterrupt:  # stop this reply, keep chatting
            typer.echo()
            continue
        if failed is not None:
            typer.echo(f"error: {failed[0]}", err=True)


def app(
    messages: list[str] | None = typer.Option(
        None,
        "--message",
        "-M",
        help="Send this message, then the next; exit after the last (no prompt).",
    ),
    system: str | None = typer.Option(None, "--system", "-s", help="System message."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the replies, no hints."),
    inference: Inference = None,
    model: ModelDir = None,
    max_new_tokens: MaxNewTokens = 256,
    temperature: Temperature = 0.7,
    top_p: TopP = 1.0,
    seed: Seed = None,
    model_version: ModelVersion = "",
    token: Token = None,
    tls_ca: TlsCa = None,
    client_cert: ClientCert = None,
    client_key: ClientKey = None,
    timeout: Timeout = 300.0,
    device: Device = "cpu",
) -> None:
    """Chat with the policy (inference service or a local model), streaming replies."""
    for i, message in enumerate(messages or [], 1):
        if not message.strip():
            fail(f"--message {i} is empty")
    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    sampling.check()
    address = pick_backend(inference, model)
    client = None
    if address is None:
        import torch

        local = LocalModel.load(str(model), device)
        if seed is not None:
            torch.manual_seed(seed)
        backend = _local_backend(local, sampling)
    else:
        client = connect(address, token, tls_ca, client_cert, client_key, timeout)
        backend = _remote_backend(client, sampling, model_version)

    conversation = Conversation(backend, system, quiet, address or "")
    try:
        if not messages:
            _interactive(conversation)
            return
        for message in messages:
            if not quiet:
                typer.echo(USER_PROMPT + message)
            failed = conversation.turn(message)
            if failed is not None:
                fail(*failed)
    finally:
        if client is not None:
            client.close()
