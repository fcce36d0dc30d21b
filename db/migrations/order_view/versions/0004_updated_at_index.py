"""The order_view's rows by when they last changed: the view's lag (the latest change, read
by every worker's sampler and by `fleet status`) and the sagas listed by age are index
lookups, not scans of every order ever seen.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_order_summaries_updated_at", "order_summaries", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_order_summaries_updated_at", table_name="order_summaries")
