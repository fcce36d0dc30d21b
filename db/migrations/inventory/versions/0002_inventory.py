"""The inventory's stock, reservations and stock ledger.

Written out rather than built from ``workers.inventory.store``: a migration is history, and
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
        "stock",
        sa.Column("sku", sa.Text, primary_key=True),
        sa.Column("available", sa.Integer, nullable=False),
        sa.Column("seeded", sa.Integer, nullable=False),
        sa.CheckConstraint("available >= 0", name="ck_stock_available_not_negative"),
    )
    op.create_table(
        "reservations",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "status IN ('reserved', 'refused', 'released')", name="ck_reservations_status"
        ),
    )
    op.create_table(
        "reservation_lines",
        sa.Column("order_id", sa.Text, sa.ForeignKey("reservations.order_id"), primary_key=True),
        sa.Column("sku", sa.Text, sa.ForeignKey("stock.sku"), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.CheckConstraint("quantity > 0", name="ck_reservation_lines_quantity_positive"),
    )
    op.create_table(
        "stock_ledger",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("sku", sa.Text, sa.ForeignKey("stock.sku"), nullable=False),
        sa.Column("order_id", sa.Text, nullable=True),
        sa.Column("delta", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # The ledger is read per SKU (history, verification); PostgreSQL does not index the
    # referencing side of a foreign key by itself.
    op.create_index("ix_stock_ledger_sku", "stock_ledger", ["sku"])


def downgrade() -> None:
    op.drop_index("ix_stock_ledger_sku", table_name="stock_ledger")
    op.drop_table("stock_ledger")
    op.drop_table("reservation_lines")
    op.drop_table("reservations")
    op.drop_table("stock")
