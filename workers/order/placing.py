"""Placing an order from outside the fleet: the PlaceOrder command as every client sends it
(``fleet order place``, ``fleet load``, the HTTP API), so that one idempotency key gives one
order id and one message id whoever sends it."""

from __future__ import annotations

import uuid

from contracts import Envelope, PlaceOrder, encode_message
from contracts.routing import commands_exchange
from workers.order.domain import order_id_for
from workers.publisher import ConfirmedPublisher, Outgoing

# Placing with the same idempotency key sends the same message id: the order service's inbox
# drops the repeat before its domain even has to. Never change: keys already sent depend on it.
PLACE_MESSAGE_NAMESPACE = uuid.UUID("0c6f3c39-54a4-4bb1-a3bf-5d3a4a3e9b11")

# Where an order goes when the client names no destination.
DEFAULT_COUNTRY = "DE"


def place_order_message(namespace: str, command: PlaceOrder, *, producer: str) -> Outgoing:
    """``command`` ready to publish: its message id derived from the idempotency key, its
    correlation id the order's id (a saga's correlation id is its order id)."""
    envelope = Envelope.new(
        command.TYPE,
        command.VERSION,
        producer,
        correlation_id=order_id_for(command),
        message_id=str(uuid.uuid5(PLACE_MESSAGE_NAMESPACE, command.idempotency_key)),
    )
    return Outgoing.from_envelope(
        envelope,
        exchange=commands_exchange(namespace),
        routing_key=command.TYPE,
        body=encode_message(command),
    )


async def send_place_order(
    publisher: ConfirmedPublisher, namespace: str, command: PlaceOrder, *, producer: str
) -> str:
    """Publish PlaceOrder, confirmed, and return the order's id."""
    await publisher.publish(place_order_message(namespace, command, producer=producer))
    return order_id_for(command)
