"""``fleet order`` and ``fleet saga``: place an order as a client does, and follow it.

Where an order stands comes from the order service's event store; an orchestrated saga's
state and step log from the orchestrator; a choreographed saga has no state of its own, so
what every service emitted for the order (its correlation id) stands in for one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from contracts import PlaceOrder
from db.adapters import store_once
from workers.operations.reconnect import Reconnects, read_again_on_loss
from workers.orchestrator import public as orchestrator
from workers.order import public as orders
from workers.runtime import catalog, tracing
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.settings import Settings


async def place_order(settings: Settings, command: PlaceOrder) -> str:
    """Send PlaceOrder (confirmed) over a connection of its own; return the order's id."""
    publisher = await ConfirmedPublisher.connect(settings.broker_urls)
    try:
        # The root of the order's trace (the saga's spans in every service descend from it).
        with tracing.span("fleet order place", attributes={"fleet.saga": command.saga}) as span:
            order_id = await orders.send_place_order(
                publisher, settings.namespace, command, producer="fleet-cli"
            )
            span.set_attribute("fleet.order_id", order_id)
            return order_id
    finally:
        await publisher.close()


async def order_status(settings: Settings, order_id: str) -> dict[str, Any] | None:
    status = await orders.order_status(settings, order_id)
    return None if status is None else status.as_dict()


async def wait_until_final(
    settings: Settings, order_id: str, seconds: float, reconnects: Reconnects | None = None
) -> dict[str, Any] | None:
    """The order's status once it is CONFIRMED or REJECTED, or as it is after ``seconds``;
    a read that lost its database connection is made again (counted in ``reconnects``)."""
    reconnects = reconnects or Reconnects()
    deadline = time.monotonic() + seconds
    status = None
    while time.monotonic() < deadline:
        status = await read_again_on_loss(
            lambda: order_status(settings, order_id), reconnects, "order database"
        )
        if status is not None and status["status"] in ("CONFIRMED", "REJECTED"):
            return status
        await asyncio.sleep(0.2)
    return status


async def saga_details(settings: Settings, order_id: str) -> dict[str, Any] | None:
    """An orchestrated saga's state and log; for a choreographed order, the events every
    service emitted for it; None when neither knows the order."""
    details = await orchestrator.saga_details(settings, order_id)
    if details is not None:
        return details
    seen = await events_seen(settings, order_id)
    if not seen:
        return None
    return {"order_id": order_id, "style": "choreography", "events": seen}


async def events_seen(settings: Settings, order_id: str) -> list[dict[str, Any]]:
    """What every service emitted for the order (its correlation id), oldest first; kept
    as long as the outboxes keep published rows."""
    seen: list[dict[str, Any]] = []
    for service in catalog.SERVICES:
        async with store_once(settings.database_url(service)) as store, store.connection() as conn:
            seen.extend(asdict(row) for row in await store.emitted_for(conn, order_id))
    # Envelope times have whole seconds (as AMQP timestamps do): within one second, show
    # the events in the order the saga produces them.
    return sorted(seen, key=lambda row: (row["occurred_at"], _SAGA_ORDER.get(row["type"], 99)))


_SAGA_ORDER = {
    type_: position
    for position, types in enumerate(
        [
            ("order.placed",),
            ("stock.reserved", "stock.reservation_failed"),
            ("payment.completed", "payment.failed"),
            ("shipment.created", "shipment.failed"),
            ("shipment.cancelled",),
            ("payment.refunded",),
            ("stock.released",),
            ("order.confirmed", "order.rejected"),
        ]
    )
    for type_ in types
}
