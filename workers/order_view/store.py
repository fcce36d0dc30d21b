"""The read model's table, in the order_view's own database, and the statements on it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
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


# One row per rebuild (``fleet view rebuild``): how many replayed events the view applied,
# how many the replay announced (``expected_events``, for progress) and finally sent (from
# its closing order.events_replayed); finished once both are in and applied reaches sent.
rebuilds = sa.Table(
    "rebuilds",
    metadata,
    sa.Column("rebuild_id", sa.Text, primary_key=True),
    sa.Column(
        "requested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("expected_events", sa.Integer, nullable=True),
    sa.Column("applied_events", sa.Integer, nullable=False, server_default="0"),
    sa.Column("sent_events", sa.Integer, nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
)


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


# --- Rebuilds. -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rebuild:
    rebuild_id: str
    requested_at: datetime
    expected_events: int | None
    applied_events: int
    sent_events: int | None
    finished_at: datetime | None


async def start_rebuild(conn: AsyncConnection, rebuild_id: str) -> None:
    """Empty the view and open a rebuild row (the caller then asks for the replay)."""
    await conn.execute(sa.text("TRUNCATE order_summaries"))
    await conn.execute(sa.insert(rebuilds).values(rebuild_id=rebuild_id))


async def count_applied(conn: AsyncConnection, rebuild_id: str, expected: int | None) -> None:
    """One more replayed event applied (in the transaction that applied it)."""
    statement = insert(rebuilds).values(
        rebuild_id=rebuild_id, applied_events=1, expected_events=expected
    )
    await _upsert_rebuild(
        conn,
        statement,
        {
            "applied_events": rebuilds.c.applied_events + 1,
            "expected_events": sa.func.coalesce(
                statement.excluded.expected_events, rebuilds.c.expected_events
            ),
        },
    )


async def replay_ended(conn: AsyncConnection, rebuild_id: str, sent: int) -> None:
    """The replay says it sent ``sent`` events in all."""
    statement = insert(rebuilds).values(rebuild_id=rebuild_id, sent_events=sent)
    await _upsert_rebuild(conn, statement, {"sent_events": statement.excluded.sent_events})


async def _upsert_rebuild(conn: AsyncConnection, statement: Any, changes: dict[str, Any]) -> None:
    # Upsert: a replay nobody started with `fleet view rebuild` (sent with `fleet publish`)
    # still counts, its row made on first sight. Finished once all that was sent is applied.
    applied, sent, finished_at, rebuild_id = (
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[rebuilds.c.rebuild_id], set_=changes
            ).returning(
                rebuilds.c.applied_events,
                rebuilds.c.sent_events,
                rebuilds.c.finished_at,
                rebuilds.c.rebuild_id,
            )
        )
    ).one()
    if finished_at is None and sent is not None and applied >= sent:
        await conn.execute(
            sa.update(rebuilds)
            .where(rebuilds.c.rebuild_id == rebuild_id)
            .values(finished_at=sa.func.now())
        )


async def rebuild_status(conn: AsyncConnection, rebuild_id: str) -> Rebuild | None:
    row = (
        await conn.execute(sa.select(rebuilds).where(rebuilds.c.rebuild_id == rebuild_id))
    ).first()
    return None if row is None else Rebuild(**row._asdict())


async def summary_count(conn: AsyncConnection) -> int:
    """Orders the view knows (status not NULL)."""
    count = await conn.scalar(
        sa.select(sa.func.count()).where(order_summaries.c.status.is_not(None))
    )
    return int(count or 0)
