"""The read model's table, in the order_view's own database, and the statements on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import sqlalchemy as sa

from contracts import OrderEventsReplayed
from workers.order_view.domain import (
    AppliedForReplay,
    Change,
    ProjectedEvent,
    ReplayedMessage,
    ReplaySent,
    SagaEnded,
    Summaries,
    Summary,
)

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
# The latest change (the view's lag, sampled every few seconds) and sagas listed by age.
sa.Index("ix_order_summaries_updated_at", order_summaries.c.updated_at)


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


async def find_summary(conn: asyncpg.Connection, order_id: str) -> Summary | None:
    row = await conn.fetchrow(
        f"SELECT {_SUMMARY_COLUMNS} FROM order_summaries WHERE order_id = $1", order_id
    )
    return None if row is None else _summary(row)


# --- A batch's load and write, in the caller's transaction. -----------------------------


async def load_summaries(
    conn: asyncpg.Connection, messages: Sequence[ProjectedEvent | ReplayedMessage]
) -> Summaries:
    """The stored rows of the batch's orders (the runtime holds each order's lock, so no
    row lock is needed: nobody else writes them before the batch commits)."""
    order_ids = sorted({m.order_id for m in messages if not isinstance(m, OrderEventsReplayed)})
    if not order_ids:  # only the ends of replays
        return Summaries()
    rows = await conn.fetch(
        f"SELECT {_SUMMARY_COLUMNS} FROM order_summaries WHERE order_id = ANY($1::text[])",
        order_ids,
    )
    return Summaries({row["order_id"]: _summary(row) for row in rows})


@dataclass(frozen=True)
class ReplayCount:
    """What a batch adds to one replay's counters."""

    applied: int = 0
    expected: int | None = None
    sent: int | None = None


@dataclass(frozen=True)
class Rows:
    """A batch's changes as the rows they write: each order's row as it ends (one per
    order, however many events it had), and what each replay's counters gain."""

    summaries: dict[str, Summary] = field(default_factory=dict)
    replays: dict[str, ReplayCount] = field(default_factory=dict)


def rows_of(changes: Sequence[Change]) -> Rows:
    rows = Rows()
    for change in changes:
        match change:
            case Summary():
                rows.summaries[change.order_id] = change
            case AppliedForReplay(replay_id, expected):
                count = rows.replays.get(replay_id, ReplayCount())
                rows.replays[replay_id] = ReplayCount(
                    count.applied + 1,
                    expected if expected is not None else count.expected,
                    count.sent,
                )
            case ReplaySent(replay_id, events):
                count = rows.replays.get(replay_id, ReplayCount())
                rows.replays[replay_id] = ReplayCount(count.applied, count.expected, events)
            case SagaEnded():
                pass  # observed once the batch has committed, not stored
    return rows


# The rows, as the batch leaves them, and the replays' counters, in one statement. The
# counters are added to in SQL (another view worker may be counting the same replay), a
# replay nobody started with `fleet view rebuild` (sent with `fleet publish`) gets its row
# on first sight, and a replay is finished once all that was sent is applied: decided
# here, on the counts as they now are. (In ON CONFLICT's SET, ``r`` is the row before.)
_WRITE_VIEW = f"""
WITH summary_rows AS (
    INSERT INTO order_summaries ({_SUMMARY_COLUMNS})
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::int[], $5::numeric[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[],
        $13::int[]
    )
    ON CONFLICT (order_id) DO UPDATE SET
        status = excluded.status, customer_id = excluded.customer_id,
        item_count = excluded.item_count, total_amount = excluded.total_amount,
        currency = excluded.currency, saga = excluded.saga, payment_id = excluded.payment_id,
        tracking_number = excluded.tracking_number,
        rejection_reason = excluded.rejection_reason, created_at = excluded.created_at,
        updated_at = excluded.updated_at, last_version = excluded.last_version
)
INSERT INTO rebuilds AS r (rebuild_id, applied_events, expected_events, sent_events, finished_at)
SELECT rebuild_id, applied, expected, sent, CASE WHEN applied >= sent THEN now() END
FROM unnest($14::text[], $15::int[], $16::int[], $17::int[])
    AS counted(rebuild_id, applied, expected, sent)
ON CONFLICT (rebuild_id) DO UPDATE SET
    applied_events = r.applied_events + excluded.applied_events,
    expected_events = coalesce(excluded.expected_events, r.expected_events),
    sent_events = coalesce(excluded.sent_events, r.sent_events),
    finished_at = coalesce(
        r.finished_at,
        CASE WHEN r.applied_events + excluded.applied_events
            >= coalesce(excluded.sent_events, r.sent_events) THEN now() END
    )
"""


async def write_view(conn: asyncpg.Connection, changes: Sequence[Change]) -> None:
    rows = rows_of(changes)
    # In key order: two transactions upserting the same rows take their locks in one order.
    summaries = [rows.summaries[order_id] for order_id in sorted(rows.summaries)]
    replays = sorted(rows.replays.items())
    await conn.execute(
        _WRITE_VIEW,
        [s.order_id for s in summaries],
        [s.status for s in summaries],
        [s.customer_id for s in summaries],
        [s.item_count for s in summaries],
        [s.total_amount for s in summaries],
        [s.currency for s in summaries],
        [s.saga for s in summaries],
        [s.payment_id for s in summaries],
        [s.tracking_number for s in summaries],
        [s.rejection_reason for s in summaries],
        [s.created_at for s in summaries],
        [s.updated_at for s in summaries],
        [s.last_version for s in summaries],
        [replay_id for replay_id, _ in replays],
        [count.applied for _, count in replays],
        [count.expected for _, count in replays],
        [count.sent for _, count in replays],
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
