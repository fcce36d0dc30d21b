"""The order_view's rebuilds: one row per `fleet view rebuild`, counting what was applied.

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
        "rebuilds",
        sa.Column("rebuild_id", sa.Text, primary_key=True),
        sa.Column(
            "requested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("expected_events", sa.Integer, nullable=True),
        sa.Column("applied_events", sa.Integer, nullable=False, server_default="0"),
        sa.Column("sent_events", sa.Integer, nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("rebuilds")
