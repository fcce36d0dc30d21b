"""The payment's customer accounts, payments and payment ledger, on MariaDB.

The same tables and CHECK constraints (by name) as the PostgreSQL tree's 0002, with
MariaDB's types written out: money DECIMAL(14,2), names VARCHAR(255), times DATETIME(6) in
UTC. Written out rather than built from ``workers.payment.store``: a migration is history.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
NOW = sa.text("CURRENT_TIMESTAMP(6)")
MONEY = mysql.DECIMAL(14, 2)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("customer_id", mysql.VARCHAR(255), primary_key=True),
        sa.Column("balance", MONEY, nullable=False),
        sa.Column("currency", mysql.VARCHAR(16), nullable=False),
        sa.Column("seeded", MONEY, nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_accounts_balance_not_negative"),
        sa.CheckConstraint("seeded >= 0", name="ck_accounts_seeded_not_negative"),
        **TABLE,
    )
    op.create_table(
        "payments",
        sa.Column("order_id", mysql.VARCHAR(255), primary_key=True),
        sa.Column("payment_id", mysql.VARCHAR(255), nullable=False, unique=True),
        sa.Column("customer_id", mysql.VARCHAR(255), nullable=True),
        sa.Column("amount", MONEY, nullable=True),
        sa.Column("currency", mysql.VARCHAR(16), nullable=True),
        sa.Column("status", mysql.VARCHAR(16), nullable=False),
        sa.Column("reason", mysql.TEXT, nullable=True),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False, server_default=NOW),
        sa.Column("updated_at", mysql.DATETIME(fsp=6), nullable=False, server_default=NOW),
        sa.CheckConstraint(
            "status IN ('charged', 'refused', 'refunded')", name="ck_payments_status"
        ),
        sa.CheckConstraint(
            "status <> 'charged'"
            " OR (customer_id IS NOT NULL AND amount IS NOT NULL AND currency IS NOT NULL)",
            name="ck_payments_charged_is_complete",
        ),
        sa.CheckConstraint("amount >= 0", name="ck_payments_amount_not_negative"),
        **TABLE,
    )
    op.create_table(
        "payment_ledger",
        sa.Column("id", mysql.BIGINT, primary_key=True, autoincrement=True),
        sa.Column(
            "customer_id",
            mysql.VARCHAR(255),
            sa.ForeignKey("accounts.customer_id", name="fk_payment_ledger_customer_id"),
            nullable=False,
        ),
        sa.Column("order_id", mysql.VARCHAR(255), nullable=True),
        sa.Column("kind", mysql.VARCHAR(16), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("at", mysql.DATETIME(fsp=6), nullable=False, server_default=NOW),
        sa.CheckConstraint("kind IN ('charge', 'refund', 'seed')", name="ck_payment_ledger_kind"),
        sa.CheckConstraint("amount >= 0", name="ck_payment_ledger_amount_not_negative"),
        sa.CheckConstraint(
            "(kind = 'seed') = (order_id IS NULL)", name="ck_payment_ledger_order_unless_seed"
        ),
        **TABLE,
    )
    # Per customer (the balance invariant; InnoDB would index the foreign key anyway, this
    # names it) and per order (charged minus refunded).
    op.create_index("ix_payment_ledger_customer_id", "payment_ledger", ["customer_id"])
    op.create_index("ix_payment_ledger_order_id", "payment_ledger", ["order_id"])


def downgrade() -> None:
    op.drop_table("payment_ledger")
    op.drop_table("payments")
    op.drop_table("accounts")
