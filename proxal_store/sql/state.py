"""The session-state queries of one transaction (`SessionTx`), over `schema`'s tables.

Records go in and out as the store's dataclasses (`SessionRecord`, `RoundRecord`,
`LabelEvent`, `LeaseEvent`); JSON columns are encoded here. The caller owns the
transaction (`proxal.store.sessions.SessionsMixin`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from proxal.runtime.errors import AlreadyExistsError, NotFoundError
from proxal.store.labels import GRANT, RELEASE, LabelEvent, LeaseEvent
from proxal.store.records import JobRecord, RoundRecord, SessionRecord, utcnow
from proxal.store.sql import schema as t
from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

JOB_JSON = ("request", "last_event")
ROUND_JSON = ("proxy_spec", "scores_summary", "timings", "metrics", "selected_ids")


class SessionTx:
    """Reads and writes of session state on one open connection (one transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # ---------------------------------------------------------------- sessions
    def lock_session(self, session: str) -> SessionRecord:
        """The session's record, its row locked until the transaction ends (FOR UPDATE on
        PostgreSQL; SQLite's writer lock is already held); NotFoundError if there is none."""
        query = select(t.sessions).where(t.sessions.c.session == session).with_for_update()
        return self._session(self.conn.execute(query).first(), session)

    def get_session(self, session: str) -> SessionRecord:
        query = select(t.sessions).where(t.sessions.c.session == session)
        return self._session(self.conn.execute(query).first(), session)

    def has_session(self, session: str) -> bool:
        query = select(t.sessions.c.session).where(t.sessions.c.session == session)
        return self.conn.execute(query).first() is not None

    def create_session(self, record: SessionRecord) -> SessionRecord:
        if self.has_session(record.session):
            raise AlreadyExistsError(
                f"session {record.session!r} already exists; pick another name"
            )
        stored = SessionRecord(**{**asdict(record), "created_at": record.created_at or utcnow()})
        self.conn.execute(
            insert(t.sessions).values(**{**asdict(stored), "config": json.dumps(stored.config)})
        )
        return stored

    def update_session(self, session: str, embedding_version: str, config: dict[str, Any]) -> None:
        self.conn.execute(
            update(t.sessions)
            .where(t.sessions.c.session == session)
            .values(embedding_version=embedding_version, config=json.dumps(config))
        )

    def list_sessions(self) -> list[SessionRecord]:
        rows = self.conn.execute(select(t.sessions).order_by(t.sessions.c.created_at))
        return [self._session(row, "") for row in rows]

    def count_sessions_and_leases(self, now: float) -> tuple[int, int]:
        """(sessions, leases granted and neither released nor expired at `now`)."""
        sessions = self.conn.execute(select(func.count()).select_from(t.sessions)).scalar_one()
        live = and_(t.leases.c.released_at.is_(None), t.leases.c.expires_at > now)
        leases = self.conn.execute(select(func.count()).select_from(t.leases).where(live))
        return int(sessions), int(leases.scalar_one())

    def delete_session(self, session: str) -> None:
        """The session and everything of it (children first: no reliance on cascades)."""
        for table in (t.lease_items, t.leases, t.label_events, t.requests, t.rounds, t.sessions):
            self.conn.execute(delete(table).where(table.c.session == session))

    @staticmethod
    def _session(row: Any, session: str) -> SessionRecord:
        if row is None:
            raise NotFoundError(f"session {session!r} not found; create it first")
        data = row._asdict()
        data["config"] = json.loads(data["config"] or "{}")
        return SessionRecord(**data)

    # ---------------------------------------------------------------- label log
    def append_label_events(self, session: str, pool: str, events: Sequence[LabelEvent]) -> None:
        """One request's events; a request id is recorded once (its primary key), so a
        second commit of the same request fails instead of doubling its labels."""
        now = utcnow()
        first: dict[str, LabelEvent] = {}
        for event in events:
            if event.request_id:
                first.setdefault(event.request_id, event)
        if first:
            self.conn.execute(
                insert(t.requests),
                [
                    {
                        "session": session,
                        "request_id": rid,
                        "kind": e.kind,
                        "request_hash": e.request_hash,
                        "annotator": e.annotator,
                        "created_at": e.created_at or now,
                    }
                    for rid, e in first.items()
                ],
            )
        rows = [
            {
                **asdict(e),
                "request_id": e.request_id or None,
                "session": session,
                "pool": pool,
                "created_at": e.created_at or now,
            }
            for e in events
        ]
        self.conn.execute(insert(t.label_events), rows)

    def read_label_events(self, session: str) -> list[LabelEvent]:
        """The session's label log in commit order."""
        c = t.label_events.c
        query = (
            select(
                c.kind,
                c.id,
                c.label,
                c.request_id,
                c.request_hash,
                c.annotator,
                c.undoes,
                c.source,
                c.created_at,
            )
            .where(c.session == session)
            .order_by(c.seq)
        )
        return [
            LabelEvent(**{**row._asdict(), "request_id": row.request_id or ""})
            for row in self.conn.execute(query)
        ]

    def count_label_events(self, session: str) -> int:
        c = t.label_events.c
        return int(self.conn.execute(select(func.count()).where(c.session == session)).scalar_one())

    # ---------------------------------------------------------------- leases
    def append_lease_events(self, session: str, events: Sequence[LeaseEvent], now: float) -> None:
        """Grant or release leases. A grant first drops its items' rows of released or
        expired (at `now`) leases; an item still in a live lease makes the insert fail."""
        for event in events:
            if event.kind == GRANT:
                self._grant(session, event, now)
            elif event.kind == RELEASE:
                self._release(session, event.lease_id)

    def _grant(self, session: str, event: LeaseEvent, now: float) -> None:
        ids = [int(i) for i in event.ids]
        dead = select(t.leases.c.lease_id).where(
            t.leases.c.session == session,
            or_(t.leases.c.released_at.is_not(None), t.leases.c.expires_at <= now),
        )
        self.conn.execute(
            delete(t.lease_items).where(
                and_(
                    t.lease_items.c.session == session,
                    t.lease_items.c.id.in_(ids),
                    t.lease_items.c.lease_id.in_(dead),
                )
            )
        )
        self.conn.execute(
            insert(t.leases).values(
                lease_id=event.lease_id,
                session=session,
                annotator=event.annotator,
                ids=json.dumps(ids),
                expires_at=event.expires_at,
                created_at=event.created_at or utcnow(),
            )
        )
        if ids:
            self.conn.execute(
                insert(t.lease_items),
                [{"session": session, "id": i, "lease_id": event.lease_id} for i in ids],
            )

    def _release(self, session: str, lease_id: str) -> None:
        self.conn.execute(
            update(t.leases)
            .where(t.leases.c.lease_id == lease_id, t.leases.c.session == session)
            .values(released_at=utcnow())
        )
        self.conn.execute(delete(t.lease_items).where(t.lease_items.c.lease_id == lease_id))

    def read_lease_events(self, session: str) -> list[LeaseEvent]:
        """The session's leases as grant (and release) events, in grant order."""
        c = t.leases.c
        query = select(t.leases).where(c.session == session).order_by(c.seq)
        out = []
        for row in self.conn.execute(query):
            ids = tuple(int(i) for i in json.loads(row.ids))
            out.append(
                LeaseEvent(GRANT, row.lease_id, row.annotator, ids, row.expires_at, row.created_at)
            )
            if row.released_at is not None:
                out.append(
                    LeaseEvent(RELEASE, row.lease_id, row.annotator, (), 0.0, row.released_at)
                )
        return out

    # ---------------------------------------------------------------- rounds
    def record_round(self, record: RoundRecord) -> None:
        row = asdict(record)
        row["created_at"] = record.created_at or utcnow()
        for key in ROUND_JSON:
            row[key] = json.dumps(row[key])
        self.conn.execute(insert(t.rounds).values(**row))

    def read_rounds(self, session: str) -> list[RoundRecord]:
        c = t.rounds.c
        rows = self.conn.execute(select(t.rounds).where(c.session == session).order_by(c.round))
        out = []
        for row in rows:
            data = row._asdict()
            for key in ROUND_JSON:
                data[key] = json.loads(data[key] or "null")
            out.append(RoundRecord(**data))
        return out

    def count_rounds(self, session: str) -> int:
        c = t.rounds.c
        return int(self.conn.execute(select(func.count()).where(c.session == session)).scalar_one())

    # ---------------------------------------------------------------- jobs
    def save_job(self, record: JobRecord) -> None:
        """Insert or update the job's row."""
        row = asdict(record)
        row["created_at"] = record.created_at or utcnow()
        for key in JOB_JSON:
            row[key] = json.dumps(row[key])
        c = t.jobs.c
        changed = self.conn.execute(
            update(t.jobs)
            .where(c.job_id == record.job_id)
            .values(**{k: v for k, v in row.items() if k not in ("job_id", "created_at")})
        )
        if changed.rowcount == 0:
            self.conn.execute(insert(t.jobs).values(**row))

    def get_job(self, job_id: str) -> JobRecord:
        row = self.conn.execute(select(t.jobs).where(t.jobs.c.job_id == job_id)).first()
        if row is None:
            raise NotFoundError(f"job {job_id!r} not found: pass an id TrainSuccessor returned")
        return _job(row)

    def list_jobs(self, session: str = "") -> list[JobRecord]:
        query = select(t.jobs).order_by(t.jobs.c.created_at)
        if session:
            query = query.where(t.jobs.c.session == session)
        return [_job(row) for row in self.conn.execute(query)]


def _job(row: Any) -> JobRecord:
    data = row._asdict()
    for key in JOB_JSON:
        data[key] = json.loads(data[key] or "{}")
    return JobRecord(**data)
