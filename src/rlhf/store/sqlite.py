"""SQLite backend of `rlhf.store.Database`: one file, one connection per
instance behind a lock, WAL journal. A write transaction is `BEGIN IMMEDIATE`: it takes
the file's write lock at once, so it excludes every other writer (threads of this
process and other processes on the same file) until it commits."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from rlhf.store import Cursor, Database, Params, Transaction


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


class _SQLiteTransaction(Transaction):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        return self._conn.execute(sql, tuple(params))

    def lock(self, name: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the file's only write lock."""


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(
        self,
        path: Path | None,
        synchronous: Literal["NORMAL", "FULL"] = "FULL",
        timeout_s: float = 30.0,
    ) -> None:
        """`path` None: an in-memory database (gone with the process)."""
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(path) if path is not None else ":memory:",
            timeout=timeout_s,
            isolation_level=None,  # autocommit outside explicit transactions
            check_same_thread=False,
        )
        if path is not None:
            _enable_wal(self._conn)
            self._conn.execute(f"PRAGMA synchronous={synchronous}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteTransaction(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: Params = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"SQLiteDatabase({str(self.path) if self.path else ':memory:'})"
