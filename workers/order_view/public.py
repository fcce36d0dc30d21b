"""What the rest of the fleet may use of the read model: its query side, shared by
``fleet orders`` and the HTTP API (summaries as plain dicts, read from the view's own
database, and how far behind the write side the view is: what waits in its queues), and the
view's side of ``fleet view rebuild`` (emptying it, following the rebuild's progress)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from aio_pika.abc import AbstractConnection

from db.engine import connect_once
from workers.order_view import lag, store
from workers.order_view.domain import STATUSES, Status, Summary
from workers.order_view.handlers import service
from workers.order_view.lag import lag_seconds
from workers.order_view.store import Rebuild
from workers.runtime.settings import Settings

__all__ = [
    "STATUSES",
    "Rebuild",
    "Status",
    "Summary",
    "find_order",
    "known_order",
    "lag_queues",
    "lag_seconds",
    "order_count",
    "orders_by_saga_and_status",
    "ping",
    "read_view",
    "rebuild_status",
    "saga_orders",
    "start_rebuild",
    "summary_dict",
    "view_lag",
    "view_query",
]

SERVICE = "order_view"


def summary_dict(summary: Summary) -> dict[str, Any]:
    """One order as readers see it. Amounts are decimal strings, never floats; ``total``
    is the amount and currency in one string, for people."""
    known_total = summary.total_amount is not None and summary.currency is not None
    return {
        "order_id": summary.order_id,
        "status": summary.status,
        "customer_id": summary.customer_id,
        "item_count": summary.item_count,
        "total": f"{summary.total_amount} {summary.currency}" if known_total else None,
        "total_amount": format(summary.total_amount, "f") if known_total else None,
        "currency": summary.currency,
        "saga": summary.saga,
        "payment_id": summary.payment_id,
        "tracking_number": summary.tracking_number,
        "rejection_reason": summary.rejection_reason,
        "created_at": summary.created_at,
        "updated_at": summary.updated_at,
        "version": summary.last_version,
    }


def lag_queues(settings: Settings) -> list[str]:
    """The view's queues: what waits there is not projected yet."""
    return lag.lag_queues(service, settings)


async def view_lag(
    settings: Settings, last_update: Any, *, connection: AbstractConnection | None = None
) -> dict[str, Any]:
    """How far behind the write side the view is: what waits in its queues (and their retry
    queues) and when it last applied an order event. Over ``connection`` when given (a
    server's long-lived one), else over a connection of its own."""
    return await lag.view_lag(service, settings, last_update, connection=connection)


async def last_update(conn: asyncpg.Connection) -> datetime | None:
    """Over a connection to the view's database: when it last applied an order event (None:
    never), what ``view_lag`` takes (``fleet status`` reads it beside other databases)."""
    return await store.last_update(conn)


async def orders_by_saga_and_status(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    """Over a connection to the view's database: orders by saga style and status."""
    return await store.counts_by_saga_and_status(conn)


async def known_order(conn: asyncpg.Connection, order_id: str) -> Summary | None:
    """The order's row, unless the view has none or only references without an order event
    yet (status NULL): readers never see such a row."""
    found = await store.find_summary(conn, order_id)
    return found if found is not None and found.status is not None else None


async def find_order(settings: Settings, order_id: str) -> Summary | None:
    """``known_order`` over a connection of its own (a one-shot command's)."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        return await known_order(conn, order_id)


async def saga_orders(
    settings: Settings,
    *,
    saga: str,
    statuses: Sequence[str] | None = None,
    updated_before: datetime | None = None,
    limit: int = 50,
    oldest_first: bool = False,
) -> list[Summary]:
    """Orders of one saga style (``fleet saga list`` reads the choreographed ones here: no
    coordinator keeps their state) with one of ``statuses`` (None: any) whose row last
    changed before ``updated_before`` (None: any), most recently changed first unless
    ``oldest_first``. For an order the view sets ``updated_at`` from the order's own
    events: when it was placed, then when it was confirmed or rejected."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        return await store.saga_listing(
            conn,
            saga=saga,
            statuses=statuses,
            updated_before=updated_before,
            limit=limit,
            oldest_first=oldest_first,
        )


async def read_view(
    conn: asyncpg.Connection,
    *,
    order_id: str | None = None,
    status: str | None = None,
    customer: str | None = None,
    limit: int = 50,
) -> tuple[list[Summary], Any]:
    """One order (``order_id``) or a listing, newest first; and when the view last applied
    an update."""
    if order_id is not None:
        found = await known_order(conn, order_id)
        rows = [found] if found is not None else []
    else:
        rows = await store.listing(conn, status=status, customer_id=customer, limit=limit)
    return rows, await store.last_update(conn)


async def view_query(
    settings: Settings,
    *,
    order_id: str | None = None,
    status: str | None = None,
    customer: str | None = None,
    limit: int = 50,
) -> tuple[list[Summary], dict[str, Any]]:
    """``read_view`` and ``view_lag`` over connections of their own (a one-shot command's)."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        rows, last_update = await read_view(
            conn, order_id=order_id, status=status, customer=customer, limit=limit
        )
    return rows, await view_lag(settings, last_update)


async def ping(conn: asyncpg.Connection) -> None:
    """A round trip that also finds the view's table (so a database that 'fleet db init'
    has not set up is reported too)."""
    await conn.fetchval("SELECT order_id FROM order_summaries LIMIT 1")


# --- The view's side of a rebuild. -----------------------------------------------------


async def start_rebuild(settings: Settings, rebuild_id: str) -> None:
    """Empty the view and open the rebuild's row (the caller then asks for the replay)."""
    async with connect_once(settings.database_url(SERVICE), transaction=True) as conn:
        await store.start_rebuild(conn, rebuild_id)


async def rebuild_status(settings: Settings, rebuild_id: str) -> Rebuild | None:
    async with connect_once(settings.database_url(SERVICE)) as conn:
        return await store.rebuild_status(conn, rebuild_id)


async def order_count(settings: Settings) -> int:
    """How many orders the view knows."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        return await store.summary_count(conn)
