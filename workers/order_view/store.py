"""The read model's table, in the order_view's own database, and the statements on it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.order_view.domain import Summary

metadata = sa.MetaData()

# One row per order, denormalised for reading. A row may be created by any of the order's
# events, so everything but order_id and last_version is nullable; status stays NULL until
# an order event has arrived (readers hide such rows).
order_summaries = sa.Table(
    "order_summaries",
    metadata,
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
# The CLI lists by customer and by status, newest first.
sa.Index("ix_order_summaries_customer_id", order_summaries.c.customer_id)
sa.Index("ix_order_summaries_status", order_summaries.c.status)


def _summary(row: sa.Row[Any]) -> Summary:
    return Summary(**row._asdict())


async def load(conn: AsyncConnection, order_id: str) -> Summary | None:
    row = (
        await conn.execute(sa.select(order_summaries).where(order_summaries.c.order_id == order_id))
    ).first()
    return None if row is None else _summary(row)


async def save(conn: AsyncConnection, summary: Summary) -> None:
    values = asdict(summary)
    statement = insert(order_summaries).values(**values)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[order_summaries.c.order_id],
            set_={k: v for k, v in values.items() if k != "order_id"},
        )
    )


async def listing(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    customer_id: str | None = None,
    limit: int = 50,
) -> list[Summary]:
    """Orders the view knows (status not NULL), newest first."""
    query = sa.select(order_summaries).where(order_summaries.c.status.is_not(None))
    if status is not None:
        query = query.where(order_summaries.c.status == status)
    if customer_id is not None:
        query = query.where(order_summaries.c.customer_id == customer_id)
    query = query.order_by(
        order_summaries.c.created_at.desc().nulls_last(), order_summaries.c.order_id
    ).limit(limit)
    return [_summary(row) for row in await conn.execute(query)]


async def last_update(conn: AsyncConnection) -> Any:
    """When the view last applied an order event (None when it has applied none)."""
    return (await conn.execute(sa.select(sa.func.max(order_summaries.c.updated_at)))).scalar()
