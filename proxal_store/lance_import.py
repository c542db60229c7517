"""One-time import of session state that older proxal versions kept in LanceDB tables
(``sessions``, ``labels``, ``leases`` and ``rounds`` under the store directory) into the
session database.

Each session is imported in one transaction: its record, its label log in commit order
(with request ids and digests, so retries and undo keep working), its rounds, and the
leases still live at import time. A session already in the database is left alone, so
running the import twice changes nothing. The Lance tables are not modified.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import lance
from proxal.store.labels import GRANT, LabelEvent, LeaseEvent, active_leases
from proxal.store.labels import LabelLog as _Log
from proxal.store.records import RoundRecord, SessionRecord
from proxal.store.store import Store

LANCE_TABLES = ("sessions", "labels", "leases", "rounds")
LABEL_COLUMNS = (
    "kind", "id", "label", "request_id", "request_hash", "annotator", "undoes", "source",
    "created_at",
)  # fmt: skip
ROUND_JSON = ("proxy_spec", "scores_summary", "timings", "metrics")


@dataclass
class ImportReport:
    """What `import_lance_sessions` did, per session."""

    imported: dict[str, int] = field(default_factory=dict)  # session -> label events
    skipped: list[str] = field(default_factory=list)  # already in the database
    rounds: int = 0
    leases: int = 0
    renumbered: list[str] = field(default_factory=list)  # sessions with repeated round numbers


def lance_rows(store: Store, table: str) -> list[dict[str, Any]]:
    """Every row of an old Lance table in commit order ([] when the table is absent)."""
    try:
        ds = lance.dataset(f"{store.uri}/{table}.lance", storage_options=store.storage_options)
    except (ValueError, FileNotFoundError, OSError):
        return []
    return list(ds.to_table().to_pylist())


def import_lance_sessions(store: Store, now: float | None = None) -> ImportReport:
    """Copy the store's Lance session tables into its session database (see module doc)."""
    now = time.time() if now is None else now
    by_session: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for table in LANCE_TABLES[1:]:
        for row in lance_rows(store, table):
            by_session[row["session"]][table].append(row)
    report = ImportReport()
    for row in lance_rows(store, "sessions"):
        record = SessionRecord(**{**row, "config": json.loads(row["config"] or "{}")})
        with store._write() as tx:
            if tx.has_session(record.session):
                report.skipped.append(record.session)
                continue
            tx.create_session(record)
            rows = by_session[record.session]
            events = [
                LabelEvent(**{k: r[k] or _empty(k) for k in LABEL_COLUMNS}) for r in rows["labels"]
            ]
            if events:
                tx.append_label_events(record.session, record.pool, events)
            report.rounds += _import_rounds(tx, record.session, rows["rounds"], report)
            report.leases += _import_leases(tx, record.session, rows["leases"], events, now)
            report.imported[record.session] = len(events)
    return report


def _empty(column: str) -> Any:
    return 0 if column == "id" else ""


def _import_rounds(tx: Any, session: str, rows: list[dict[str, Any]], report: ImportReport) -> int:
    """The rounds in round order; repeated numbers (two servers on one store) are
    renumbered 0..n-1 in creation order."""
    rows = sorted(rows, key=lambda r: (r["round"], r["created_at"] or ""))
    if len({r["round"] for r in rows}) != len(rows):
        rows = sorted(rows, key=lambda r: r["created_at"] or "")
        rows = [{**r, "round": i} for i, r in enumerate(rows)]
        report.renumbered.append(session)
    for row in rows:
        data = {**row, "selected_ids": list(row["selected_ids"] or [])}
        for key in ROUND_JSON:
            data[key] = json.loads(row[key] or "{}")
        tx.record_round(RoundRecord(**data))
    return len(rows)


def _import_leases(
    tx: Any, session: str, rows: list[dict[str, Any]], events: list[LabelEvent], now: float
) -> int:
    """The leases still live at `now`; of two that hold one item, the earlier keeps it."""
    lease_events = [
        LeaseEvent(r["kind"], r["lease_id"], r["annotator"], tuple(r["ids"] or ()),
                   r["expires_at"] or 0.0, r["created_at"] or "")
        for r in rows
    ]  # fmt: skip
    taken: set[int] = set()
    count = 0
    for lease in active_leases(lease_events, _Log.replay(events), now):
        ids = tuple(i for i in lease.ids if i not in taken)
        if not ids:
            continue
        taken.update(ids)
        grant = LeaseEvent(GRANT, lease.lease_id, lease.annotator, ids, lease.expires_at)
        tx.append_lease_events(session, [grant], now)
        count += 1
    return count
