"""Schema migrations: bring a session database to the code's head revision with Alembic.

Run by `open_database` when the orchestrator (or any command that touches sessions) opens
the database: a new database gets every migration, an older one the missing ones, and a
database on a revision this code does not know (written by a newer proxal) is refused.
Several orchestrators starting at once are safe: the upgrade runs in one write transaction,
under a PostgreSQL advisory lock (SQLite: its writer lock).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from proxal.runtime.errors import FailedPreconditionError
from proxal.store.sql.database import Database, shown
from sqlalchemy import Connection, text

MIGRATIONS = Path(__file__).parent / "migrations"
ADVISORY_LOCK = 0x70726F78616C  # "proxal": one key for every proxal schema upgrade


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(conn: Connection) -> str | None:
    """The database's schema revision; None for a database proxal never wrote."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database) -> tuple[str | None, str]:
    """Upgrade the schema to head -> (revision before, head). FailedPreconditionError for a
    database on a newer schema than this code knows (nothing is changed then)."""
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    head = head_revision()
    with db.transaction(lock=True) as conn:
        if not db.sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
        before = current_revision(conn)
        if before is not None:
            try:
                script.get_revision(before)
            except CommandError:
                raise FailedPreconditionError(
                    f"the database at {shown(db.url)} has schema revision {before!r}, newer "
                    f"than this proxal knows (its newest is {head!r}): upgrade proxal, or "
                    "point --db / PROXAL_DB at another database"
                ) from None
        if before != head:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    return before, head
