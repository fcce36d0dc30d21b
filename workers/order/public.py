"""What the rest of the fleet may use of the order service: placing an order as every client
sends it (``fleet order place``, ``fleet load``, the HTTP API), so that one idempotency key
gives one order id and one message id whoever sends it; and where orders stand, read from
its event store as the order service's own role.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts import Envelope, OutgoingMessage, PlaceOrder, encode_message
from contracts.routing import commands_exchange
from db import event_store
from db.engine import connect_once
from workers.order import domain, store
from workers.order.domain import Order, Status, order_id_for, order_total
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.settings import Settings

__all__ = [
    "DEFAULT_COUNTRY",
    "Order",
    "OrderStatus",
    "Status",
    "all_orders",
    "ended_orders",
    "order_id_for",
    "order_status",
    "order_total",
    "place_order_message",
    "send_place_order",
]

SERVICE = "order"

# Placing with the same idempotency key sends the same message id: the order service's inbox
# drops the repeat before its domain even has to. Never change: keys already sent depend on it.
PLACE_MESSAGE_NAMESPACE = uuid.UUID("0c6f3c39-54a4-4bb1-a3bf-5d3a4a3e9b11")

# Where an order goes when the client names no destination.
DEFAULT_COUNTRY = "DE"


def place_order_message(namespace: str, command: PlaceOrder, *, producer: str) -> OutgoingMessage:
    """``command`` ready to publish: its message id derived from the idempotency key, its
    correlation id the order's id (a saga's correlation id is its order id)."""
    envelope = Envelope.new(
        command.TYPE,
        command.VERSION,
        producer,
        correlation_id=order_id_for(command),
        message_id=str(uuid.uuid5(PLACE_MESSAGE_NAMESPACE, command.idempotency_key)),
    )
    return OutgoingMessage.of(
        envelope,
        encode_message(command),
        exchange=commands_exchange(namespace),
        routing_key=command.TYPE,
    )


async def send_place_order(
    publisher: ConfirmedPublisher, namespace: str, command: PlaceOrder, *, producer: str
) -> str:
    """Publish PlaceOrder, confirmed, and return the order's id."""
    await publisher.publish(place_order_message(namespace, command, producer=producer))
    return order_id_for(command)


@dataclass(frozen=True)
class OrderStatus:
    order: Order
    version: int  # the stream's last version

    def as_dict(self) -> dict[str, Any]:
        order = self.order
        return {
            "order_id": order.order_id,
            "status": str(order.status),
            "customer_id": order.customer_id,
            "total": str(order.total),
            "country": order.country,
            "saga": order.saga,
            "reason": order.rejection_reason,
            "version": self.version,
        }


async def order_status(settings: Settings, order_id: str) -> OrderStatus | None:
    """The order as its stream has it now; None if it was never placed."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        loaded = await store.load_order(conn, order_id)
    return None if loaded.order is None else OrderStatus(loaded.order, loaded.version)


async def all_orders(settings: Settings) -> dict[str, Order]:
    """Every order, folded from its whole stream (for invariant checks at quiet points)."""
    streams: dict[str, list[Any]] = defaultdict(list)
    async with connect_once(settings.database_url(SERVICE)) as conn:
        for stored in await event_store.load_all_streams(conn):
            streams[stored.stream_id].append(stored.message)
    orders: dict[str, Order] = {}
    for stream_id, events in streams.items():
        order = domain.fold(None, events)
        if order is not None:
            orders[stream_id] = order
    return orders


async def ended_orders(
    settings: Settings, order_ids: list[str]
) -> dict[str, tuple[Status, datetime]]:
    """Of ``order_ids``, those that ended: their final status and when it was recorded (by
    the database's clock)."""
    final = {"order.confirmed": Status.CONFIRMED, "order.rejected": Status.REJECTED}
    async with connect_once(settings.database_url(SERVICE)) as conn:
        # One array parameter, however many orders a load is following.
        rows = await conn.fetch(
            "SELECT stream_id, type, recorded_at FROM events"
            " WHERE stream_id = ANY($1::text[]) AND type = ANY($2::text[])",
            order_ids,
            list(final),
        )
    return {row["stream_id"]: (final[row["type"]], row["recorded_at"]) for row in rows}
