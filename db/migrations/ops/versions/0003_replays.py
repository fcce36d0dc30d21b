"""Replayed messages, followed until their handler applied them or they failed again.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replays",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        # Which dead letter was replayed (the same message dead-lettered twice is two letters).
        sa.Column("letter_key", sa.Text, nullable=False, unique=True),
        # The id the replayed copy carries (none if the letter had none: a foreign client's).
        sa.Column("message_id", sa.Text, nullable=True),
        sa.Column("replay_of", sa.Text, nullable=True),  # an edited copy: the original's id
        sa.Column("from_queue", sa.Text, nullable=False),  # the DLQ
        # Where the copy went: a queue, or "<exchange>/<routing key>" for an unrouted letter.
        sa.Column("to_queue", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column(
            "replayed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('pending', 'applied', 'failed')", name="ck_replays_state"),
    )
    op.create_index(
        "ix_replays_pending",
        "replays",
        ["replayed_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("replays")
