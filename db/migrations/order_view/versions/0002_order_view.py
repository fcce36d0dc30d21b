"""The order_view's read model: one denormalised summary row per order.

Written out rather than built from ``workers.order_view.store``: a migration is history, and
must keep creating what it created when store.py has moved on.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_summaries",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=True),
        sa.Column("item_count", sa.Integer, nullable=True),
        sa.Column("total_amount", sa.Numeric(14, 2), nullable=True),
        sa.Column("currency", sa.Text, nullable=True),
        sa.Column("saga", sa.Text, nullable=True),
        sa.Column("payment_id", sa.Text, nullable=True),
        sa.Column("tracking_number", sa.Text, nullable=True),
        sa.Column("rejection_reason", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_version", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint(
            "status IN ('PENDING', 'CONFIRMED', 'REJECTED')", name="ck_order_summaries_status"
        ),
    )
    op.create_index("ix_order_summaries_customer_id", "order_summaries", ["customer_id"])
    op.create_index("ix_order_summaries_status", "order_summaries", ["status"])


def downgrade() -> None:
    op.drop_index("ix_order_summaries_status", table_name="order_summaries")
    op.drop_index("ix_order_summaries_customer_id", table_name="order_summaries")
    op.drop_table("order_summaries")
