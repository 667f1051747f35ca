"""`rlhf generate`, `rlhf chat`, `rlhf feedback` against a real gRPC server and a tiny
local model.

The server is an in-process grpc server with a fake InferenceService that records every
request, so the tests see what actually went over the wire (history, token, feedback
fields); the local back end runs a tiny random Llama saved with save_pretrained.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import pytest
import torch
import typer
from typer.testing import CliRunner

from rlhf.cli import chat, feedback, generate
from rlhf.engine.models import tiny_causal_lm, tiny_char_tokenizer
from rlhf.runtime.ports import free_port
from rlhf.v1 import events_pb2, inference_pb2, inference_pb2_grpc

VERSION = "policy-v7"


class FakeInference(inference_pb2_grpc.InferenceServiceServicer):
    """Answers deterministically and keeps each request with its bearer token."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, object, str]] = []  # (rpc, request, authorization)
        self.lock = threading.Lock()

    def _keep(self, rpc: str, request, context) -> int:  # noqa: ANN001
        auth = dict(context.invocation_metadata()).get("authorization", "")
        with self.lock:
            self.requests.append((rpc, request, auth))
            return len(self.requests)

    def calls(self, rpc: str) -> list:
        return [request for name, request, _ in self.requests if name == rpc]

    def Generate(self, request, context):  # noqa: N802, ANN001, ANN201
        n = self._keep("Generate", request, context)
        completions = [
            f" -> continued #{i} (max {request.sampling.max_new_tokens})"
            for i, _ in enumerate(request.prompts)
        ]
        return inference_pb2.GenerateResponse(
            completions=completions, model_version=VERSION, request_id=f"gen-{n}"
        )

    def Chat(self, request, context):  # noqa: N802, ANN001, ANN201
        n = self._keep("Chat", request, context)
        users = [m.content for m in request.messages if m.role == "user"]
        reply = f"you said {users[-1]!r} (turn {len(users)})"
        for start in range(0, len(reply), 5):  # several chunks, as a real stream
            yield inference_pb2.ChatChunk(
                delta=reply[start : start + 5], model_version=VERSION, request_id=f"chat-{n}"
            )
        yield inference_pb2.ChatChunk(done=True, model_version=VERSION, request_id=f"chat-{n}")

    def RecordFeedback(self, request, context):  # noqa: N802, ANN001, ANN201
        self._keep("RecordFeedback", request, context)
        if request.kind == events_pb2.FEEDBACK_KIND_RATING and not 1 <= request.rating <= 5:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"rating: must be in 1..5 (got {request.rating})"
            )
        return inference_pb2.RecordFeedbackResponse(
            feedback_id=request.feedback_id or "fb-generated", durable=True
        )


@pytest.fixture(scope="module")
def server():
    servicer = FakeInference()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, grpc_server)
    port = free_port()
    grpc_server.add_insecure_port(f"127.0.0.1:{port}")
    grpc_server.start()
    servicer.address = f"127.0.0.1:{port}"
    yield servicer
    grpc_server.stop(grace=None)


@pytest.fixture
def fake(server):
    server.requests.clear()
    return server


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tokenizer = tiny_char_tokenizer()
    lm = tiny_causal_lm(len(tokenizer), hidden_size=32, num_layers=1, num_heads=2)
    directory = tmp_path_factory.mktemp("tiny-policy")
    lm.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _runner(command):  # noqa: ANN001, ANN202
    app = typer.Typer()
    app.command()(command)

    def run(*args, input: str | None = None, env: dict | None = None):  # noqa: A002
        env = {"RLHF_INFERENCE_ADDR": "", "RLHF_TOKEN": "", **(env or {})}
        return CliRunner().invoke(app, [str(a) for a in args], input=input, env=env)

    return run


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


run_generate = _runner(generate.app)
run_chat = _runner(chat.app)
run_feedback = _runner(feedback.app)


# --- generate ----------------------------------------------------------------------


