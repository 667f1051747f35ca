"""Small JSON documents by key that several replicas read-modify-write: the trainer's
per-pipeline-run state (datasets, base policy, robustness reports, the hardened reward
model waiting for its robustness report) and its retraining windows, data prep's
registered sources and pipeline profiles, the reward service's pipeline datasets.

Events of one round may reach different replicas, so every update is one exclusive
read-merge-write of its key. `FileKeyedState` (the default) keeps one JSON file under an
exclusive `flock` on `<file>.lock` (a shared volume with POSIX locks across nodes);
`DatabaseKeyedState` keeps one row per key in the state database (`rlhf.store`,
PostgreSQL with `store.url`), the update under the key's lock in one transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlhf.store import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyed_state (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (scope, key)
)
"""


def merge(entry: dict, values: dict[str, Any]) -> dict:
    """`values` into `entry`: a dict value updates a dict already there, anything else
    replaces."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(entry.get(key), dict):
            entry[key].update(value)
        else:
            entry[key] = value
    return entry


class KeyedState(ABC):
    @abstractmethod
    def get(self, key: str) -> dict:
        """The document of `key` ({} when none)."""

    @abstractmethod
    def update(self, key: str, **values: Any) -> dict:
        """Merge `values` into `key`'s document (`merge`), atomically; returns it."""

    @abstractmethod
    def replace(self, key: str, document: dict) -> dict:
        """Set `key`'s document to `document`, atomically; returns the one it replaced
        ({} when none)."""

    @abstractmethod
    def items(self) -> dict[str, dict]:
        """Every document by its key."""

    def values(self) -> list[dict]:
        return list(self.items().values())

    def latest_for(self, pipeline: str) -> dict:
        """The newest document (by its `created`) of `pipeline`."""
        runs = [v for v in self.values() if v.get("pipeline") == pipeline]
        return max(runs, key=lambda v: v.get("created", 0)) if runs else {}


class FileKeyedState(KeyedState):
    """One JSON file; every access holds an exclusive `flock` on `<file>.lock`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock, open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, key: str) -> dict:
        with self._locked():
            return self._load().get(key, {})

    def _save(self, state: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle)
        os.replace(tmp, self.path)

    def update(self, key: str, **values: Any) -> dict:
        with self._locked():
            state = self._load()
            entry = merge(state.setdefault(key, {}), values)
            self._save(state)
            return entry

    def replace(self, key: str, document: dict) -> dict:
        with self._locked():
            state = self._load()
            previous = state.get(key, {})
            state[key] = document
            self._save(state)
            return previous

    def items(self) -> dict[str, dict]:
        with self._locked():
            return self._load()


class DatabaseKeyedState(KeyedState):
    """One row per key of `scope` (e.g. `trainer/pipelines`) in the state database."""

    def __init__(self, db: Database, scope: str) -> None:
        self._db = db
        self.scope = scope
        db.ensure_schema(_SCHEMA)

    def get(self, key: str) -> dict:
        rows = self._db.query(
            "SELECT value FROM keyed_state WHERE scope = ? AND key = ?", (self.scope, key)
        )
        return json.loads(rows[0][0]) if rows else {}

    def _change(self, key: str, change: Callable[[dict], dict]) -> tuple[dict, dict]:
        """(before, after) of one read-change-write of `key` under its lock."""
        with self._db.transaction() as tx:
            tx.lock(f"keyed-state/{self.scope}/{key}")
            row = tx.execute(
                "SELECT value FROM keyed_state WHERE scope = ? AND key = ?", (self.scope, key)
            ).fetchone()
            before = json.loads(row[0]) if row else {}
            after = change(json.loads(row[0]) if row else {})
            tx.execute(
                "INSERT INTO keyed_state (scope, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
                (self.scope, key, json.dumps(after)),
            )
        return before, after

    def update(self, key: str, **values: Any) -> dict:
        return self._change(key, lambda entry: merge(entry, values))[1]

    def replace(self, key: str, document: dict) -> dict:
        return self._change(key, lambda _: document)[0]

    def items(self) -> dict[str, dict]:
        rows = self._db.query("SELECT key, value FROM keyed_state WHERE scope = ?", (self.scope,))
        return {row[0]: json.loads(row[1]) for row in rows}

    def close(self) -> None:
        self._db.close()


def open_keyed_state(store_url: str | None, path: Path, scope: str) -> KeyedState:
    """The database's rows for `scope` when `store_url` is set, else the file `path`."""
    if store_url:
        from rlhf.store import open_database

        return DatabaseKeyedState(open_database(store_url), scope)
    return FileKeyedState(path)
