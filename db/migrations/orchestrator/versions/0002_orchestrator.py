"""The orchestrator's sagas and their step log.

Written out rather than built from ``workers.orchestrator.store``: a migration is history.

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
        "sagas",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("completed", JSONB, nullable=False),
        sa.Column("pending", JSONB, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("facts", JSONB, nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "status IN ('running', 'compensating', 'confirmed', 'rejected')",
            name="ck_sagas_status",
        ),
    )
    op.create_index(
        "ix_sagas_deadline",
        "sagas",
        ["deadline_at"],
        postgresql_where=sa.text("status IN ('running', 'compensating')"),
    )
    op.create_table(
        "saga_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("entry", sa.Text, nullable=False),
    )
    op.create_index("ix_saga_log_order_id", "saga_log", ["order_id"])


def downgrade() -> None:
    op.drop_table("saga_log")
    op.drop_table("sagas")
