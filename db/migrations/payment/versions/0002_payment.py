"""The payment's customer accounts, payments and payment ledger.

Written out rather than built from ``workers.payment.store``: a migration is history, and
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
        "accounts",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("balance", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("seeded", sa.Numeric(14, 2), nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_accounts_balance_not_negative"),
        sa.CheckConstraint("seeded >= 0", name="ck_accounts_seeded_not_negative"),
    )
    op.create_table(
        "payments",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("payment_id", sa.Text, nullable=False, unique=True),
        sa.Column("customer_id", sa.Text, nullable=True),
        sa.Column("amount", sa.Numeric(14, 2), nullable=True),
        sa.Column("currency", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "status IN ('charged', 'refused', 'refunded')", name="ck_payments_status"
        ),
        sa.CheckConstraint(
            "status <> 'charged'"
            " OR (customer_id IS NOT NULL AND amount IS NOT NULL AND currency IS NOT NULL)",
            name="ck_payments_charged_is_complete",
        ),
        sa.CheckConstraint("amount >= 0", name="ck_payments_amount_not_negative"),
    )
    op.create_table(
        "payment_ledger",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("customer_id", sa.Text, sa.ForeignKey("accounts.customer_id"), nullable=False),
        sa.Column("order_id", sa.Text, nullable=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('charge', 'refund', 'seed')", name="ck_payment_ledger_kind"),
        sa.CheckConstraint("amount >= 0", name="ck_payment_ledger_amount_not_negative"),
        sa.CheckConstraint(
            "(kind = 'seed') = (order_id IS NULL)", name="ck_payment_ledger_order_unless_seed"
        ),
    )
    # The ledger is read per customer (the balance invariant) and per order (charged minus
    # refunded); PostgreSQL does not index the referencing side of a foreign key by itself.
    op.create_index("ix_payment_ledger_customer_id", "payment_ledger", ["customer_id"])
    op.create_index("ix_payment_ledger_order_id", "payment_ledger", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_payment_ledger_order_id", table_name="payment_ledger")
    op.drop_index("ix_payment_ledger_customer_id", table_name="payment_ledger")
    op.drop_table("payment_ledger")
    op.drop_table("payments")
    op.drop_table("accounts")
