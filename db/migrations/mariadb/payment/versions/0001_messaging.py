"""The payment service's outbox, inbox and order locks, on MariaDB.

MariaDB's types written out (this tree is MariaDB's alone): ids are VARCHAR(255) in the
database's utf8mb4_bin collation, so case-sensitive; times are DATETIME(6), in UTC by the
session's time zone; the outbox's body is bytes (LONGBLOB) and its headers JSON.
``order_locks`` stands for PostgreSQL's transaction-scoped advisory locks, which MariaDB
lacks: a transaction locks an order's row and holds it to commit.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Every table InnoDB (transactions, row locks) in the database's own collation.
TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
NOW = sa.text("CURRENT_TIMESTAMP(6)")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", mysql.BIGINT, primary_key=True, autoincrement=True),
        sa.Column("message_id", mysql.VARCHAR(255), nullable=False, unique=True),
        sa.Column("exchange", mysql.VARCHAR(255), nullable=False),
        sa.Column("routing_key", mysql.VARCHAR(255), nullable=False),
        sa.Column("type", mysql.VARCHAR(255), nullable=False),
        sa.Column("version", mysql.INTEGER, nullable=False),
        sa.Column("correlation_id", mysql.VARCHAR(255), nullable=False),
        sa.Column("causation_id", mysql.VARCHAR(255), nullable=True),
        sa.Column("producer", mysql.VARCHAR(255), nullable=False),
        sa.Column("occurred_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("headers", mysql.JSON, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("body", mysql.LONGBLOB, nullable=False),
        sa.Column("published_at", mysql.DATETIME(fsp=6), nullable=True),
        **TABLE,
    )
    # The relay claims unpublished rows in id order (no partial indexes in MariaDB).
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])
    op.create_index("ix_outbox_correlation", "outbox", ["correlation_id"])
    op.create_table(
        "inbox",
        sa.Column("consumer", mysql.VARCHAR(255), primary_key=True),
        sa.Column("message_id", mysql.VARCHAR(255), primary_key=True),
        sa.Column("type", mysql.VARCHAR(255), nullable=False),
        sa.Column("received_at", mysql.DATETIME(fsp=6), nullable=False, server_default=NOW),
        **TABLE,
    )
    op.create_index("ix_inbox_received_at", "inbox", ["received_at"])
    op.create_table(
        "order_locks",
        sa.Column("order_key", mysql.VARCHAR(255), primary_key=True),
        sa.Column("locked_at", mysql.DATETIME(fsp=6), nullable=False, server_default=NOW),
        **TABLE,
    )
    op.create_index("ix_order_locks_locked_at", "order_locks", ["locked_at"])


def downgrade() -> None:
    op.drop_table("order_locks")
    op.drop_table("inbox")
    op.drop_table("outbox")
