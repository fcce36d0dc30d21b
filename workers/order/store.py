"""The order's tables, in its own database: the event store's ``events`` and ``snapshots``.

One stream per order; its stream id is the order id. An order is loaded from its latest
snapshot of the current schema (if any) plus the events after it, and a snapshot is taken,
in the same transaction as the append, whenever the stream passes a multiple of
``snapshot_every`` events.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import sqlalchemy as sa

from db import event_store
from workers.order import domain
from workers.order.domain import Order

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


async def load_order(conn: asyncpg.Connection, order_id: str) -> LoadedOrder:
    order: Order | None = None
    after = 0
    snapshot = await event_store.load_snapshot(conn, order_id, domain.SCHEMA_VERSION)
    if snapshot is not None:
        version, state = snapshot
        try:
            order, after = domain.from_snapshot(state), version
        except (KeyError, TypeError, ValueError) as error:
            # Same schema version but unreadable: a bug to fix, not a reason to stop. The
            # events are the truth; replay them all.
            log.warning("order %s: unreadable snapshot ignored (%r)", order_id, error)
    stored = await event_store.load(conn, order_id, after_version=after)
    order = domain.fold(order, (event.message for event in stored))
    return LoadedOrder(
        order_id=order_id,
        order=order,
        version=stored[-1].version if stored else after,
        snapshot_version=after,
        events_read=len(stored),
    )


async def append(
    conn: asyncpg.Connection,
    loaded: LoadedOrder,
    new_events: Sequence[domain.OrderEvent],
    metadata: Sequence[Mapping[str, Any]],
    *,
    snapshot_every: int,
) -> int:
    """Append the decided events after the version they were decided on; return the new
    version. Raises ``event_store.ConcurrencyConflict`` if the stream moved meanwhile."""
    version = await event_store.append(conn, loaded.order_id, loaded.version, new_events, metadata)
    if event_store.crossed_snapshot_boundary(loaded.version, version, snapshot_every):
        order = domain.fold(loaded.order, new_events)
        assert order is not None  # events were appended
        await event_store.save_snapshot(
            conn, loaded.order_id, version, domain.SCHEMA_VERSION, domain.to_snapshot(order)
        )
    return version
