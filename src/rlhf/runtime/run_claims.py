"""Who owns a run, decided once across the replicas of a service (`RunManager`).

Two kinds of record, behind one interface:

- **claims**: a name taken once, by the first holder (`claim`): `request-<digest>` (the
  run a request id started), `<run_id>.<epoch>` (the replica that took a run over) and
  notes anyone may overwrite (`note`: `<run_id>.cancel`, a Cancel that reached a replica
  not running the run);
- **leases**: each replica renews its own every `lease_ttl_s / 3`; a replica whose lease
  is older than the TTL is dead and its runs may be taken over.

`FileRunClaims` (the default) keeps them as files in the run state directory: claims
are exclusive creates (`O_CREAT | O_EXCL`), leases are file times, which needs a shared
volume with exclusive creates across nodes. `DatabaseRunClaims` keeps them in the state
database (`rlhf.store`; PostgreSQL with `store.url`): a claim is an `INSERT ...
ON CONFLICT DO NOTHING` on its primary key, so exactly one replica's insert wins.
Lease times there are the writing replica's clock (`time.time()`), so the nodes'
clocks must agree to well within the TTL (NTP does).
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from pathlib import Path

from rlhf.store import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_claims (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    holder TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE TABLE IF NOT EXISTS run_leases (
    scope TEXT NOT NULL,
    replica TEXT NOT NULL,
    renewed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, replica)
)
"""


class RunClaims(ABC):
    @abstractmethod
    def claim(self, name: str, holder: str) -> str:
        """Take `name` for `holder` unless someone holds it: the holder on record after
        the call (`holder` when this call won)."""

    @abstractmethod
    def holder(self, name: str) -> str | None:
        """Who holds `name` (None: nobody)."""

    @abstractmethod
    def note(self, name: str, text: str) -> None:
        """Set `name` to `text`, whoever held it (last writer wins)."""

    @abstractmethod
    def renew(self, replica: str, at: float | None = None) -> None:
        """`replica` is alive (at `at`, default now)."""

    @abstractmethod
    def lease_age(self, replica: str) -> float | None:
        """Seconds since `replica` last renewed its lease (None: never)."""


class FileRunClaims(RunClaims):
    """Claims as files in `<state_dir>/claims`, leases as `<state_dir>/replicas/<id>`."""

    def __init__(self, state_dir: Path) -> None:
        self.claims_dir = Path(state_dir) / "claims"
        self.leases_dir = Path(state_dir) / "replicas"
        self.claims_dir.mkdir(parents=True, exist_ok=True)
        self.leases_dir.mkdir(parents=True, exist_ok=True)

    def claim(self, name: str, holder: str) -> str:
        path = self.claims_dir / name
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            for _ in range(100):  # the winner writes its holder right after creating
                winner = path.read_text().strip()
                if winner:
                    return winner
                time.sleep(0.05)
            return holder  # an empty claim: its writer died in between; go ahead
        with os.fdopen(fd, "w") as handle:
            handle.write(holder)
        return holder

    def holder(self, name: str) -> str | None:
        path = self.claims_dir / name
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            return None

    def note(self, name: str, text: str) -> None:
        (self.claims_dir / name).write_text(text)

    def renew(self, replica: str, at: float | None = None) -> None:
        lease = self.leases_dir / replica
        lease.touch()
        if at is not None:
            os.utime(lease, (at, at))

    def lease_age(self, replica: str) -> float | None:
        try:
            return time.time() - (self.leases_dir / replica).stat().st_mtime
        except (OSError, ValueError):
            return None


class DatabaseRunClaims(RunClaims):
    """Claims and leases as rows of the state database, per `scope` (the service)."""

    def __init__(self, db: Database, scope: str) -> None:
        self._db = db
        self.scope = scope
        db.ensure_schema(_SCHEMA)

    def claim(self, name: str, holder: str) -> str:
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO run_claims (scope, name, holder, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (scope, name) DO NOTHING",
                (self.scope, name, holder, time.time()),
            )
            row = tx.execute(
                "SELECT holder FROM run_claims WHERE scope = ? AND name = ?", (self.scope, name)
            ).fetchone()
        return row[0]

    def holder(self, name: str) -> str | None:
        rows = self._db.query(
            "SELECT holder FROM run_claims WHERE scope = ? AND name = ?", (self.scope, name)
        )
        return rows[0][0] if rows else None

    def note(self, name: str, text: str) -> None:
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO run_claims (scope, name, holder, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (scope, name) DO UPDATE "
                "SET holder = excluded.holder, at = excluded.at",
                (self.scope, name, text, time.time()),
            )

    def renew(self, replica: str, at: float | None = None) -> None:
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO run_leases (scope, replica, renewed_at) VALUES (?, ?, ?) "
                "ON CONFLICT (scope, replica) DO UPDATE SET renewed_at = excluded.renewed_at",
                (self.scope, replica, time.time() if at is None else at),
            )

    def lease_age(self, replica: str) -> float | None:
        rows = self._db.query(
            "SELECT renewed_at FROM run_leases WHERE scope = ? AND replica = ?",
            (self.scope, replica),
        )
        return time.time() - rows[0][0] if rows else None

    def close(self) -> None:
        self._db.close()
