"""Sign-in tokens, roles and sessions of the console.

The tokens file has one person per line: `TOKEN USER_ID ROLE [EXPIRES]` (whitespace
separated; blank lines and `#` comments ignored). ROLE is `labeller` or `operator`;
EXPIRES, when given, is an ISO 8601 date or time (UTC when no zone is given) after
which the token no longer signs in. The file is re-read when it changes, and every
request re-checks its session's token against it, so removing a line signs that
person out at once.

Only SHA-256 digests of tokens are kept in memory; sessions never hold the token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

ROLES = ("labeller", "operator")
SESSION_COOKIE = "rlhf_console"


class TokensFileError(ValueError):
    """A malformed tokens file (the message names the line)."""


@dataclass(frozen=True)
class User:
    id: str
    role: str
    expires_at: float | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _parse_expiry(text: str, where: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise TokensFileError(f"{where}: expiry {text!r} is not an ISO 8601 date/time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_tokens(text: str, source: str = "<tokens>") -> dict[str, User]:
    """token digest -> User."""
    users: dict[str, User] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        parts = line.split()
        if len(parts) not in (3, 4):
            raise TokensFileError(f"{where}: expected `TOKEN USER_ID ROLE [EXPIRES]`")
        token, user_id, role = parts[:3]
        if role not in ROLES:
            raise TokensFileError(f"{where}: role {role!r} must be one of {', '.join(ROLES)}")
        if len(token) < 16:
            raise TokensFileError(f"{where}: tokens must be at least 16 characters")
        expires = _parse_expiry(parts[3], where) if len(parts) == 4 else None
        users[token_digest(token)] = User(user_id, role, expires)
    return users


class TokenStore:
    """The tokens file, re-read when its modification time or size changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._users: dict[str, User] = {}
        self._load()  # a bad file at start-up is an error (the caller reports it)

    def _load(self) -> None:
        stat = self.path.stat()
        self._users = parse_tokens(self.path.read_text(encoding="utf-8"), str(self.path))
        self._stamp = (stat.st_mtime, stat.st_size)

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except OSError:
            if self._users:
                log.warning("tokens file %s is gone: nobody can sign in", self.path)
            self._users, self._stamp = {}, None
            return
        if (stat.st_mtime, stat.st_size) != self._stamp:
            try:
                self._load()
            except (OSError, TokensFileError) as exc:  # keep nobody signed in on a bad file
                log.error("tokens file %s: %s; nobody can sign in until fixed", self.path, exc)
                self._users, self._stamp = {}, None

    def user_for_digest(self, digest: str, now: float | None = None) -> User | None:
        with self._lock:
            self._refresh()
            user = self._users.get(digest)
        if user is None:
            return None
        if user.expires_at is not None and (now or time.time()) >= user.expires_at:
            return None
        return user

    def authenticate(self, token: str) -> tuple[User, str] | None:
        """(user, token digest) for a valid, unexpired token; None otherwise."""
        token = token.strip()
        if not token:
            return None
        digest = token_digest(token)
        user = self.user_for_digest(digest)
        # The dict lookup above is keyed by a hash of the token; compare once more in
        # constant time so a hit and a miss cost the same.
        if user is None or not hmac.compare_digest(digest, token_digest(token)):
            return None
        return user, digest


@dataclass
class Session:
    id: str
    csrf: str
    expires_at: float
    token_digest: str = ""
    user_id: str = ""
    last_seen: float = field(default_factory=time.time)

    @property
    def signed_in(self) -> bool:
        return bool(self.token_digest)


class Sessions:
    """Server-side sessions: the cookie carries a random id, nothing else."""

    def __init__(self, ttl_s: float = 8 * 3600, max_sessions: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def new(self, token_digest: str = "", user_id: str = "") -> Session:
        now = time.time()
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires_at=now + self.ttl_s,
            token_digest=token_digest,
            user_id=user_id,
        )
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                self._prune(now)
            if len(self._sessions) >= self.max_sessions:  # drop the least recently seen
                oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
                del self._sessions[oldest.id]
            self._sessions[session.id] = session
        return session

    def _prune(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[sid]

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        now = time.time()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if session.expires_at <= now:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)


def csrf_ok(session: Session | None, submitted: str) -> bool:
    return (
        session is not None
        and bool(submitted)
        and hmac.compare_digest(session.csrf.encode(), submitted.encode())
    )
