"""The order's tables, in its own database: the event store's ``events`` and ``snapshots``.

One stream per order; its stream id is the order id. An order is loaded from its latest
snapshot of the current schema (if any) plus the events after it; a batch loads all its
orders' streams in one statement, and appends all their events in another (and, when some
are due, their snapshots in a third).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import sqlalchemy as sa

from contracts import ReplayOrderEvents
from db import event_store
from workers.order import domain
from workers.order.domain import Appended, Change, Order, SnapshotTaken
from workers.order.settings import OrderSettings

log = logging.getLogger("fleet.order")

metadata = sa.MetaData()
events, snapshots = event_store.add_event_store_tables(metadata)


@dataclass(frozen=True)
class LoadedOrder:
    order_id: str
    order: Order | None  # None: never placed
    version: int  # the stream's version the order was folded up to (0: no stream)
    snapshot_version: int  # the snapshot it started from (0: none usable)
    events_read: int  # events read and folded after the snapshot


async def load_streams(conn: asyncpg.Connection, order_ids: Collection[str]) -> list[LoadedOrder]:
    """The orders, each from its snapshot and the events after it: one statement (two when
    a snapshot cannot be read)."""
    tails = await event_store.load_streams(conn, order_ids, domain.SCHEMA_VERSION)
    loaded: dict[str, LoadedOrder] = {}
    unreadable: list[str] = []
    for order_id, tail in tails.items():
        order: Order | None = None
        after = 0
        if tail.snapshot is not None:
            version, state = tail.snapshot
            try:
                order, after = domain.from_snapshot(state), version
            except (KeyError, TypeError, ValueError) as error:
                # Same schema version but unreadable: a bug to fix, not a reason to stop. The
                # events are the truth; replay them all.
                log.warning("order %s: unreadable snapshot ignored (%r)", order_id, error)
                unreadable.append(order_id)
                continue
        loaded[order_id] = _folded(order_id, order, after, tail.events)
    if unreadable:
        for order_id, tail in (await event_store.load_streams(conn, unreadable, None)).items():
            loaded[order_id] = _folded(order_id, None, 0, tail.events)
    return [loaded[order_id] for order_id in order_ids]


def _folded(
    order_id: str, order: Order | None, after: int, stored: list[event_store.StoredEvent]
) -> LoadedOrder:
    return LoadedOrder(
        order_id=order_id,
        order=domain.fold(order, (event.message for event in stored)),
        version=stored[-1].version if stored else after,
        snapshot_version=after,
        events_read=len(stored),
    )


async def load_order(conn: asyncpg.Connection, order_id: str) -> LoadedOrder:
    (loaded,) = await load_streams(conn, [order_id])
    return loaded


async def load_orders(
    conn: asyncpg.Connection, messages: Sequence[domain.OrderRequest]
) -> domain.Orders:
    """What a batch of place, confirm and reject decisions needs: its orders' streams, and
    the time (the runtime holds each order's lock, so no other handler appends meanwhile)."""
    order_ids = sorted({domain.order_id_of(message) for message in messages})
    streams = {
        loaded.order_id: domain.Stream(loaded.order, loaded.version)
        for loaded in await load_streams(conn, order_ids)
    }
    return domain.Orders(now=datetime.now(UTC), streams=streams)


@dataclass(frozen=True)
class Rows:
    """A batch's changes as rows: every event appended, and each order's last snapshot (a
    statement cannot write one snapshot row twice)."""

    events: list[event_store.NewEvent] = field(default_factory=list)
    snapshots: dict[str, event_store.Snapshot] = field(default_factory=dict)


def rows_of(changes: Sequence[Change]) -> Rows:
    rows = Rows()
    for change in changes:
        match change:
            case Appended():
                rows.events.append(
                    event_store.NewEvent(
                        change.order_id,
                        change.version,
                        change.event,
                        {
                            "message_id": change.message_id,
                            "correlation_id": change.correlation_id,
                            "causation_id": change.causation_id,
                            # A replay sends the event with the time it first had.
                            "occurred_at": change.occurred_at.isoformat(),
                        },
                    )
                )
            case SnapshotTaken(order_id, version, order):
                rows.snapshots[order_id] = event_store.Snapshot(
                    order_id, version, domain.SCHEMA_VERSION, domain.to_snapshot(order)
                )
    return rows


async def write_orders(conn: asyncpg.Connection, changes: Sequence[Change]) -> None:
    """The batch's events in one statement, then its snapshots, if any, in another. Raises
    ``event_store.ConcurrencyConflict`` if a writer outside the order's lock appended to one
    of the streams meanwhile."""
    rows = rows_of(changes)
    await event_store.append_events(conn, rows.events)
    await event_store.save_snapshots(conn, list(rows.snapshots.values()))


async def load_pages(
    conn: asyncpg.Connection,
    messages: Sequence[ReplayOrderEvents],
    *,
    settings: OrderSettings,
) -> domain.ReplayPages:
    """The pages of the event store a batch of replay commands asks for, in one statement."""
    requests = list(dict.fromkeys(domain.page_request(command) for command in messages))
    pages = await event_store.read_pages(conn, requests, settings.replay_page_size)
    return domain.ReplayPages(dict(zip(requests, pages, strict=True)))
