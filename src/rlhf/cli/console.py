"""`rlhf console`: the web console where people compare model versions, rate and label
responses, and operators promote and roll back versions (docs/console.md).

    rlhf console --tokens-file tokens.txt --inference localhost:50051 \\
        --trainer localhost:50051 --dataprep localhost:50051 --pipeline reviews-en

Exit status 2: a bad option or tokens file.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import typer

from rlhf.cli._inference import TOKEN_ENV


def app(
    tokens_file: Path = typer.Option(
        ...,
        "--tokens-file",
        envvar="RLHF_CONSOLE_TOKENS_FILE",
        help="Sign-in tokens, one `TOKEN USER_ID ROLE [EXPIRES]` a line; ROLE is labeller "
        "or operator (re-read when it changes).",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", envvar="RLHF_CONSOLE_HOST", help="Address to listen on."
    ),
    port: int = typer.Option(
        8080, "--port", min=0, max=65535, envvar="RLHF_CONSOLE_PORT", help="HTTP port."
    ),
    inference: str = typer.Option(
        ...,
        "--inference",
        "-i",
        envvar="RLHF_INFERENCE_ADDR",
        help="Inference service HOST:PORT (Generate, RecordFeedback).",
    ),
    trainer: str = typer.Option(
        ...,
        "--trainer",
        envvar="RLHF_TRAINER_ADDR",
        help="Trainer service HOST:PORT (models, runs, promote, roll back).",
    ),
    dataprep: str | None = typer.Option(
        None,
        "--dataprep",
        envvar="RLHF_DATAPREP_ADDR",
        help="Data prep service HOST:PORT (the prompt pool via GetDataset).",
    ),
    pipeline: str = typer.Option(
        "",
        "--pipeline",
        envvar="RLHF_CONSOLE_PIPELINE",
        help="Pipeline whose policy is compared and whose data sets are the prompt pool; "
        "feedback is recorded for it.",
    ),
    model: str = typer.Option(
        "", "--model", help="Policy model name to compare (default: <pipeline>-policy)."
    ),
    pool_dataset: str = typer.Option(
        "",
        "--pool-dataset",
        help="Data set whose texts are the prompt pool (default: the pipeline's data sets).",
    ),
    token: str | None = typer.Option(
        None, "--token", envvar=TOKEN_ENV, help="Bearer token for the gRPC services."
    ),
    tls_ca: Path | None = typer.Option(
        None, "--tls-ca", help="CA certificate that signed the services' (enables TLS)."
    ),
    client_cert: Path | None = typer.Option(None, "--client-cert", help="Client cert (mTLS)."),
    client_key: Path | None = typer.Option(None, "--client-key", help="Client key (mTLS)."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Seconds each call may take."),
    max_new_tokens: int = typer.Option(
        48, "--max-new-tokens", min=1, max=1024, help="Tokens per response."
    ),
    temperature: float = typer.Option(0.9, "--temperature", min=0.0, help="Sampling temperature."),
    session_ttl: float = typer.Option(
        8 * 3600, "--session-ttl", min=60, help="Seconds a sign-in lasts."
    ),
    secure_cookies: bool = typer.Option(
        False,
        "--secure-cookies/--no-secure-cookies",
        envvar="RLHF_CONSOLE_SECURE_COOKIES",
        help="Mark the session cookie Secure (set it when users reach the console over "
        "HTTPS, e.g. behind a TLS ingress).",
    ),
    retry_interval: float = typer.Option(
        5.0, "--retry-interval", min=0.1, help="Seconds between retries of queued feedback."
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="Python log level."),
) -> None:
    """Serve the web console (Compare, Rate / label, Versions, Runs)."""
    from rlhf.client import Client
    from rlhf.console import Backend, ConsoleApp, ConsoleServer, Sessions, TokenStore
    from rlhf.console.auth import TokensFileError

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    try:
        tokens = TokenStore(tokens_file)
    except (OSError, TokensFileError) as exc:
        typer.echo(f"error: --tokens-file: {exc}", err=True)
        raise typer.Exit(2) from None
    addresses = {"inference": inference, "trainer": trainer}
    if dataprep:
        addresses["dataprep"] = dataprep
    client = Client(
        token=token,
        tls_ca=tls_ca,
        client_cert=client_cert,
        client_key=client_key,
        timeout=timeout,
        **addresses,
    )
    backend = Backend(
        client,
        pipeline=pipeline,
        model=model,
        pool_dataset=pool_dataset,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        retry_interval_s=retry_interval,
    )
    console_app = ConsoleApp(
        backend, tokens, sessions=Sessions(ttl_s=session_ttl), secure_cookies=secure_cookies
    )
    try:
        server = ConsoleServer(console_app, host, port)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(2) from None
    backend.start()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    typer.echo(f"console: {server.url} (inference {inference}, trainer {trainer})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        backend.stop()
        client.close()
