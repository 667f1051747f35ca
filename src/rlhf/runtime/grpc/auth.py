"""Bearer tokens read from a file (one per line), e.g. a mounted Kubernetes Secret.

Each line is a token, optionally followed by its role (`feedback`, `operator`,
`admin`), a name for the audit log, and the services that accept it:

    3f9c...e1  feedback  console        services=inference
    a77b...02  operator  ci-pipeline    services=dataprep,trainer
    c0de...99                           # a bare token: admin everywhere

The file is stat'ed on every check and re-read when it changed, so rotating the Secret
takes effect without a restart (Kubernetes swaps the mounted files atomically). Tokens
are compared with `hmac.compare_digest` against every known token, so neither the
result nor the time taken tells which token came close.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


#: Roles, weakest first; each may do what the ones before it may.
ROLES = ("feedback", "operator", "admin")


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to: a name for the audit log, a role, and the services
    (short names: dataprep, trainer, reward, adversary, inference) that accept it
    (None: every service)."""

    name: str
    role: str
    services: frozenset[str] | None = None


def parse_token_line(line: str, number: int) -> tuple[bytes, Principal]:
    """`<token> [<role> [<name>]] [services=a,b]`; a token alone is an admin token
    (the format of earlier releases)."""
    token, *rest = line.split()
    services = None
    words = []
    for word in rest:
        if word.startswith("services="):
            services = frozenset(w for w in word.removeprefix("services=").split(",") if w)
        else:
            words.append(word)
    role = words[0] if words else "admin"
    if role not in ROLES:
        raise ValueError(f"line {number}: role {role!r} is not one of {', '.join(ROLES)}")
    name = words[1] if len(words) > 1 else f"token-{number}"
    return token.encode(), Principal(name, role, services)


class TokenFile:
    """The valid bearer tokens and their principals, kept in step with a file.

    Lines are stripped; blank lines and lines starting with `#` are ignored. A file
    that disappears at runtime leaves no valid token (fail closed) until it returns;
    a line with an unknown role is skipped (and logged), never read as admin.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._tokens: list[tuple[bytes, Principal]] = []
        self._reload()
        if self._signature is None:
            raise FileNotFoundError(f"auth tokens file {self.path} does not exist")

    def _reload(self) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            if self._signature is not None:
                log.error("auth tokens file %s disappeared; rejecting every token", self.path)
            self._signature, self._tokens = None, []
            return
        signature = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        if signature == self._signature:
            return
        tokens = []
        for number, raw in enumerate(self.path.read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                tokens.append(parse_token_line(line, number))
            except ValueError as exc:
                log.error("auth tokens file %s: %s; line skipped", self.path, exc)
        self._tokens = tokens
        self._signature = signature
        if not self._tokens:
            log.warning(
                "auth tokens file %s holds no token; every call will be rejected", self.path
            )
        else:
            log.info("loaded %d bearer token(s) from %s", len(self._tokens), self.path)

    def lookup(self, token: str) -> Principal | None:
        """The principal of `token`, or None (constant-time compare against every
        known token, with no early exit)."""
        with self._lock:
            self._reload()
            candidates = list(self._tokens)
        presented = token.encode()
        found = None
        for known, principal in candidates:
            if hmac.compare_digest(presented, known):
                found = principal
        return found

    def is_valid(self, token: str) -> bool:
        """True when `token` equals one of the file's tokens."""
        return self.lookup(token) is not None


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` header, or None."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode() if isinstance(value, bytes) else value
        scheme, _, token = text.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None
