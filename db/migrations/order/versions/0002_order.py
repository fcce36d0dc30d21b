"""The order's event store: ``events`` (one stream per order) and ``snapshots``.

Written out rather than built from ``db.event_store``: a migration is history, and must keep
creating what it created when the code has moved on.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("contract_version", sa.Integer, nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("global_position", sa.BigInteger, sa.Identity(), nullable=False),
        # The optimistic concurrency guard: two writers of one version, the second loses.
        sa.PrimaryKeyConstraint("stream_id", "version", name="events_pkey"),
        sa.UniqueConstraint("global_position", name="uq_events_global_position"),
        sa.CheckConstraint("version >= 1", name="ck_events_version_positive"),
    )
    op.create_table(
        "snapshots",
        sa.Column("stream_id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("state", JSONB, nullable=False),
        sa.Column(
            "taken_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("snapshots")
    op.drop_table("events")
