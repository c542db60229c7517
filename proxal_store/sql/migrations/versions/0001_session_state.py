"""session state: sessions, requests, label log, leases, rounds, jobs

Revision ID: 0001
Revises:
Create Date: 2026-12-05 13:02:48.668785
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The first schema: sessions and jobs, leases and requests, rounds and the label log."""
    _sessions_and_jobs()
    _leases_and_requests()
    _rounds_and_label_events()


def _sessions_and_jobs() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("session", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("last_event", sa.Text(), nullable=False),
        sa.Column("model_uri", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("job_id"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_session", ["session"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("session", sa.String(length=128), nullable=False),
        sa.Column("pool", sa.String(length=128), nullable=False),
        sa.Column("embedding_version", sa.String(length=64), nullable=False),
        sa.Column("strategy", sa.String(length=64), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("split", sa.String(length=128), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("session"),
    )


def _leases_and_requests() -> None:
    op.create_table(
        "leases",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("lease_id", sa.String(length=64), nullable=False),
        sa.Column("session", sa.String(length=128), nullable=False),
        sa.Column("annotator", sa.String(length=128), nullable=False),
        sa.Column("ids", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("released_at", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["session"], ["sessions.session"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("lease_id"),
    )
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.create_index("ix_leases_session_seq", ["session", "seq"], unique=False)

    op.create_table(
        "requests",
        sa.Column("session", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("annotator", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["session"], ["sessions.session"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session", "request_id"),
    )


def _rounds_and_label_events() -> None:
    op.create_table(
        "rounds",
        sa.Column("session", sa.String(length=128), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(length=64), nullable=False),
        sa.Column("embedding_version", sa.String(length=64), nullable=False),
        sa.Column("proxy_spec", sa.Text(), nullable=False),
        sa.Column("selected_ids", sa.Text(), nullable=False),
        sa.Column("scores_summary", sa.Text(), nullable=False),
        sa.Column("timings", sa.Text(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.Column("labels_total", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["session"], ["sessions.session"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session", "round"),
    )
    op.create_table(
        "label_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("session", sa.String(length=128), nullable=False),
        sa.Column("pool", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("annotator", sa.String(length=128), nullable=False),
        sa.Column("undoes", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["session", "request_id"],
            ["requests.session", "requests.request_id"],
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["session"], ["sessions.session"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("label_events", schema=None) as batch_op:
        batch_op.create_index("ix_label_events_session_seq", ["session", "seq"], unique=False)

    op.create_table(
        "lease_items",
        sa.Column("session", sa.String(length=128), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("lease_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["lease_id"], ["leases.lease_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session", "id"),
    )


def downgrade() -> None:
    op.drop_table("lease_items")
    with op.batch_alter_table("label_events", schema=None) as batch_op:
        batch_op.drop_index("ix_label_events_session_seq")

    op.drop_table("label_events")
    op.drop_table("rounds")
    op.drop_table("requests")
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_index("ix_leases_session_seq")

    op.drop_table("leases")
    op.drop_table("sessions")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_session")

    op.drop_table("jobs")
