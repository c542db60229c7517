"""Session state (Store's part): sessions, label log, leases and rounds, in SQL.

They live in the session database (`proxal.store.sql`): a SQLite file in the store
directory unless the store is opened with a database URL (PostgreSQL for several
orchestrators). The database is opened, and migrated, on first use, so the services that
only read pools (encoder, proxy) never touch it.

Every method runs in a transaction; a write returns after its commit (fsynced, see
`proxal.store.sql.database`). `session_transaction` runs a block of reads and writes as one
transaction holding the session's lock (its row, FOR UPDATE; on SQLite the writer lock), so
several orchestrators on one database serialise their writes to a session. Store methods
called inside that block, on the same thread, join its transaction.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.names import check_name
from proxal.store.labels import LABEL, LabelEvent, LabelLog, LeaseEvent
from proxal.store.records import JobRecord, RoundRecord, SessionRecord

if TYPE_CHECKING:
    from proxal.store.sql.database import Database
    from proxal.store.sql.state import SessionTx


class SessionsMixin:
    """Store's session state, in the database at `db_url` ("" = ``<store>/proxal.db``)."""

    db_url: str
    _store_dir: Path | None
    _db: Database | None
    _db_guard: threading.Lock
    _current: threading.local

    def database(self) -> Database:
        """The session database, opened and migrated on first use."""
        with self._db_guard:
            if self._db is None:
                from proxal.store.sql.database import open_database

                self._db = open_database(self.db_url, self._store_dir)
            return self._db

    def close(self) -> None:
        """Close the database connections (the store stays usable: it reopens them)."""
        with self._db_guard:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextlib.contextmanager
    def session_transaction(self, session: str) -> Iterator[SessionTx]:
        """One transaction holding `session`'s lock: NotFoundError if there is no such
        session; the block's writes commit together when it ends (none on an error)."""
        check_name("session", session)
        joined = getattr(self._current, "tx", None)
        if joined is not None:
            joined.lock_session(session)
            yield joined
            return
        with self._transaction(write=True) as tx:
            tx.lock_session(session)
            yield tx

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[SessionTx]:
        """The thread's open transaction if any, else a new one (a writer if `write`)."""
        from proxal.store.sql.state import SessionTx

        joined = getattr(self._current, "tx", None)
        if joined is not None:
            yield joined
            return
        with self.database().transaction(lock=write) as conn:
            tx = self._current.tx = SessionTx(conn)
            try:
                yield tx
            finally:
                self._current.tx = None

    def _read(self) -> contextlib.AbstractContextManager[SessionTx]:
        return self._transaction(write=False)

    def _write(self) -> contextlib.AbstractContextManager[SessionTx]:
        return self._transaction(write=True)

    # ---------------------------------------------------------------- sessions
    def create_session(self, record: SessionRecord) -> SessionRecord:
        check_name("session", record.session)
        with self._write() as tx:
            return tx.create_session(record)

    def get_session(self, session: str) -> SessionRecord:
        check_name("session", session)
        with self._read() as tx:
            return tx.get_session(session)

    def update_session(self, session: str, embedding_version: str, config: dict[str, Any]) -> None:
        """Set a session's current embedding version and config in one commit (the
        orchestrator's engine switches a session to a refreshed version this way)."""
        with self.session_transaction(session) as tx:
            tx.update_session(session, embedding_version, config)

    def list_sessions(self) -> list[SessionRecord]:
        """Every session, by creation time."""
        with self._read() as tx:
            return tx.list_sessions()

    def count_sessions_and_leases(self, now: float | None = None) -> tuple[int, int]:
        """(sessions, open leases: granted, not released, not expired at `now`, default
        the current time), counted in the database, for the orchestrator's metrics."""
        with self._read() as tx:
            return tx.count_sessions_and_leases(time.time() if now is None else now)

    def delete_session(self, session: str) -> None:
        """Delete a session with its label log, leases and rounds, in one transaction."""
        with self.session_transaction(session) as tx:
            tx.delete_session(session)

    # ---------------------------------------------------------------- labels
    def append_labels(
        self,
        session: str,
        pool: str,
        ids: Sequence[int],
        labels: Sequence[str],
        source: str = "human",
    ) -> None:
        """Append labels given outside a request (an oracle); committed when this returns."""
        if len(ids) != len(labels):
            raise InvalidArgumentError("ids and labels must have the same length")
        events = [
            LabelEvent(LABEL, int(i), label, source=source)
            for i, label in zip(ids, labels, strict=True)
        ]
        self.append_label_events(session, pool, events)

    def append_label_events(self, session: str, pool: str, events: Sequence[LabelEvent]) -> None:
        """Append one request's events in one transaction: all of them, or none."""
        check_name("session", session)
        if not events:
            return
        with self.session_transaction(session) as tx:
            tx.append_label_events(session, pool, events)

    def read_label_events(self, session: str) -> list[LabelEvent]:
        """A session's label log in commit order."""
        check_name("session", session)
        with self._read() as tx:
            return tx.read_label_events(session)

    def read_label_log(self, session: str) -> LabelLog:
        return LabelLog.replay(self.read_label_events(session))

    def read_labels(self, session: str) -> tuple[npt.NDArray[np.int64], list[str]]:
        """A session's current labels in the order given; a relabelled id keeps its last
        label, undone requests do not count."""
        labels = self.read_label_log(session).labels
        return np.fromiter(labels.keys(), dtype=np.int64, count=len(labels)), list(labels.values())

    # ---------------------------------------------------------------- leases
    def append_lease_events(
        self, session: str, events: Sequence[LeaseEvent], now: float | None = None
    ) -> None:
        """Grant or release leases; `now` (Unix seconds) tells which old leases expired."""
        check_name("session", session)
        if not events:
            return
        with self.session_transaction(session) as tx:
            tx.append_lease_events(session, events, time.time() if now is None else now)

    def read_lease_events(self, session: str) -> list[LeaseEvent]:
        check_name("session", session)
        with self._read() as tx:
            return tx.read_lease_events(session)

    # ---------------------------------------------------------------- rounds
    def record_round(self, record: RoundRecord) -> None:
        with self.session_transaction(record.session) as tx:
            tx.record_round(record)

    def read_rounds(self, session: str) -> list[RoundRecord]:
        check_name("session", session)
        with self._read() as tx:
            return tx.read_rounds(session)

    def count_rounds(self, session: str) -> int:
        check_name("session", session)
        with self._read() as tx:
            return tx.count_rounds(session)

    # ---------------------------------------------------------------- jobs
    def save_job(self, record: JobRecord) -> None:
        """Record a successor job's request and last event (insert or update)."""
        with self._write() as tx:
            tx.save_job(record)

    def get_job(self, job_id: str) -> JobRecord:
        """The job's record; NotFoundError for an unknown id."""
        with self._read() as tx:
            return tx.get_job(job_id)

    def list_jobs(self, session: str = "") -> list[JobRecord]:
        """Every recorded job (of `session` if given), by creation time."""
        with self._read() as tx:
            return tx.list_jobs(session)
