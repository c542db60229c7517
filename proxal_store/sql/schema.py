"""The SQL tables of session state (SQLAlchemy Core): sessions, their label log and
requests, leases, rounds, and training jobs.

One database holds the state of every session of one store: a SQLite file in the store
directory by default, or PostgreSQL for several orchestrators (`proxal.store.sql.database`).
Pools and embedding versions stay in LanceDB; a session names its pool and version.

Alembic migrations (`migrations/versions/`) create and change these tables; this module is
the code's view of the newest schema, and `tests/proxal_store/test_sql_migrations.py`
checks that the migrations produce it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only gives an INTEGER PRIMARY KEY autoincrement; BigInteger elsewhere.
Seq = BigInteger().with_variant(Integer(), "sqlite")


def session_column() -> Column[str]:
    """The `session` column of a session's rows: deleted with the session."""
    return Column(
        "session", String(128), ForeignKey("sessions.session", ondelete="CASCADE"), nullable=False
    )


sessions = Table(
    "sessions",
    metadata,
    Column("session", String(128), primary_key=True),
    Column("pool", String(128), nullable=False),
    Column("embedding_version", String(64), nullable=False),
    Column("strategy", String(64), nullable=False),
    Column("batch_size", Integer, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("split", String(128), nullable=False),
    Column("config", Text, nullable=False),  # JSON
    Column("created_at", String(40), nullable=False),
)

# One row per write request with a request id: the id is unique within its session, so a
# request is committed at most once; the digest tells a retry from a reused id.
requests = Table(
    "requests",
    metadata,
    session_column(),
    Column("request_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("annotator", String(128), nullable=False),
    Column("created_at", String(40), nullable=False),
    PrimaryKeyConstraint("session", "request_id"),
)

# The label log: label / import / skip / undo events, in commit order (`seq`).
label_events = Table(
    "label_events",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    session_column(),
    Column("pool", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("id", BigInteger, nullable=False),
    Column("label", Text, nullable=False),
    Column("request_id", String(128), nullable=True),  # NULL: an oracle's or import's event
    Column("request_hash", String(64), nullable=False),
    Column("annotator", String(128), nullable=False),
    Column("undoes", String(128), nullable=False),
    Column("source", String(32), nullable=False),
    Column("created_at", String(40), nullable=False),
    ForeignKeyConstraint(
        ["session", "request_id"],
        ["requests.session", "requests.request_id"],
        ondelete="CASCADE",
    ),
    Index("ix_label_events_session_seq", "session", "seq"),
)

# Leases: items reserved for an annotator until `expires_at` (Unix seconds) or release.
leases = Table(
    "leases",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("lease_id", String(64), nullable=False, unique=True),
    session_column(),
    Column("annotator", String(128), nullable=False),
    Column("ids", Text, nullable=False),  # JSON list, in the order handed out
    Column("expires_at", Double, nullable=False),
    Column("released_at", String(40), nullable=True),
    Column("created_at", String(40), nullable=False),
    Index("ix_leases_session_seq", "session", "seq"),
)

# Which lease holds an item: the primary key makes a double lease impossible. A row of a
# released or expired lease is removed before its item is leased again.
lease_items = Table(
    "lease_items",
    metadata,
    Column("session", String(128), nullable=False),
    Column("id", BigInteger, nullable=False),
    Column(
        "lease_id", String(64), ForeignKey("leases.lease_id", ondelete="CASCADE"), nullable=False
    ),
    PrimaryKeyConstraint("session", "id"),
)

rounds = Table(
    "rounds",
    metadata,
    session_column(),
    Column("round", Integer, nullable=False),
    Column("strategy", String(64), nullable=False),
    Column("embedding_version", String(64), nullable=False),
    Column("proxy_spec", Text, nullable=False),  # JSON
    Column("selected_ids", Text, nullable=False),  # JSON list
    Column("scores_summary", Text, nullable=False),  # JSON
    Column("timings", Text, nullable=False),  # JSON
    Column("metrics", Text, nullable=False),  # JSON
    Column("labels_total", Integer, nullable=False),
    Column("created_at", String(40), nullable=False),
    PrimaryKeyConstraint("session", "round"),
)

# Successor-training jobs: the request and the last progress event, so any orchestrator
# (or a restarted one) can answer for a job; `updated_at` tells a live job from an orphan.
jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("session", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("request", Text, nullable=False),  # JSON
    Column("last_event", Text, nullable=False),  # JSON
    Column("model_uri", Text, nullable=False),
    Column("owner", String(128), nullable=False),  # the orchestrator process running it
    Column("created_at", String(40), nullable=False),
    Column("updated_at", Double, nullable=False),  # Unix seconds
    Index("ix_jobs_session", "session"),
)
