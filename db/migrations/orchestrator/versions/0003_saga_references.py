"""A saga keeps the payment id and tracking number its steps produced, for confirm_order v2.

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
    op.add_column("sagas", sa.Column("payment_id", sa.Text, nullable=True))
    op.add_column("sagas", sa.Column("tracking_number", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("sagas", "tracking_number")
    op.drop_column("sagas", "payment_id")