def test_generate_prints_completions_with_version_and_request_id(fake):
    result = run_generate("The movie was", "The plot", "-i", fake.address, "--max-new-tokens", 9)
    assert result.exit_code == 0, result.output
    assert "The movie was -> continued #0 (max 9)" in result.stdout
    assert "The plot -> continued #1 (max 9)" in result.stdout
    assert result.stdout.count(f"[version {VERSION} · request gen-1]") == 2
    (request,) = fake.calls("Generate")
    assert list(request.prompts) == ["The movie was", "The plot"]
    assert request.sampling.max_new_tokens == 9


def test_generate_json_one_object_per_prompt_from_file_and_env(fake, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\nsecond prompt\n")
    result = run_generate(
        "--file",
        prompts,
        "--json",
        "--temperature",
        0,
        "--seed",
        5,
        "--token",
        "sesame",
        env={"RLHF_INFERENCE_ADDR": fake.address},
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == [
        {
            "prompt": "first prompt",
            "completion": " -> continued #0 (max 64)",
            "model_version": VERSION,
            "request_id": "gen-1",
        },
        {
            "prompt": "second prompt",
            "completion": " -> continued #1 (max 64)",
            "model_version": VERSION,
            "request_id": "gen-1",
        },
    ]
    ((_, request, auth),) = fake.requests
    assert (request.sampling.temperature, request.sampling.seed) == (0.0, 5)
    assert auth == "Bearer sesame"


def test_generate_local_model(model_dir):
    result = run_generate(
        "Hello", "Hi there", "--model", model_dir, "--json", "--max-new-tokens", 6, "--seed", 0
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["Hello", "Hi there"]
    assert all(r["model_version"] == f"local:{model_dir.name}" for r in rows)
    assert all(len(r["completion"]) <= 6 and len(r["request_id"]) == 32 for r in rows)
    greedy = [
        run_generate("Hello", "--model", model_dir, "--json", "--max-new-tokens", 6, "-t", 0)
        for _ in range(2)
    ]
    assert [json.loads(g.stdout)["completion"] for g in greedy] == [
        json.loads(greedy[0].stdout)["completion"]
    ] * 2


def test_generate_bad_input_exits_2_naming_the_option(fake, model_dir):
    result = run_generate("x", "-i", fake.address, "--top-p", 0)
    assert result.exit_code == 2
    assert "--top-p must be in (0, 1]" in result.output
    result = run_generate("x", "-i", fake.address, "--model", model_dir)
    assert result.exit_code == 2
    assert "either --inference or --model" in result.output
    result = run_generate("x")
    assert result.exit_code == 2
    assert "RLHF_INFERENCE_ADDR" in result.output
    result = run_generate("x", "--model", model_dir.parent / "nope")
    assert result.exit_code == 2
    assert "no such directory" in result.output
    assert fake.requests == []


def test_generate_against_a_stopped_server_exits_3():
    address = f"127.0.0.1:{free_port()}"
    result = run_generate("hello", "-i", address, "--timeout", 5)
    assert result.exit_code == 3, result.output
    assert f"the inference service at {address} is unavailable" in result.output


# --- chat --------------------------------------------------------------------------


def test_chat_streams_and_keeps_history(fake):
    result = run_chat(
        "-i", fake.address, "--system", "be brief", "--message", "hi", "--message", "and again?"
    )
    assert result.exit_code == 0, result.output
    assert "assistant> you said 'hi' (turn 1)\n" in result.stdout
    assert "assistant> you said 'and again?' (turn 2)\n" in result.stdout
    assert f"[version {VERSION} · request chat-2]" in result.stdout
    first, second = fake.calls("Chat")
    assert [(m.role, m.content) for m in first.messages] == [("system", "be brief"), ("user", "hi")]
    assert [(m.role, m.content) for m in second.messages] == [
        ("system", "be brief"),
        ("user", "hi"),
        ("assistant", "you said 'hi' (turn 1)"),
        ("user", "and again?"),
    ]


def test_chat_interactive_reset_and_quit(fake):
    result = run_chat("-i", fake.address, "--quiet", input="one\n/reset\ntwo\n/quit\nnever sent\n")
    assert result.exit_code == 0, result.output
    assert "you said 'one' (turn 1)" in result.stdout
    assert "you said 'two' (turn 1)" in result.stdout  # /reset forgot turn one
    assert "version" not in result.stdout
    assert [m.content for m in fake.calls("Chat")[1].messages] == ["two"]
    assert len(fake.calls("Chat")) == 2
    eof = run_chat("-i", fake.address, "--quiet", input="only\n")  # end of input exits
    assert eof.exit_code == 0
    assert "you said 'only'" in eof.stdout


def test_chat_quiet_prints_only_replies(fake):
    result = run_chat("-i", fake.address, "-q", "-M", "a", "-M", "b")
    assert result.exit_code == 0, result.output
    assert result.stdout == "you said 'a' (turn 1)\nyou said 'b' (turn 2)\n"


def test_chat_local_model_streams_with_the_chat_template(model_dir, monkeypatch):
    from rlhf.cli import _inference

    seen: list[list[dict]] = []
    original = _inference.LocalModel.chat_inputs

    def spy(self, messages):  # noqa: ANN001, ANN202
        seen.append(list(messages))
        return original(self, messages)

    monkeypatch.setattr(_inference.LocalModel, "chat_inputs", spy)
    result = run_chat(
        "--model", model_dir, "-M", "hello", "-M", "more", "--max-new-tokens", 5, "--seed", 1
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("assistant> ") == 2
    assert result.stdout.count(f"[version local:{model_dir.name} · request ") == 2
    assert [m["role"] for m in seen[1]] == ["user", "assistant", "user"]
    assert seen[1][0]["content"] == "hello" and seen[1][2]["content"] == "more"


def test_chat_against_a_stopped_server_exits_3():
    address = f"127.0.0.1:{free_port()}"
    result = run_chat("-i", address, "-M", "hello", "--timeout", 5)
    assert result.exit_code == 3, result.output
    assert f"the inference service at {address} is unavailable" in result.output


def test_chat_empty_message_exits_2(fake):
    result = run_chat("-i", fake.address, "-M", "  ")
    assert result.exit_code == 2
    assert "--message 1 is empty" in result.output
    assert fake.requests == []


# --- feedback ----------------------------------------------------------------------

BASE = ("--request-id", "gen-1", "--model-version", VERSION, "--prompt", "The movie was")


@pytest.mark.parametrize(
    ("args", "kind", "fields"),
    [
        (
            ["--response", "great", "--up"],
            events_pb2.FEEDBACK_KIND_THUMBS,
            {"thumbs_up": True, "response": "great"},
        ),
        (
            ["--response", "dull", "--down", "--pipeline", "sentiment-en"],
            events_pb2.FEEDBACK_KIND_THUMBS,
            {"thumbs_up": False, "response": "dull", "pipeline": "sentiment-en"},
        ),
        (
            ["--response", "fine", "--rating", "4"],
            events_pb2.FEEDBACK_KIND_RATING,
            {"rating": 4, "response": "fine"},
        ),
        (
            ["--chosen", "good", "--rejected", "bad"],
            events_pb2.FEEDBACK_KIND_PREFERENCE,
            {"chosen": "good", "rejected": "bad"},
        ),
        (
            ["--kind", "label", "--response", "meh", "--label", "negative"],
            events_pb2.FEEDBACK_KIND_LABEL,
            {"label": "negative", "response": "meh"},
        ),
    ],
)
def test_feedback_each_kind_arrives_with_its_fields(fake, args, kind, fields):
    result = run_feedback(*BASE, *args, "-i", fake.address, "--feedback-id", "fb-42")
    assert result.exit_code == 0, result.output
    assert "feedback fb-42 (durable)" in result.stdout
    ((_, request, _),) = fake.requests
    assert request.kind == kind
    assert (request.request_id, request.model_version) == ("gen-1", VERSION)
    assert request.prompt == "The movie was"
    assert request.feedback_id == "fb-42"
    for name, value in fields.items():
        assert getattr(request, name) == value, name


def test_feedback_json_and_token(fake):
    result = run_feedback(
        *BASE,
        "--response",
        "ok",
        "--up",
        "--json",
        env={"RLHF_INFERENCE_ADDR": fake.address, "RLHF_TOKEN": "t0k"},
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["durable"] is True and payload["kind"] == "thumbs"
    ((_, request, auth),) = fake.requests
    assert payload["feedback_id"] == request.feedback_id != ""
    assert auth == "Bearer t0k"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--response", "r", "--rating", "7"], "--rating must be in 1..5 (got 7)"),
        (["--response", "r", "--rating", "0"], "--rating must be in 1..5 (got 0)"),
        (["--chosen", "same", "--rejected", "same"], "--chosen and --rejected must differ"),
        (["--chosen", "only"], "--rejected is required"),
        (["--up"], "--response is required for thumbs feedback"),
        (["--kind", "label", "--response", "r"], "--label is required"),
        (["--response", "r"], "say what the feedback is"),
        (["--response", "r", "--up", "--rating", "5"], "several kinds"),
        (["--kind", "rating", "--response", "r", "--up"], "does not take the options of thumbs"),
    ],
)
def test_feedback_bad_input_exits_2_before_sending(fake, args, message):
    result = run_feedback(*BASE, *args, "-i", fake.address)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert fake.requests == []


def test_feedback_missing_request_id_exits_2(fake):
    result = run_feedback("--model-version", VERSION, "--response", "r", "--up", "-i", fake.address)
    assert result.exit_code == 2
    assert "--request-id is required" in result.output


def test_feedback_server_invalid_argument_exits_2_with_its_details(fake, monkeypatch):
    """The server's own check (here: rating 7) is reported as `error: <details>`."""
    monkeypatch.setattr(feedback, "validate", lambda *args: None)
    result = run_feedback(*BASE, "--response", "r", "--rating", "7", "-i", fake.address)
    assert result.exit_code == 2, result.output
    assert "error: rating: must be in 1..5 (got 7)" in result.output
    assert [r.rating for r in fake.calls("RecordFeedback")] == [7]


def test_feedback_against_a_stopped_server_exits_3():
    address = f"127.0.0.1:{free_port()}"
    result = run_feedback(*BASE, "--response", "r", "--up", "-i", address, "--timeout", 5)
    assert result.exit_code == 3, result.output
    assert f"error: the inference service at {address} is unavailable" in result.output


def test_registered_in_the_rlhf_command():
    proc = subprocess.run(
        [sys.executable, "-c", "from rlhf.cli import main; main()", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("generate", "chat", "feedback"):
        assert f" {name} " in proc.stdout
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; import rlhf.cli.generate, rlhf.cli.chat, rlhf.cli.feedback; "
            "print([m for m in ('torch', 'transformers', 'grpc') if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.stdout.strip() == "[]", imported.stderr  # `rlhf --help` stays fast


def test_chat_prints_each_piece_as_it_arrives(capsys):
    """Streaming, not buffering: every piece is on stdout before the next is produced."""
    shown: list[str] = []

    def backend(messages):  # noqa: ANN001, ANN202
        def pieces():  # noqa: ANN202
            for piece in ("Hel", "lo ", "there"):
                yield piece
                shown.append(capsys.readouterr().out)

        return chat.Reply(model_version="v1", request_id="r1"), pieces()

    conversation = chat.Conversation(backend, None, quiet=True, address="local")
    assert conversation.turn("hi") is None
    assert shown == ["Hel", "lo ", "there"]
    assert conversation.history[-1] == {"role": "assistant", "content": "Hello there"}
