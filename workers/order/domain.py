"""The order's rules, free of I/O: an order is the fold of its events, and every decision is
a pure function of the order as it stands and the request.

    PENDING --confirm--> CONFIRMED
    PENDING --reject---> REJECTED

Both end states are final. Asking again for the state an order is already in changes nothing;
asking a final order to go the other way is refused (a late reply never reopens an order).
Placing is keyed by the order id, which is derived from the client's idempotency key when the
client does not choose it, so the same key can never place a second order.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, get_args

from contracts import (
    Message,
    Money,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    PlaceOrder,
    SagaStyle,
)

# Never change: order ids already derived from idempotency keys depend on it.
ORDER_NAMESPACE = uuid.UUID("bdea0e2b-7871-49b9-8edf-02c2aaa68e6a")

# The shape of Order in snapshots (to_snapshot / from_snapshot). Bump it whenever that shape
# or the meaning of a field changes: snapshots of another schema version are then ignored
# and streams are replayed from their events.
SCHEMA_VERSION = 1


class Status(enum.StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"


FINAL = frozenset({Status.CONFIRMED, Status.REJECTED})


@dataclass(frozen=True)
class Order:
    order_id: str
    status: Status
    customer_id: str
    items: tuple[OrderLine, ...]
    total: Money
    country: str
    saga: SagaStyle
    rejection_reason: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL


OrderEvent = OrderPlaced | OrderConfirmed | OrderRejected


class CorruptStream(Exception):
    """A stream holds an event that cannot follow the ones before it."""


# --- Folding events into an order. ----------------------------------------------------


def evolve(order: Order | None, event: Message) -> Order:
    """The order after ``event`` (already upcast to the newest contract version)."""
    if isinstance(event, OrderPlaced):
        if order is not None:
            raise CorruptStream(f"order {event.order_id} placed twice")
        return Order(
            order_id=event.order_id,
            status=Status.PENDING,
            customer_id=event.customer_id,
            items=tuple(event.items),
            total=event.total,
            country=event.country,
            saga=event.saga,
        )
    if isinstance(event, OrderConfirmed | OrderRejected):
        if order is None:
            raise CorruptStream(f"order {event.order_id}: {event.TYPE} before order.placed")
        if order.final:
            raise CorruptStream(f"order {order.order_id}: {event.TYPE} after {order.status}")
        if isinstance(event, OrderConfirmed):
            return replace(order, status=Status.CONFIRMED)
        return replace(order, status=Status.REJECTED, rejection_reason=event.reason)
    raise CorruptStream(f"an order stream cannot hold {event.TYPE} v{event.VERSION}")


def fold(order: Order | None, events: Iterable[Message]) -> Order | None:
    for event in events:
        order = evolve(order, event)
    return order


# --- Decisions. ------------------------------------------------------------------------


class Outcome(enum.StrEnum):
    PLACED = "placed"
    ALREADY_PLACED = "already placed"
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already confirmed"
    REJECTED = "rejected"
    ALREADY_REJECTED = "already rejected"
    # A final order asked to go the other way: a late reply, ignored.
    REFUSED = "refused"
    # Confirm or reject of an order that was never placed: such a request cannot succeed.
    UNKNOWN_ORDER = "unknown order"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    # What to append to the stream and emit; empty when nothing changes.
    events: tuple[OrderEvent, ...] = ()
    # Why nothing changed, for the log.
    note: str | None = None


def order_id_for(command: PlaceOrder) -> str:
    """The client's order id, else one derived from its idempotency key (same key, same id)."""
    if command.order_id is not None:
        return command.order_id
    return str(uuid.uuid5(ORDER_NAMESPACE, command.idempotency_key))


def order_total(items: Sequence[OrderLine]) -> Money:
    """The sum of the lines' subtotals (PlaceOrder ensures they share one currency)."""
    total = items[0].subtotal()
    for line in items[1:]:
        total += line.subtotal()
    return total


def place(existing: Order | None, command: PlaceOrder) -> Decision:
    order_id = order_id_for(command)
    if existing is not None:
        note = None
        if not _same_order(existing, command):
            note = f"order {order_id} was placed before with other contents; the first one stands"
        return Decision(Outcome.ALREADY_PLACED, note=note)
    placed = OrderPlaced(
        order_id=order_id,
        customer_id=command.customer_id,
        items=command.items,
        total=order_total(command.items),
        country=command.country,
        saga=command.saga,
    )
    return Decision(Outcome.PLACED, (placed,))


def _same_order(order: Order, command: PlaceOrder) -> bool:
    return (order.customer_id, list(order.items), order.country, order.saga) == (
        command.customer_id,
        command.items,
        command.country,
        command.saga,
    )


def confirm(
    existing: Order | None,
    order_id: str,
    *,
    payment_id: str | None = None,
    tracking_number: str | None = None,
) -> Decision:
    """Confirm a pending order; the event names the payment and shipment it was confirmed
    with, so the order's stream alone tells a read model the order's references."""
    if existing is None:
        return Decision(Outcome.UNKNOWN_ORDER, note=f"order {order_id} was never placed")
    if existing.status is Status.CONFIRMED:
        return Decision(Outcome.ALREADY_CONFIRMED)
    if existing.status is Status.REJECTED:
        return Decision(
            Outcome.REFUSED,
            note=f"order {order_id} is REJECTED ({existing.rejection_reason}): "
            "a late confirmation cannot reopen it",
        )
    confirmed = OrderConfirmed(
        order_id=order_id,
        payment_id=payment_id,
        tracking_number=tracking_number,
        saga=existing.saga,
    )
    return Decision(Outcome.CONFIRMED, (confirmed,))


def reject(existing: Order | None, order_id: str, reason: str) -> Decision:
    if existing is None:
        return Decision(Outcome.UNKNOWN_ORDER, note=f"order {order_id} was never placed")
    if existing.status is Status.REJECTED:
        return Decision(Outcome.ALREADY_REJECTED)
    if existing.status is Status.CONFIRMED:
        return Decision(
            Outcome.REFUSED,
            note=f"order {order_id} is CONFIRMED: a late rejection ({reason}) cannot reopen it",
        )
    rejected = OrderRejected(order_id=order_id, reason=reason, saga=existing.saga)
    return Decision(Outcome.REJECTED, (rejected,))


# --- Snapshots: Order <-> JSON-ready dict of shape SCHEMA_VERSION. ---------------------


def to_snapshot(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "status": order.status.value,
        "customer_id": order.customer_id,
        "items": [line.model_dump(mode="json") for line in order.items],
        "total": order.total.model_dump(mode="json"),
        "country": order.country,
        "saga": order.saga,
        "rejection_reason": order.rejection_reason,
    }


_SAGA_STYLES: tuple[SagaStyle, ...] = get_args(SagaStyle)


def from_snapshot(state: Mapping[str, Any]) -> Order:
    """Raises (KeyError, TypeError, ValueError) on a state that is not of this shape."""
    saga = state["saga"]
    if saga not in _SAGA_STYLES:
        raise ValueError(f"unknown saga style {saga!r}")
    reason = state["rejection_reason"]
    order = Order(
        order_id=_text(state["order_id"]),
        status=Status(state["status"]),
        customer_id=_text(state["customer_id"]),
        items=tuple(OrderLine.model_validate(line) for line in state["items"]),
        total=Money.model_validate(state["total"]),
        country=_text(state["country"]),
        saga=saga,
        rejection_reason=None if reason is None else _text(reason),
    )
    if not order.items:
        raise ValueError("an order has at least one item")
    return order


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, not {value!r}")
    return value
