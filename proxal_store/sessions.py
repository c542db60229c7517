"""Session tables (Store's part): sessions, label and lease event logs, rounds.

Label appends are committed before `append_labels` returns; the events of one request are
one commit, so a request is either wholly in the log or not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from proxal.runtime.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from proxal.runtime.names import check_name
from proxal.store.labels import LABEL, LabelEvent, LabelLog, LeaseEvent
from proxal.store.records import RoundRecord, SessionRecord, utcnow
from proxal.store.tables import Tables, eq, quote

# A session's label log (proxal.store.labels): append-only events, one commit per request.
LABELS_SCHEMA = pa.schema(
    [
        ("session", pa.string()),
        ("pool", pa.string()),
        ("id", pa.int64()),
        ("label", pa.string()),
        ("source", pa.string()),
        ("created_at", pa.string()),
        ("kind", pa.string()),
        ("request_id", pa.string()),
        ("request_hash", pa.string()),
        ("annotator", pa.string()),
        ("undoes", pa.string()),
    ]
)
LEASES_SCHEMA = pa.schema(
    [
        ("session", pa.string()),
        ("kind", pa.string()),
        ("lease_id", pa.string()),
        ("annotator", pa.string()),
        ("ids", pa.list_(pa.int64())),
        ("expires_at", pa.float64()),
        ("created_at", pa.string()),
    ]
)
ROUNDS_SCHEMA = pa.schema(
    [
        ("session", pa.string()),
        ("round", pa.int64()),
        ("strategy", pa.string()),
        ("embedding_version", pa.string()),
        ("proxy_spec", pa.string()),  # JSON
        ("selected_ids", pa.list_(pa.int64())),
        ("scores_summary", pa.string()),  # JSON
        ("timings", pa.string()),  # JSON
        ("metrics", pa.string()),  # JSON
        ("labels_total", pa.int64()),
        ("created_at", pa.string()),
    ]
)
SESSIONS_SCHEMA = pa.schema(
    [
        ("session", pa.string()),
        ("pool", pa.string()),
        ("embedding_version", pa.string()),
        ("strategy", pa.string()),
        ("batch_size", pa.int32()),
        ("seed", pa.int64()),
        ("split", pa.string()),
        ("config", pa.string()),  # JSON
        ("created_at", pa.string()),
    ]
)


class SessionsMixin:
    """Store's session tables, on the tables of `_tables`."""

    _tables: Tables

    # ---------------------------------------------------------------- sessions
    def create_session(self, record: SessionRecord) -> SessionRecord:
        check_name("session", record.session)
        with self._tables.lock:
            existing = self._tables.read("sessions", where=eq(session=record.session))
            if existing is not None and existing.num_rows:
                raise AlreadyExistsError(
                    f"session {record.session!r} already exists; pick another name"
                )
            stored = SessionRecord(
                **{**asdict(record), "created_at": record.created_at or utcnow()}
            )
            row = {**asdict(stored), "config": json.dumps(stored.config)}
            self._tables.append("sessions", pa.Table.from_pylist([row], schema=SESSIONS_SCHEMA))
        return stored

    def get_session(self, session: str) -> SessionRecord:
        check_name("session", session)
        table = self._tables.read("sessions", where=eq(session=session))
        if table is None or table.num_rows == 0:
            raise NotFoundError(f"session {session!r} not found; create it first")
        row = table.to_pylist()[0]
        row["config"] = json.loads(row["config"] or "{}")
        return SessionRecord(**row)

    def update_session(self, session: str, embedding_version: str, config: dict[str, Any]) -> None:
        """Set a session's current embedding version and config in one commit (the
        orchestrator's engine switches a session to a refreshed version this way)."""
        self.get_session(session)  # NotFoundError
        with self._tables.lock:
            ds = self._tables.dataset("sessions")
            assert ds is not None  # get_session found the record
            ds.update(
                {
                    "embedding_version": quote(embedding_version),
                    "config": quote(json.dumps(config)),
                },
                where=eq(session=session),
            )

    def list_sessions(self) -> list[SessionRecord]:
        """Every session, by creation time."""
        table = self._tables.read("sessions")
        rows = [] if table is None else table.to_pylist()
        for row in rows:
            row["config"] = json.loads(row["config"] or "{}")
        return sorted((SessionRecord(**r) for r in rows), key=lambda r: r.created_at)

    def delete_session(self, session: str) -> None:
        """Delete a session's rounds, leases and label log, then its record (last, so an
        interrupted delete leaves a session that a second delete finishes)."""
        self.get_session(session)  # NotFoundError
        with self._tables.lock:
            for name in ("rounds", "leases", "labels", "sessions"):
                self._tables.delete(name, eq(session=session))

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
        """Append one request's events as one commit: all of them are on disk, or none."""
        check_name("session", session)
        if not events:
            return
        now = utcnow()
        rows = [
            {**asdict(e), "session": session, "pool": pool, "created_at": e.created_at or now}
            for e in events
        ]
        self._tables.append("labels", pa.Table.from_pylist(rows, schema=LABELS_SCHEMA))

    def read_label_events(self, session: str) -> list[LabelEvent]:
        """A session's label log in commit order."""
        check_name("session", session)
        columns = [f.name for f in fields(LabelEvent)]
        table = self._tables.read("labels", where=eq(session=session), columns=columns)
        if table is None:
            return []
        return [LabelEvent(**row) for row in table.to_pylist()]

    def read_label_log(self, session: str) -> LabelLog:
        return LabelLog.replay(self.read_label_events(session))

    def read_labels(self, session: str) -> tuple[npt.NDArray[np.int64], list[str]]:
        """A session's current labels in the order given; a relabelled id keeps its last
        label, undone requests do not count."""
        labels = self.read_label_log(session).labels
        return np.fromiter(labels.keys(), dtype=np.int64, count=len(labels)), list(labels.values())

    # ---------------------------------------------------------------- leases
    def append_lease_events(self, session: str, events: Sequence[LeaseEvent]) -> None:
        check_name("session", session)
        if not events:
            return
        now = utcnow()
        rows = [
            {**asdict(e), "session": session, "ids": list(e.ids), "created_at": e.created_at or now}
            for e in events
        ]
        self._tables.append("leases", pa.Table.from_pylist(rows, schema=LEASES_SCHEMA))

    def read_lease_events(self, session: str) -> list[LeaseEvent]:
        check_name("session", session)
        columns = [f.name for f in fields(LeaseEvent)]
        table = self._tables.read("leases", where=eq(session=session), columns=columns)
        if table is None:
            return []
        return [LeaseEvent(**{**row, "ids": tuple(row["ids"])}) for row in table.to_pylist()]

    # ---------------------------------------------------------------- rounds
    def record_round(self, record: RoundRecord) -> None:
        row = asdict(record)
        row["created_at"] = record.created_at or utcnow()
        for key in ("proxy_spec", "scores_summary", "timings", "metrics"):
            row[key] = json.dumps(row[key])
        self._tables.append("rounds", pa.Table.from_pylist([row], schema=ROUNDS_SCHEMA))

    def read_rounds(self, session: str) -> list[RoundRecord]:
        check_name("session", session)
        table = self._tables.read("rounds", where=eq(session=session))
        if table is None:
            return []
        out = []
        for row in sorted(table.to_pylist(), key=lambda r: r["round"]):
            for key in ("proxy_spec", "scores_summary", "timings", "metrics"):
                row[key] = json.loads(row[key] or "{}")
            out.append(RoundRecord(**row))
        return out
