"""`proxal db`: the session database: its schema revision, upgrades, and the one-time
import of session state from an older proxal's LanceDB tables."""

from __future__ import annotations

import argparse
import os
from typing import Any

HELP = "the session database: status, upgrade, import-lance (from an older proxal's store)"


def add_db_arg(p: argparse.ArgumentParser) -> None:
    """--db: the session database's URL (also `proxal serve`'s and `proxal up`'s)."""
    p.add_argument(
        "--db",
        default=os.environ.get("PROXAL_DB", ""),
        metavar="URL",
        help="session database: sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB "
        "(default: proxal.db in the store directory; env PROXAL_DB)",
    )


def add_parser(sub: Any) -> None:
    from proxal.runtime.settings import DEFAULT_STORE

    p = sub.add_parser("db", help=HELP, description=HELP)
    p.add_argument(
        "action",
        choices=("status", "upgrade", "import-lance"),
        help="status: schema revision and sessions; upgrade: migrate to this proxal's schema "
        "(serve does this at start-up); import-lance: copy sessions, label logs, rounds and "
        "live leases from the store's LanceDB tables (proxal before 0.2) into the database",
    )
    p.add_argument(
        "--store",
        default=os.environ.get("PROXAL_STORE", DEFAULT_STORE),
        help="store directory or URI (env PROXAL_STORE)",
    )
    add_db_arg(p)


def run(args: argparse.Namespace) -> int:
    from proxal.store import Store

    store = Store(args.store, create=False, db=args.db)
    db = store.database()  # opens and migrates: the same checks as serve's start-up
    print(f"database: {db.shown_url}")
    if args.action == "import-lance":
        return _import(store)
    from proxal.store.sql.migrate import head_revision

    sessions = store.list_sessions()
    print(f"schema: {db.revision()} (this proxal's newest: {head_revision()})")
    print(f"sessions: {len(sessions)}")
    return 0


def _import(store: Any) -> int:
    from proxal.store.lance_import import import_lance_sessions

    report = import_lance_sessions(store)
    for session, events in report.imported.items():
        print(f"imported session {session}: {events} label events")
    for session in report.skipped:
        print(f"skipped session {session}: already in the database")
    for session in report.renumbered:
        print(f"session {session}: repeated round numbers, renumbered in creation order")
    print(
        f"{len(report.imported)} session(s) imported, {len(report.skipped)} already there; "
        f"{report.rounds} rounds, {report.leases} live leases"
    )
    return 0
