"""The shipping's shipments.

Written out rather than built from ``workers.shipping.store``: a migration is history, and
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
        "shipments",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("shipment_id", sa.Text, nullable=True, unique=True),
        sa.Column("tracking_number", sa.Text, nullable=True, unique=True),
        sa.Column("country", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "status IN ('created', 'refused', 'cancelled')", name="ck_shipments_status"
        ),
        sa.CheckConstraint(
            "status <> 'created'"
            " OR (shipment_id IS NOT NULL AND tracking_number IS NOT NULL AND country IS NOT NULL)",
            name="ck_shipments_created_is_complete",
        ),
    )


def downgrade() -> None:
    op.drop_table("shipments")
