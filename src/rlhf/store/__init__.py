"""The database behind the platform's durable shared state, with two backends.

Stores (the feedback store, the bus's dedupe record, the runs' claims and leases, the
keyed state of the trainer, data prep and the reward service, the model registry) are
written once against `Database` and run on either backend:

- SQLite (`rlhf.store.sqlite`): a file under the service's state directory, the
  default. Safe for one process per file (and for processes on one host); several
  replicas writing one file on a network volume rely on that filesystem's locks.
- PostgreSQL (`rlhf.store.postgres`): `store.url` (`RLHF_STORE__URL`) set to
  `postgresql://...`, for several replicas on several nodes.

The SQL is shared: `?` placeholders, `INSERT ... ON CONFLICT ... DO NOTHING / DO UPDATE`
(SQLite 3.24+), `DOUBLE PRECISION` for times. What differs is in the backends: how a
write transaction begins and what `Transaction.lock` does (SQLite: nothing, its write
transaction already excludes every other writer; PostgreSQL: a transaction-scoped
advisory lock on the name).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

Params = Sequence[Any]


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Transaction(ABC):
    """One write transaction: commits when the `with` block ends, rolls back on error."""

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> Cursor:
        """Run one statement (`?` placeholders) inside the transaction."""

    @abstractmethod
    def lock(self, name: str) -> None:
        """Hold `name` until the transaction ends: transactions locking the same name
        run one after the other, so a read-check-write under it happens once."""


class Database(ABC):
    """A connection to the state database, shared by a process's threads."""

    #: "sqlite" or "postgresql"
    dialect: str

    @abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        """A write transaction (`with db.transaction() as tx: tx.execute(...)`)."""

    @abstractmethod
    def query(self, sql: str, params: Params = ()) -> list[tuple]:
        """All rows of one read outside any transaction."""

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> int:
        """One write statement, atomic on its own (no transaction around it: one round
        trip, where `transaction()` costs three); the number of rows it changed."""

    @abstractmethod
    def close(self) -> None: ...

    def ensure_schema(self, schema: str) -> None:
        """Create the tables of `schema` (`;`-separated `CREATE ... IF NOT EXISTS`),
        once, even when several processes start together."""
        statements = [s.strip() for s in schema.split(";") if s.strip()]
        with self.transaction() as tx:
            tx.lock("rlhf-schema")
            for statement in statements:
                tx.execute(statement)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def open_database(target: str | Path | None, **sqlite_options: Any) -> Database:
    """A `postgresql://` URL opens PostgreSQL (psycopg 3, the `postgres` extra);
    anything else is a SQLite file path (None: in memory)."""
    if isinstance(target, str) and is_postgres_url(target):
        from rlhf.store.postgres import PostgresDatabase

        return PostgresDatabase(target)
    from rlhf.store.sqlite import SQLiteDatabase

    return SQLiteDatabase(Path(target) if target is not None else None, **sqlite_options)


def chunks(items: list, size: int = 500) -> Iterator[list]:
    """`items` in slices of `size`: SQLite caps the variables of one statement, so long
    IN lists are split (inside one transaction where it matters)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(n: int) -> str:
    """`?, ?, ...` for an IN list of `n` values."""
    return ",".join("?" * n)


__all__ = [
    "Cursor",
    "Database",
    "Transaction",
    "chunks",
    "is_postgres_url",
    "marks",
    "open_database",
]
