"""pytest plugin: a real PostgreSQL server for the state-store tests.

`postgres_server` (session scope) runs `initdb` into a temporary directory and starts
`postgres` on a free loopback port (password authentication, a superuser with a random
password), once per session; `postgres_url` gives each test a fresh database of its own
on it. `state_db` is parametrised over both backends of `rlhf.store`: it returns
a function opening a new connection (a new `Database`) to the test's one database, so a
test can hold two as two replicas would.

Binaries: $RLHF_POSTGRES_BIN (a directory), else .cache/bin ($RLHF_TOOLS_BIN, where
scripts/setup.d/15-postgres.sh links them), else PATH. Without them the postgres tests
are skipped, naming what is missing; under CI (env CI set) they fail instead.
PostgreSQL refuses to run as root: as root the server runs as $RLHF_POSTGRES_USER
(default `postgres`, the Debian package's user, else `nobody`), owning its directory.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BINARIES = ("initdb", "pg_ctl", "postgres")


def find_postgres_bin() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    candidates = []
    if os.environ.get("RLHF_POSTGRES_BIN"):
        candidates.append(Path(os.environ["RLHF_POSTGRES_BIN"]))
    candidates.append(Path(os.environ.get("RLHF_TOOLS_BIN", REPO_ROOT / ".cache" / "bin")))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in BINARIES):
            return directory
    return None


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    version: str

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"


_SERVER: PostgresServer | None = None


def _server_user() -> str | None:
    """The unprivileged user to run the server as when the tests run as root."""
    if os.geteuid() != 0:
        return None
    import pwd

    wanted = os.environ.get("RLHF_POSTGRES_USER")
    for name in [wanted] if wanted else ["postgres", "nobody"]:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    pytest.fail("running as root and neither the postgres nor the nobody user exists")


def _run(command: list[str], user: str | None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, user=user)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command[:3])} ... failed:\n{result.stdout}{result.stderr}")
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    global _SERVER
    bindir = find_postgres_bin()
    if bindir is None:
        why = (
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in "
            "$RLHF_POSTGRES_BIN, .cache/bin or PATH: run scripts/setup.d/15-postgres.sh"
        )
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        message = "psycopg is not installed: pip install -e '.[postgres]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="rlhf-pg-"))
    data, password = root / "data", secrets.token_hex(16)
    (root / "pw").write_text(password)
    if user is not None:
        shutil.chown(root, user)
        shutil.chown(root / "pw", user)
    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "rlhf",
            "--pwfile",
            str(root / "pw"),
            "--auth",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
        ],
        user,
    )
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=200"
    _run(
        [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options]
        + ["-w", "-t", "60", "start"],
        user,
    )
    try:
        version = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        _SERVER = PostgresServer("127.0.0.1", port, "rlhf", password, version)
        yield _SERVER
    finally:
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            user=user,
        )
        shutil.rmtree(root, ignore_errors=True)


_DB_NUMBERS = itertools.count()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server (dropped after the test)."""
    import psycopg

    name = f"t{os.getpid()}_{next(_DB_NUMBERS)}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_server.url(name)
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def state_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the test's state database lives: a SQLite file path or a postgresql:// URL."""
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def state_db(state_target: str) -> Iterator[Callable]:
    """Opens a new connection (`Database`) to the test's state database on each call."""
    from rlhf.store import open_database

    opened = []

    def open_one():
        db = open_database(state_target)
        opened.append(db)
        return db

    yield open_one
    for db in opened:
        db.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SERVER is not None:
        terminalreporter.write_line(
            f"postgres: {_SERVER.version} at {_SERVER.host}:{_SERVER.port} (initdb, this session)"
        )
