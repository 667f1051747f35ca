"""The state database's contract (rlhf.store), on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from rlhf.store import open_database

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v DOUBLE PRECISION NOT NULL)"


def test_a_transaction_commits_or_rolls_back_whole(state_db):
    db = state_db()
    db.ensure_schema(SCHEMA)
    db.ensure_schema(SCHEMA)  # idempotent
    with db.transaction() as tx:
        tx.execute("INSERT INTO t (k, v) VALUES (?, ?)", ("a", 1.25))
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute("INSERT INTO t (k, v) VALUES (?, ?)", ("b", 2.0))
        raise RuntimeError("the work failed half-way")
    other = state_db()
    assert other.query("SELECT k, v FROM t ORDER BY k") == [("a", 1.25)]
    with other.transaction() as tx:
        cursor = tx.execute(
            "INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING", ("a", 9.0)
        )
        assert cursor.rowcount == 0
        assert tx.execute("SELECT v FROM t WHERE k = ?", ("a",)).fetchone() == (1.25,)
    # Times keep their precision (DOUBLE PRECISION, not PostgreSQL's 4-byte REAL).
    now = time.time()
    with db.transaction() as tx:
        tx.execute("INSERT INTO t (k, v) VALUES (?, ?)", ("now", now))
    assert db.query("SELECT v FROM t WHERE k = 'now'") == [(now,)]


def test_a_single_statement_write_commits_on_its_own(state_db):
    """`Database.execute`: one statement outside a transaction (the dedupe record's hot
    path), visible to another connection at once, with the rows it changed."""
    db = state_db()
    db.ensure_schema(SCHEMA)
    insert = "INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING"
    assert db.execute(insert, ("solo", 1.0)) == 1
    assert db.execute(insert, ("solo", 2.0)) == 0  # already there: nothing changed
    assert state_db().query("SELECT v FROM t WHERE k = ?", ("solo",)) == [(1.0,)]
    with pytest.raises(Exception, match="(?i)null"):
        db.execute("INSERT INTO t (k, v) VALUES (?, NULL)", ("bad",))
    assert db.execute(insert, ("after", 3.0)) == 1  # a failed statement leaves it usable


def test_a_lock_makes_read_check_write_exclusive_across_connections(state_db):
    """Four connections each read a counter and write it back plus one, 25 times, under a lock:
    no increment is lost."""
    dbs = [state_db() for _ in range(4)]
    dbs[0].ensure_schema(SCHEMA)
    with dbs[0].transaction() as tx:
        tx.execute("INSERT INTO t (k, v) VALUES ('n', 0)")
    barrier = threading.Barrier(4)

    def add(db) -> None:
        barrier.wait()
        for _ in range(25):
            with db.transaction() as tx:
                tx.lock("counter")
                value = tx.execute("SELECT v FROM t WHERE k = 'n'").fetchone()[0]
                tx.execute("UPDATE t SET v = ? WHERE k = 'n'", (value + 1,))

    threads = [threading.Thread(target=add, args=(db,)) for db in dbs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert dbs[0].query("SELECT v FROM t WHERE k = 'n'") == [(100.0,)]


def test_postgres_reconnects_after_losing_its_connection(postgres_url):
    """A restarted server or a dropped connection: the statement that saw it fails (its
    caller retries), the next one reconnects."""
    import psycopg

    db = open_database(postgres_url)
    db.ensure_schema(SCHEMA)
    pid = db.query("SELECT pg_backend_pid()")[0][0]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        db.query("SELECT 1")
    assert db.query("SELECT 1") == [(1,)]
    assert db.query("SELECT pg_backend_pid()")[0][0] != pid
    db.close()


def test_postgres_url_never_shows_its_password(postgres_url, postgres_server):
    db = open_database(postgres_url)
    assert postgres_server.password not in repr(db)
    db.close()
    wrong = postgres_url.replace(postgres_server.password, "not-the-password")
    with pytest.raises(ConnectionError) as failed:
        open_database(wrong)
    assert "not-the-password" not in str(failed.value)
    assert f"127.0.0.1:{postgres_server.port}" in str(failed.value)
