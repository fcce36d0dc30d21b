"""Archived dead letters: taken out of their DLQ, kept until FLEET_ARCHIVE_RETENTION.

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
        "archived_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("queue", sa.Text, nullable=False),  # the DLQ it came from
        sa.Column("message_id", sa.Text, nullable=True),
        sa.Column("type", sa.Text, nullable=True),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "archived_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        # What it takes to put the message back as it was: its AMQP properties (and the
        # exchange and routing key it reached the DLQ by), its headers as tagged JSON
        # (workers/operations/archive.py: to_json), its body.
        sa.Column("properties", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_archived_letters_archived_at", "archived_letters", ["archived_at"])


def downgrade() -> None:
    op.drop_table("archived_letters")
