"""Durable record of handled events, so a redelivered event's effect happens once.

One row per (consumer group, ce_source, ce_id) in SQLite (WAL mode, one file shared by
every process that uses the same state directory). WAL with synchronous=NORMAL survives
a process crash, which is the failure redelivery is about; rows past the retention are
pruned when the store opens.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (
    grp TEXT NOT NULL,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (grp, source, id)
) WITHOUT ROWID
"""


def _enable_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch the file to WAL (persistent, so only the first opener changes it).

    Changing the journal mode needs an exclusive lock and SQLite's busy timeout does
    not cover it: when another process opens the same file at that moment the pragma
    fails with "database is locked" at once, so retry for a few seconds.
    """
    for attempt in range(attempts):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1)


class DedupeStore:
    """Thread-safe (one connection behind a lock); path None = in-memory only."""

    def __init__(self, path: Path | None, retention_s: float = 7 * 24 * 3600.0) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(path) if path is not None else ":memory:",
            timeout=30.0,
            isolation_level=None,  # autocommit: every record() is its own transaction
            check_same_thread=False,
        )
        if path is not None:
            _enable_wal(self._conn)
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)
        self._conn.execute("DELETE FROM processed WHERE at < ?", (time.time() - retention_s,))

    def seen(self, group: str, source: str, event_id: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM processed WHERE grp = ? AND source = ? AND id = ?",
                (group, source, event_id),
            ).fetchone()
        return row is not None

    def seen_many(self, group: str, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (source, id) pairs of `keys` already recorded for `group` (one query per 500)."""
        found: set[tuple[str, str]] = set()
        wanted = set(keys)
        ids = sorted({event_id for _, event_id in keys})
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = self._conn.execute(
                    "SELECT source, id FROM processed WHERE grp = ? AND id IN "
                    f"({','.join('?' * len(chunk))})",
                    (group, *chunk),
                ).fetchall()
                found.update(row for row in map(tuple, rows) if row in wanted)
        return found

    def record(self, group: str, source: str, event_id: str, outcome: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO processed (grp, source, id, outcome, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (group, source, event_id, outcome, time.time()),
            )

    def outcome(self, group: str, source: str, event_id: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT outcome FROM processed WHERE grp = ? AND source = ? AND id = ?",
                (group, source, event_id),
            ).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
