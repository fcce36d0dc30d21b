"""The messaging tables every service has in its own database: ``outbox`` and ``inbox``.

Each service's metadata gets them through :func:`add_messaging_tables`, and each service's
first migration creates them through :func:`create_messaging_tables`, so the columns are
written down once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB


def _outbox_columns() -> list[Any]:
    return [
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("message_id", sa.Text, nullable=False, unique=True),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("routing_key", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("correlation_id", sa.Text, nullable=False),
        sa.Column("causation_id", sa.Text, nullable=True),
        sa.Column("producer", sa.Text, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    ]


def _inbox_columns() -> list[Any]:
    return [
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    ]


# The relay's claim reads only unpublished rows in id order; this partial index keeps that
# cheap however many published rows wait for deletion.
_UNPUBLISHED = sa.text("published_at IS NULL")


def add_messaging_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    outbox = sa.Table("outbox", metadata, *_outbox_columns())
    sa.Index("ix_outbox_unpublished", outbox.c.id, postgresql_where=_UNPUBLISHED)
    sa.Index("ix_outbox_published_at", outbox.c.published_at)
    inbox = sa.Table("inbox", metadata, *_inbox_columns())
    sa.Index("ix_inbox_received_at", inbox.c.received_at)
    return outbox, inbox


def create_messaging_tables(op: Any) -> None:
    """For every service's first Alembic migration (``op`` is ``alembic.op``).

    Frozen history: six migrations run this, so a change to these tables is a new
    migration in each service, never an edit here.
    """
    op.create_table("outbox", *_outbox_columns())
    op.create_index("ix_outbox_unpublished", "outbox", ["id"], postgresql_where=_UNPUBLISHED)
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"])
    op.create_table("inbox", *_inbox_columns())
    op.create_index("ix_inbox_received_at", "inbox", ["received_at"])


def drop_messaging_tables(op: Any) -> None:
    op.drop_table("inbox")
    op.drop_table("outbox")


# The tables as declared, for the test that holds every service's migrations against them.
metadata = sa.MetaData()
add_messaging_tables(metadata)
