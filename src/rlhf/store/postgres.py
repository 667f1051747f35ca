"""PostgreSQL backend of `rlhf.store.Database` (psycopg 3, the `postgres`
extra), for state that replicas on several nodes write.

One connection per instance, shared by the process's threads behind a lock (the
statements are short); a broken connection (a restarted server) is replaced on the next
use, and the statement that saw it fails, so the caller's retry (a redelivered event, a
client's retry) runs again. Transactions run at READ COMMITTED; a store makes a
read-check-write exclusive with `Transaction.lock(name)`, a transaction-scoped advisory
lock, and relies on primary keys with `ON CONFLICT` for one-row decisions. The URL
carries the credentials (or libpq's `PGPASSWORD`/`PGPASSFILE`); it is never logged.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from rlhf.store import Cursor, Database, Params, Transaction

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "store.url names PostgreSQL but psycopg is not installed: "
        "pip install 'rlhf-platform[postgres]'"
    ) from exc


def _sql(statement: str) -> str:
    """The shared dialect's `?` placeholders as psycopg's `%s` (a literal % doubled)."""
    return statement.replace("%", "%%").replace("?", "%s")


def redacted(url: str) -> str:
    """host:port/dbname of a connection URL, without user or password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://<unparsable url>"
    return f"postgresql://{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


class _PostgresTransaction(Transaction):
    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        return self._conn.execute(_sql(sql), tuple(params))

    def lock(self, name: str) -> None:
        self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, connect_timeout_s: int = 10) -> None:
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        with self._lock:
            self._connection()  # fail at start-up, naming the server, not at first use

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
            try:
                self._conn = psycopg.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=self._connect_timeout_s,
                    prepare_threshold=None,  # works behind a transaction-mode pooler
                    application_name="rlhf",
                )
            except psycopg.OperationalError as exc:
                raise ConnectionError(
                    f"cannot connect to the state database {redacted(self._url)}: {exc}"
                ) from None
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                yield _PostgresTransaction(conn)

    def query(self, sql: str, params: Params = ()) -> list[tuple]:
        with self._lock:
            return self._connection().execute(_sql(sql), tuple(params)).fetchall()

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._lock:  # an autocommit connection: the statement is its own transaction
            return self._connection().execute(_sql(sql), tuple(params)).rowcount

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def __repr__(self) -> str:
        return f"PostgresDatabase({redacted(self._url)})"
