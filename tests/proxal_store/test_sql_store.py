"""The session database on SQLite (a temporary file) and on a real PostgreSQL server:
migrations, durability settings, bad URLs and lost connections. No mocks of either."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from proxal.runtime.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from proxal.store import SessionRecord, Store
from proxal.store.labels import GRANT, LabelEvent, LeaseEvent
from proxal.store.sql.migrate import head_revision
from proxal.store.sql.schema import metadata
from sqlalchemy import text

from tests.postgres import PostgresServer


def _store(tmp_path: Path, db: str) -> Store:
    store = Store(str(tmp_path / "store"), db=db)
    store.create_session(SessionRecord("s", "p", "v1", "margin", 2, 0))
    return store


def test_migrations_build_the_schema_the_code_uses(db_url: str, tmp_path: Path) -> None:
    store = _store(tmp_path, db_url)
    db = store.database()
    assert db.revision() == head_revision()
    with db.transaction() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_a_database_on_a_newer_schema_is_refused_and_left_alone(
    db_url: str, tmp_path: Path
) -> None:
    store = _store(tmp_path, db_url)
    with store.database().transaction(lock=True) as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    store.close()
    with pytest.raises(FailedPreconditionError, match="newer than this proxal knows"):
        Store(str(tmp_path / "store"), db=db_url).list_sessions()
    again = Store(str(tmp_path / "store"), db=db_url)
    with contextlib.suppress(FailedPreconditionError):
        again.list_sessions()
    from proxal.store.sql.database import database_url
    from sqlalchemy import create_engine

    engine = create_engine(database_url(db_url, None))
    with engine.connect() as conn:  # nothing was changed: the revision and the session stay
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            "9999_future"
        )
        assert conn.execute(text("SELECT session FROM sessions")).scalars().all() == ["s"]
    engine.dispose()


def test_request_ids_and_leased_items_are_unique_constraints(db_url: str, tmp_path: Path) -> None:
    """A second commit of one request id, or a second live lease on an item, fails in the
    database itself (the service never gets that far: it answers retries from the log)."""
    from sqlalchemy.exc import IntegrityError

    store = _store(tmp_path, db_url)
    event = LabelEvent("label", 3, "a", "req-1", "digest", "ann")
    store.append_label_events("s", "p", [event])
    with pytest.raises(IntegrityError):
        store.append_label_events("s", "p", [event])
    store.append_lease_events("s", [LeaseEvent(GRANT, "l1", "ann", (1, 2), 2e9)], now=1e9)
    with pytest.raises(IntegrityError):
        store.append_lease_events("s", [LeaseEvent(GRANT, "l2", "bob", (2, 5), 2e9)], now=1e9)
    # once l1 has expired, its items may be leased again
    store.append_lease_events("s", [LeaseEvent(GRANT, "l3", "bob", (2, 5), 4e9)], now=3e9)
    assert [e.lease_id for e in store.read_lease_events("s")] == ["l1", "l3"]
    assert [e.request_id for e in store.read_label_events("s")] == ["req-1"]


def test_sqlite_commits_are_fsynced(tmp_path: Path) -> None:
    """WAL with synchronous=FULL: SQLite syncs the WAL before a commit returns."""
    store = _store(tmp_path, "")
    with store.database().transaction() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.append_labels("s", "p", [1], ["a"])
    store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "store" / "proxal.db")) as raw:
        assert raw.execute("SELECT id, label FROM label_events").fetchall() == [(1, "a")]


ACK_SCRIPT = """
import sys
from proxal.store import SessionRecord, Store
store = Store(sys.argv[1])
store.create_session(SessionRecord("s", "p", "v1", "margin", 2, 0))
for i in range(5):
    store.append_labels("s", "p", [i], ["a"])
    sys.stderr.write(f"ack {i}\\n")
    sys.stderr.flush()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_every_sqlite_acknowledgement_follows_an_fsync_of_the_wal(tmp_path: Path) -> None:
    """The system calls themselves: between two acknowledgements, the WAL file is synced."""
    script = tmp_path / "ack.py"
    script.write_text(ACK_SCRIPT)
    trace = tmp_path / "trace"
    subprocess.run(
        ["strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,write", "-o", str(trace),
         sys.executable, str(script), str(tmp_path / "store")],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    synced, acks = 0, 0
    for line in trace.read_text().splitlines():
        if "sync(" in line and "proxal.db-wal>" in line:
            synced += 1
        elif "write(2" in line and '"ack ' in line:
            assert synced >= 1, f"acknowledgement {acks} without an fsync of the WAL before it"
            synced, acks = 0, acks + 1
    assert acks == 5


def test_postgresql_commits_wait_for_the_wal_flush(postgres_url: str, tmp_path: Path) -> None:
    store = _store(tmp_path, postgres_url)
    with store.database().transaction() as conn:
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        assert conn.exec_driver_sql("SHOW fsync").scalar() == "on"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:p@localhost/x", "unsupported database URL scheme 'mysql'"),
        ("sqlite:///:memory:", "in-memory SQLite database would lose every label"),
        ("sqlite://", "in-memory SQLite database would lose every label"),
        ("not a url", "cannot parse the database URL"),
    ],
)
def test_bad_urls_are_refused_with_one_line(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        Store(str(tmp_path), db=url).list_sessions()


def test_wrong_password_and_unreachable_server(postgres_server: Any, tmp_path: Path) -> None:
    with pytest.raises(UnauthenticatedError, match="refused the user name or password") as e:
        Store(str(tmp_path), db=postgres_server.url(password="wrong")).list_sessions()
    assert "wrong" not in str(e.value)  # never print a password
    with pytest.raises(UnavailableError, match="cannot open the session database"):
        Store(str(tmp_path), db="postgresql://u:secret@127.0.0.1:1/x").list_sessions()


def test_serve_refuses_a_bad_database_with_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "proxal.orchestrator_service", "serve", "--store",
         str(tmp_path / "store"), "--proxy", "127.0.0.1:1", "--port", "0",
         "--db", "postgresql://u:secret@127.0.0.1:1/x"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open the session database" in lines[0]
    assert "secret" not in done.stderr


def test_a_lost_connection_is_unavailable_and_the_retry_commits_once(tmp_path: Path) -> None:
    """The database server goes away (an immediate stop, like a crash) between two
    requests: the write fails with UnavailableError; after it is back, the same request
    commits exactly once, and a second retry is refused by the request-id constraint."""
    server = PostgresServer().start()
    try:
        store = _store(tmp_path, server.database())
        event = LabelEvent("label", 7, "a", "req-7", "digest", "ann")
        store.list_sessions()  # the pool holds a live connection now
        server.stop(mode="immediate", remove=False)
        with pytest.raises(UnavailableError, match="retry the request with the same request id"):
            store.append_label_events("s", "p", [event])
        server.start()
        store.append_label_events("s", "p", [event])  # the pool replaces the dead connection
        assert [e.request_id for e in store.read_label_events("s")] == ["req-7"]
    finally:
        server.stop()


def test_a_session_transaction_needs_the_session(db_url: str, tmp_path: Path) -> None:
    store = _store(tmp_path, db_url)
    with pytest.raises(NotFoundError), store.session_transaction("missing"):
        raise AssertionError("entered the transaction of a session that does not exist")
    with pytest.raises(RuntimeError), store.session_transaction("s"):  # rolled back
        store.append_labels("s", "p", [1], ["a"])
        raise RuntimeError("boom")
    assert store.read_label_events("s") == []
