"""The read model's table, in the order_view's own database, and the statements on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import sqlalchemy as sa

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


# --- Reads and writes (asyncpg, one round trip each). -------------------------------

_SUMMARY_COLUMNS = (
    "order_id, status, customer_id, item_count, total_amount, currency, saga, payment_id,"
    " tracking_number, rejection_reason, created_at, updated_at, last_version"
)


def _summary(row: asyncpg.Record) -> Summary:
    return Summary(**dict(row))


async def load(conn: asyncpg.Connection, order_id: str) -> Summary | None:
    row = await conn.fetchrow(
        f"SELECT {_SUMMARY_COLUMNS} FROM order_summaries WHERE order_id = $1", order_id
    )
    return None if row is None else _summary(row)


_SAVE = f"""
INSERT INTO order_summaries ({_SUMMARY_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (order_id) DO UPDATE SET
    status = excluded.status, customer_id = excluded.customer_id,
    item_count = excluded.item_count, total_amount = excluded.total_amount,
    currency = excluded.currency, saga = excluded.saga, payment_id = excluded.payment_id,
    tracking_number = excluded.tracking_number, rejection_reason = excluded.rejection_reason,
    created_at = excluded.created_at, updated_at = excluded.updated_at,
    last_version = excluded.last_version
"""


async def save(conn: asyncpg.Connection, summary: Summary) -> None:
    s = summary
    await conn.execute(
        _SAVE,
        s.order_id,
        s.status,
        s.customer_id,
        s.item_count,
        s.total_amount,
        s.currency,
        s.saga,
        s.payment_id,
        s.tracking_number,
        s.rejection_reason,
        s.created_at,
        s.updated_at,
        s.last_version,
    )


async def listing(
    conn: asyncpg.Connection,
    *,
    status: str | None = None,
    customer_id: str | None = None,
    limit: int = 50,
) -> list[Summary]:
    """Orders the view knows (status not NULL), newest first."""
    rows = await conn.fetch(
        f"SELECT {_SUMMARY_COLUMNS} FROM order_summaries WHERE status IS NOT NULL"
        " AND ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR customer_id = $2)"
        " ORDER BY created_at DESC NULLS LAST, order_id LIMIT $3",
        status,
        customer_id,
        limit,
    )
    return [_summary(row) for row in rows]


async def saga_listing(
    conn: asyncpg.Connection,
    *,
    saga: str,
    statuses: Sequence[str] | None = None,
    updated_before: datetime | None = None,
    limit: int = 50,
    oldest_first: bool = False,
) -> list[Summary]:
    """Orders of one saga style with one of ``statuses`` (None: any) whose row last changed
    before ``updated_before`` (None: any), most recently changed first unless
    ``oldest_first``."""
    order = "ASC" if oldest_first else "DESC"
    rows = await conn.fetch(
        f"SELECT {_SUMMARY_COLUMNS} FROM order_summaries WHERE status IS NOT NULL"
        " AND saga = $1 AND ($2::text[] IS NULL OR status = ANY($2))"
        " AND ($3::timestamptz IS NULL OR updated_at <= $3)"
        f" ORDER BY updated_at {order} NULLS LAST, order_id LIMIT $4",
        saga,
        None if statuses is None else list(statuses),
        updated_before,
        limit,
    )
    return [_summary(row) for row in rows]


async def last_update(conn: asyncpg.Connection) -> datetime | None:
    """When the view last applied an order event (None when it has applied none)."""
    at: datetime | None = await conn.fetchval("SELECT max(updated_at) FROM order_summaries")
    return at


async def counts_by_saga_and_status(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    """Orders by saga style and status (an order seen only through a late event has none)."""
    rows = await conn.fetch(
        "SELECT coalesce(saga, 'unknown') AS saga, coalesce(status, 'unknown') AS status,"
        " count(*) AS n FROM order_summaries GROUP BY 1, 2"
    )
    return {(row["saga"], row["status"]): row["n"] for row in rows}


# --- Rebuilds. -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rebuild:
    rebuild_id: str
    requested_at: datetime
    expected_events: int | None
    applied_events: int
    sent_events: int | None
    finished_at: datetime | None


async def start_rebuild(conn: asyncpg.Connection, rebuild_id: str) -> None:
    """Empty the view and open a rebuild row (the caller then asks for the replay)."""
    await conn.execute("TRUNCATE order_summaries")
    await conn.execute("INSERT INTO rebuilds (rebuild_id) VALUES ($1)", rebuild_id)


# Upserts: a replay nobody started with `fleet view rebuild` (sent with `fleet publish`)
# still counts, its row made on first sight. Finished once all that was sent is applied.
_COUNT_APPLIED = """
INSERT INTO rebuilds AS r (rebuild_id, applied_events, expected_events) VALUES ($1, 1, $2)
ON CONFLICT (rebuild_id) DO UPDATE
SET applied_events = r.applied_events + 1,
    expected_events = coalesce(excluded.expected_events, r.expected_events)
RETURNING applied_events, sent_events, finished_at
"""
_REPLAY_ENDED = """
INSERT INTO rebuilds AS r (rebuild_id, sent_events) VALUES ($1, $2)
ON CONFLICT (rebuild_id) DO UPDATE SET sent_events = excluded.sent_events
RETURNING applied_events, sent_events, finished_at
"""


async def count_applied(conn: asyncpg.Connection, rebuild_id: str, expected: int | None) -> None:
    """One more replayed event applied (in the transaction that applied it)."""
    await _finish_if_done(
        conn, rebuild_id, await conn.fetchrow(_COUNT_APPLIED, rebuild_id, expected)
    )


async def replay_ended(conn: asyncpg.Connection, rebuild_id: str, sent: int) -> None:
    """The replay says it sent ``sent`` events in all."""
    await _finish_if_done(conn, rebuild_id, await conn.fetchrow(_REPLAY_ENDED, rebuild_id, sent))


async def _finish_if_done(conn: asyncpg.Connection, rebuild_id: str, row: asyncpg.Record) -> None:
    applied, sent, finished_at = row["applied_events"], row["sent_events"], row["finished_at"]
    if finished_at is None and sent is not None and applied >= sent:
        await conn.execute(
            "UPDATE rebuilds SET finished_at = now() WHERE rebuild_id = $1", rebuild_id
        )


async def rebuild_status(conn: asyncpg.Connection, rebuild_id: str) -> Rebuild | None:
    row = await conn.fetchrow(
        "SELECT rebuild_id, requested_at, expected_events, applied_events, sent_events,"
        " finished_at FROM rebuilds WHERE rebuild_id = $1",
        rebuild_id,
    )
    return None if row is None else Rebuild(**dict(row))


async def summary_count(conn: asyncpg.Connection) -> int:
    """Orders the view knows (status not NULL)."""
    sql = "SELECT count(*) FROM order_summaries WHERE status IS NOT NULL"
    return int(await conn.fetchval(sql))
