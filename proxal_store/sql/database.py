"""Open the session database: SQLite in the store directory by default, or PostgreSQL.

`open_database(url, store_dir)` checks the URL, connects, and brings the schema up to date
with Alembic (refusing a database on a newer schema than this code knows). Errors become
`proxal.runtime.errors` with one line that says what to fix; passwords are never printed.

Durability: SQLite runs in WAL mode with ``synchronous=FULL``, so a commit returns after
the WAL is fsynced; PostgreSQL sessions run with ``synchronous_commit=on`` (its commit
returns after the WAL record is flushed). Either way a committed write survives power loss.

Concurrency: `Database.transaction(lock=True)` begins a write transaction. On SQLite that
is ``BEGIN IMMEDIATE`` (the database's one writer lock, waited for up to `BUSY_TIMEOUT_MS`);
on PostgreSQL the caller locks rows (``SELECT ... FOR UPDATE``, see `sql.sessions`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from proxal.runtime.errors import (
    InvalidArgumentError,
    ProxalError,
    UnauthenticatedError,
    UnavailableError,
)
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url

log = logging.getLogger(__name__)
# Alembic logs each plugin it loads and each step at INFO; `open_database` logs one line per
# upgrade instead. Set before `migrate` imports alembic.
logging.getLogger("alembic").setLevel(logging.WARNING)

DB_FILE = "proxal.db"  # the default database, in the store directory
BUSY_TIMEOUT_MS = 30_000  # how long a SQLite writer waits for the lock
CONNECT_TIMEOUT_S = 10
SCHEMES = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
HINT = (
    "pass --db sqlite:///PATH or --db postgresql://USER:PASSWORD@HOST:PORT/DATABASE (env PROXAL_DB)"
)


def database_url(url: str, store_dir: Path | None) -> URL:
    """The SQLAlchemy URL for `url` ("" means the store directory's SQLite file).

    InvalidArgumentError for an unsupported scheme, an in-memory SQLite database, or no URL
    with a store on object storage (a SQLite file cannot live there)."""
    if not url:
        if store_dir is None:
            raise InvalidArgumentError(
                "a store on object storage keeps its sessions in PostgreSQL: " + HINT
            )
        return make_url(f"sqlite:///{store_dir / DB_FILE}")
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise InvalidArgumentError(f"cannot parse the database URL {url[:80]!r}: {HINT}") from None
    scheme, _, driver = parsed.drivername.partition("+")
    if scheme not in SCHEMES or driver not in ("", SCHEMES[scheme].partition("+")[2]):
        raise InvalidArgumentError(f"unsupported database URL scheme {parsed.drivername!r}: {HINT}")
    if scheme == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise InvalidArgumentError(
            "an in-memory SQLite database would lose every label at exit: " + HINT
        )
    return parsed.set(drivername=SCHEMES[scheme])


def shown(url: URL) -> str:
    """`url` as printed in messages: never with its password."""
    return url.render_as_string(hide_password=True)


class Database:
    """A SQLAlchemy engine on the session database, with the schema at the code's head."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.sqlite = url.get_backend_name() == "sqlite"
        self.engine = _engine(url)
        # SQLite's writers wait for its lock by sleeping and polling, unfairly: with 50
        # annotators some waited past BUSY_TIMEOUT_MS (bench/sessions_db.py). One SQLite
        # file has one orchestrator process, so its writers queue here first instead.
        self._writers: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.sqlite else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def transaction(self, lock: bool = False) -> Iterator[Connection]:
        """A transaction, committed when the block ends (rolled back on an error); `lock`
        makes it a writer (on SQLite: queued in this process, then BEGIN IMMEDIATE).
        Database errors become ProxalErrors: a lost connection or a busy database is
        UnavailableError, which clients retry."""
        queue = self._writers if lock else contextlib.nullcontext()
        with queue, translate_errors(self.url), self.engine.connect() as conn:
            if lock:
                conn = conn.execution_options(proxal_write=True)
            with conn.begin():
                yield conn

    @property
    def shown_url(self) -> str:
        return shown(self.url)

    def revision(self) -> str | None:
        """The database's schema revision (None before the first migration)."""
        from proxal.store.sql.migrate import current_revision

        with self.transaction() as conn:
            return current_revision(conn)

    def ping(self) -> None:
        """Run ``SELECT 1``: UnavailableError (translated) when the database does not answer."""
        with self.transaction() as conn:
            conn.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        self.engine.dispose()


def _engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
            pool_size=16,  # gRPC workers, ASVP checks and jobs each hold one at a time
            max_overflow=16,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,  # a connection the server dropped is replaced, not used
        pool_size=8,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": "-c synchronous_commit=on",
            "application_name": "proxal",
        },
    )


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection settings: WAL, fsync on every commit, foreign keys, busy timeout;
    transactions are begun by `_sqlite_begin`, not by the driver."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN IMMEDIATE for writers (they queue on SQLite's lock instead of failing on
    upgrade), a deferred BEGIN for readers."""
    write = conn.get_execution_options().get("proxal_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextlib.contextmanager
def translate_errors(url: URL) -> Iterator[None]:
    """Database errors -> proxal errors with one line (see `database_error`)."""
    try:
        yield
    except ProxalError:
        raise
    except exc.DBAPIError as error:
        translated = database_error(error, url)
        if translated is None:  # e.g. a ProgrammingError: a bug, reported as INTERNAL
            raise
        raise translated from error


TRANSIENT = (
    "connect", "connection", "server closed", "terminating", "shutting down", "timeout",
    "timed out", "locked", "busy", "disk i/o", "unable to open", "the database system is",
)  # fmt: skip


def _transient(text: str) -> bool:
    """Whether an OperationalError's text says the database is unreachable or busy (a
    retry may succeed), not that the statement is wrong (e.g. SQLite's "no such column")."""
    lowered = text.lower()
    return any(word in lowered for word in TRANSIENT)


def database_error(error: exc.DBAPIError, url: URL) -> ProxalError | None:
    """The proxal error for a driver error (one line, without secrets); None for a bug."""
    text = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
    if "password authentication failed" in text or "no password supplied" in text:
        return UnauthenticatedError(
            f"the database at {shown(url)} refused the user name or password: check --db / "
            "PROXAL_DB"
        )
    if (
        error.connection_invalidated
        or isinstance(error, exc.InterfaceError)
        or (isinstance(error, exc.OperationalError) and _transient(text))
    ):
        return UnavailableError(
            f"the database at {shown(url)} is unavailable ({text[:200]}); retry the request "
            "with the same request id (a retry is never applied twice)"
        )
    return None


exc_types = exc.DBAPIError


def open_database(url: str, store_dir: Path | None) -> Database:
    """The session database at `url` ("" -> ``<store_dir>/proxal.db``), connected and
    migrated to the code's schema (see `proxal.store.sql.migrate`)."""
    from proxal.store.sql.migrate import upgrade

    db = Database(database_url(url, store_dir))
    try:
        before, head = upgrade(db)
    except UnavailableError as exc:
        db.close()
        cause = str(exc.__cause__.orig if isinstance(exc.__cause__, exc_types) else exc)
        raise UnavailableError(
            f"cannot open the session database at {shown(db.url)}: "
            f"{cause.strip().splitlines()[0][:200]}; check --db / PROXAL_DB and that the "
            "database server runs there"
        ) from None
    except BaseException:
        db.close()
        raise
    if before != head:
        log.info("session database %s: schema %s -> %s", shown(db.url), before, head)
    return db
