"""`rlhf feedback`: record a judgement of a reply from the shell (InferenceService.RecordFeedback).

    rlhf feedback --request-id R --model-version V --response "..." --up
    rlhf feedback --request-id R --model-version V --response "..." --rating 4
    rlhf feedback --request-id R --model-version V --prompt P --chosen A --rejected B
    rlhf feedback --request-id R --model-version V --response "..." --label negative

The kind follows from the option given (or --kind names it). Input is checked here as
the service checks it, plus what the feedback data set needs to use the record (thumbs
and ratings without the response judged are dropped there), so mistakes are reported
before anything is sent. Exit status 2: bad input; 3: the service is unavailable.
"""

from __future__ import annotations

import json
from enum import StrEnum

import typer

from rlhf.cli._inference import (
    INFERENCE_ENV,
    ClientCert,
    ClientKey,
    Inference,
    Timeout,
    TlsCa,
    Token,
    connect,
    fail,
    pick_backend,
    rpc_failed,
)


class Kind(StrEnum):
    thumbs = "thumbs"
    rating = "rating"
    preference = "preference"
    label = "label"


def _kind(
    given: Kind | None,
    up: bool | None,
    rating: int | None,
    chosen: str | None,
    rejected: str | None,
    label: str | None,
) -> Kind:
    """The kind named by --kind, else the one whose option was given (exactly one)."""
    implied = [
        kind
        for kind, present in (
            (Kind.thumbs, up is not None),
            (Kind.rating, rating is not None),
            (Kind.preference, chosen is not None or rejected is not None),
            (Kind.label, label is not None),
        )
        if present
    ]
    if given is not None:
        others = [k.value for k in implied if k != given]
        if others:
            fail(f"--kind {given.value} does not take the options of {', '.join(others)}")
        return given
    if len(implied) > 1:
        fail(f"options of several kinds given ({', '.join(k.value for k in implied)}); pick one")
    if not implied:
        fail("say what the feedback is: --up/--down, --rating N, --chosen/--rejected or --label")
    return implied[0]


def validate(
    kind: Kind,
    request_id: str,
    model_version: str,
    prompt: str,
    response: str,
    up: bool | None,
    rating: int | None,
    chosen: str | None,
    rejected: str | None,
    label: str | None,
) -> None:
    """Exit 2 naming the first option that the service or the feedback data set rejects."""
    if not request_id.strip():
        fail("--request-id is required (the request id printed with the reply)")
    if not model_version.strip():
        fail("--model-version is required (the version printed with the reply)")
    if kind == Kind.thumbs and up is None:
        fail("--up or --down is required for thumbs feedback")
    if kind == Kind.rating and (rating is None or not 1 <= rating <= 5):
        fail(f"--rating must be in 1..5 (got {rating})")
    if kind in (Kind.thumbs, Kind.rating) and not response.strip():
        fail(f"--response is required for {kind.value} feedback (the reply being judged)")
    if kind == Kind.preference:
        if not (chosen or "").strip():
            fail("--chosen is required for preference feedback")
        if not (rejected or "").strip():
            fail("--rejected is required for preference feedback")
        if chosen == rejected:
            fail("--chosen and --rejected must differ")
    if kind == Kind.label:
        if not (label or "").strip():
            fail("--label is required for label feedback")
        if not (prompt.strip() or response.strip()):
            fail("--response (or --prompt) is required for label feedback: the text labelled")


def app(
    request_id: str = typer.Option("", "--request-id", help="Request id of the reply."),
    model_version: str = typer.Option(
        "", "--model-version", help="Version that produced the reply."
    ),
    kind: Kind | None = typer.Option(
        None, "--kind", help="Feedback kind (default: from the options given)."
    ),
    up: bool | None = typer.Option(
        None, "--up/--down", help="Thumbs up or down.", show_default=False
    ),
    rating: int | None = typer.Option(None, "--rating", help="Rating, 1 (bad) to 5 (good)."),
    chosen: str | None = typer.Option(None, "--chosen", help="The preferred response."),
    rejected: str | None = typer.Option(None, "--rejected", help="The other response."),
    label: str | None = typer.Option(None, "--label", help="The correct label for the text."),
    prompt: str = typer.Option("", "--prompt", help="The prompt of the reply."),
    response: str = typer.Option("", "--response", help="The reply being judged."),
    pipeline: str = typer.Option("", "--pipeline", help="Pipeline the feedback is for."),
    feedback_id: str | None = typer.Option(
        None, "--feedback-id", help="Idempotency key: retrying with the same id records once."
    ),
    inference: Inference = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    client_cert: ClientCert = None,
    client_key: ClientKey = None,
    timeout: Timeout = 30.0,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Record feedback on a reply: thumbs, a rating, a preference or a label."""
    resolved = _kind(kind, up, rating, chosen, rejected, label)
    validate(
        resolved, request_id, model_version, prompt, response, up, rating, chosen, rejected, label
    )
    address = pick_backend(inference, None)
    if address is None:  # pick_backend exits without an address; this is for type checkers
        fail(f"pass --inference HOST:PORT or set {INFERENCE_ENV}")
    fields = {
        "prompt": prompt,
        "response": response,
        "pipeline": pipeline,
        "thumbs_up": up if resolved == Kind.thumbs else None,
        "rating": rating if resolved == Kind.rating else None,
        "chosen": chosen if resolved == Kind.preference else None,
        "rejected": rejected if resolved == Kind.preference else None,
        "label": label if resolved == Kind.label else None,
    }
    if feedback_id:  # else the client makes one up, so the service can dedupe retries
        fields["feedback_id"] = feedback_id

    import grpc

    with connect(address, token, tls_ca, client_cert, client_key, timeout) as client:
        try:
            result = client.record_feedback(request_id, model_version, resolved.value, **fields)
        except grpc.RpcError as exc:
            rpc_failed(exc, address)
    if as_json:
        payload = {"feedback_id": result.feedback_id, "durable": result.durable}
        typer.echo(json.dumps({**payload, "kind": resolved.value}))
    else:
        state = "durable" if result.durable else "NOT durable: retry with the same --feedback-id"
        typer.echo(f"recorded {resolved.value} feedback {result.feedback_id} ({state})")
