"""Bearer tokens read from a file (one per line), e.g. a mounted Kubernetes Secret.

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
from pathlib import Path

log = logging.getLogger(__name__)


class TokenFile:
    """The set of valid bearer tokens, kept in step with a file.

    Lines are stripped; blank lines and lines starting with `#` are ignored. A file
    that disappears at runtime leaves no valid token (fail closed) until it returns.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._tokens: list[bytes] = []
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
        lines = self.path.read_text().splitlines()
        tokens = [line.strip() for line in lines]
        self._tokens = [t.encode() for t in tokens if t and not t.startswith("#")]
        self._signature = signature
        if not self._tokens:
            log.warning(
                "auth tokens file %s holds no token; every call will be rejected", self.path
            )
        else:
            log.info("loaded %d bearer token(s) from %s", len(self._tokens), self.path)

    def is_valid(self, token: str) -> bool:
        """True when `token` equals one of the file's tokens (constant-time compare)."""
        with self._lock:
            self._reload()
            candidates = list(self._tokens)
        presented = token.encode()
        matched = False
        for known in candidates:
            # No early exit: the loop costs the same whichever token matches.
            matched |= hmac.compare_digest(presented, known)
        return matched


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
