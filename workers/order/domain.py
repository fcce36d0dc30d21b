"""The order's rules, free of I/O: an order is the fold of its events, and every decision is
a pure function of the orders as they stand and the request.

    PENDING --confirm--> CONFIRMED
    PENDING --reject---> REJECTED

Both end states are final. Asking again for the state an order is already in changes nothing;
asking a final order to go the other way is refused (a late reply never reopens an order).
Placing is keyed by the order id, which is derived from the client's idempotency key when the
client does not choose it, so the same key can never place a second order.

    orders = Orders(streams={...}, now=...)             # what store.load_orders read
    decision = confirm_order(orders, command, settings=..., received=...)

A decision appends at most one event to the order's stream, at its next version, and sends
that same event (same message id, its stream version in a header); whenever the stream
passes a multiple of ``settings.snapshot_every`` it also takes a snapshot of the order.
``replay_events`` sends a page of the event store to a read model, as the events were first
sent.
"""

from __future__ import annotations

import contextlib
import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Never, get_args

from contracts import (
    ConfirmOrder,
    Message,
    Money,
    OrderConfirmed,
    OrderEventsReplayed,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    PaymentFailed,
    PlaceOrder,
    Received,
    RejectOrder,
    ReplayOrderEvents,
    SagaStyle,
    Send,
    ShipmentCreated,
    ShipmentFailed,
    StockReservationFailed,
)
from contracts.envelope import REPLAY_EXPECTED_HEADER, REPLAY_ID_HEADER, STREAM_VERSION_HEADER
from db.event_store import Page, PageRequest, StoredEvent, crossed_snapshot_boundary
from workers.order.settings import OrderSettings
from workers.runtime.decision import Decision
from workers.runtime.errors import PermanentError

# Never change: order ids already derived from idempotency keys depend on it.
ORDER_NAMESPACE = uuid.UUID("bdea0e2b-7871-49b9-8edf-02c2aaa68e6a")
# Never change: the message ids of stored events are derived from it (``event_message_id``).
EVENT_NAMESPACE = uuid.UUID("5b7d0f5e-3c1a-4e8e-9a7e-2f4c6d8b1a93")

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


# --- Changes: what a decision does to the event store (store.write_orders stores them). --


@dataclass(frozen=True)
class Appended:
    """``event`` is version ``version`` of the order's stream, under the envelope it is sent
    with (the store keeps that envelope's ids and time as the event's metadata)."""

    order_id: str
    version: int
    event: OrderEvent
    message_id: str
    correlation_id: str
    causation_id: str
    occurred_at: datetime


@dataclass(frozen=True)
class SnapshotTaken:
    """The order as it stands at ``version`` of its stream, kept to load it from."""

    order_id: str
    version: int
    order: Order


Change = Appended | SnapshotTaken


@dataclass(frozen=True)
class Stream:
    """An order's stream as a decision sees it: the order folded up to ``version``."""

    order: Order | None = None  # None: never placed
    version: int = 0  # 0: no stream


@dataclass(frozen=True)
class Orders:
    """What a batch decides on: the streams of its orders (absent: never placed), and the
    time its decisions happen at."""

    now: datetime
    streams: Mapping[str, Stream] = field(default_factory=dict)

    def stream(self, order_id: str) -> Stream:
        return self.streams.get(order_id, Stream())

    def apply(self, change: Change) -> Orders:
        if isinstance(change, SnapshotTaken):
            return self
        before = self.stream(change.order_id)
        stream = Stream(evolve(before.order, change.event), change.version)
        return replace(self, streams={**self.streams, change.order_id: stream})


# --- Decisions. ------------------------------------------------------------------------

# In choreography the order reacts to the other services' events (shipment.created
# confirms; a failure event rejects); in orchestration only the orchestrator's commands move
# it (handlers.py leaves the events of orchestrated sagas before any transaction).
FailureEvent = StockReservationFailed | PaymentFailed | ShipmentFailed
# What asks to place, confirm or reject an order.
OrderRequest = PlaceOrder | ConfirmOrder | ShipmentCreated | RejectOrder | FailureEvent


def order_id_for(command: PlaceOrder) -> str:
    """The client's order id, else one derived from its idempotency key (same key, same id)."""
    if command.order_id is not None:
        return command.order_id
    return str(uuid.uuid5(ORDER_NAMESPACE, command.idempotency_key))


def order_id_of(request: OrderRequest) -> str:
    """The order a request is about."""
    return order_id_for(request) if isinstance(request, PlaceOrder) else request.order_id


def event_message_id(order_id: str, version: int) -> str:
    """The message id of an order's event: one per stream version, so the event stored and
    the event sent carry the same id, however often the decision is made."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{order_id}:{version}"))


def order_total(items: Sequence[OrderLine]) -> Money:
    """The sum of the lines' subtotals (PlaceOrder ensures they share one currency)."""
    total = items[0].subtotal()
    for line in items[1:]:
        total += line.subtotal()
    return total


def place_order(
    orders: Orders, command: PlaceOrder, *, settings: OrderSettings, received: Received
) -> Decision[Change]:
    """Place the order once per order id; placing it again sends nothing new."""
    order_id = order_id_for(command)
    existing = orders.stream(order_id).order
    if existing is not None:
        if not _same_order(existing, command):
            return Decision(
                note=f"order {order_id} was placed before with other contents; the first one stands"
            )
        return Decision(note=f"order {order_id}: already placed")
    placed = OrderPlaced(
        order_id=order_id,
        customer_id=command.customer_id,
        items=command.items,
        total=order_total(command.items),
        country=command.country,
        saga=command.saga,
    )
    # order.placed starts the order's correlation: everything the saga does carries its id.
    return _append(orders, placed, settings, received, correlation_id=order_id)


def _same_order(order: Order, command: PlaceOrder) -> bool:
    return (order.customer_id, list(order.items), order.country, order.saga) == (
        command.customer_id,
        command.items,
        command.country,
        command.saga,
    )


def confirm_order(
    orders: Orders,
    message: ConfirmOrder | ShipmentCreated,
    *,
    settings: OrderSettings,
    received: Received,
) -> Decision[Change]:
    """Confirm a pending order; the event names the payment and shipment it was confirmed
    with, so the order's stream alone tells a read model the order's references."""
    order = _placed_order(orders, message.order_id)
    if isinstance(message, ShipmentCreated) and order.saga != "choreography":
        return _not_choreographed(order, message)
    if order.status is Status.CONFIRMED:
        return Decision(note=f"order {order.order_id}: already confirmed")
    if order.status is Status.REJECTED:
        return Decision(
            note=f"order {order.order_id} is REJECTED ({order.rejection_reason}):"
            " a late confirmation cannot reopen it"
        )
    confirmed = OrderConfirmed(
        order_id=order.order_id,
        payment_id=message.payment_id,
        tracking_number=message.tracking_number,
        saga=order.saga,
    )
    return _append(orders, confirmed, settings, received)


def reject_order(
    orders: Orders,
    message: RejectOrder | FailureEvent,
    *,
    settings: OrderSettings,
    received: Received,
) -> Decision[Change]:
    order = _placed_order(orders, message.order_id)
    if not isinstance(message, RejectOrder) and order.saga != "choreography":
        return _not_choreographed(order, message)
    if order.status is Status.REJECTED:
        return Decision(note=f"order {order.order_id}: already rejected")
    if order.status is Status.CONFIRMED:
        return Decision(
            note=f"order {order.order_id} is CONFIRMED:"
            f" a late rejection ({message.reason}) cannot reopen it"
        )
    rejected = OrderRejected(order_id=order.order_id, reason=message.reason, saga=order.saga)
    return _append(orders, rejected, settings, received)


def _placed_order(orders: Orders, order_id: str) -> Order:
    """The order, which must have been placed: a reply about another can never succeed."""
    order = orders.stream(order_id).order
    if order is None:
        raise PermanentError(f"order {order_id} was never placed")
    return order


def _not_choreographed(order: Order, event: ShipmentCreated | FailureEvent) -> Decision[Change]:
    return Decision(
        note=f"order {order.order_id}: {event.TYPE} says choreography but the order was"
        f" placed for {order.saga}; ignored"
    )


def _append(
    orders: Orders,
    event: OrderEvent,
    settings: OrderSettings,
    received: Received,
    *,
    correlation_id: str | None = None,
) -> Decision[Change]:
    """``event`` at the stream's next version, sent as stored; a snapshot when due."""
    stream = orders.stream(event.order_id)
    version = stream.version + 1
    appended = Appended(
        order_id=event.order_id,
        version=version,
        event=event,
        message_id=event_message_id(event.order_id, version),
        correlation_id=correlation_id or received.envelope.correlation_id,
        causation_id=received.envelope.message_id,
        # Whole seconds, as an envelope's time (an AMQP timestamp) has them: the time stored
        # is the time sent.
        occurred_at=orders.now.replace(microsecond=0),
    )
    changes: tuple[Change, ...] = (appended,)
    if crossed_snapshot_boundary(stream.version, version, settings.snapshot_every):
        order = evolve(stream.order, event)
        changes += (SnapshotTaken(event.order_id, version, order),)
    # The stream version travels with the event, so a projection can apply an order's
    # events in stream order whatever order they arrive in.
    sent = Send(
        event,
        message_id=appended.message_id,
        correlation_id=appended.correlation_id,
        headers={STREAM_VERSION_HEADER: version},
        occurred_at=appended.occurred_at,
    )
    note = f"order {event.order_id}: {event.TYPE} (version {version})"
    return Decision(changes=changes, send=(sent,), note=note)


# --- Replaying the store to a read model. ----------------------------------------------


@dataclass(frozen=True)
class ReplayPages:
    """The pages of the event store a batch of replay commands asks for."""

    pages: Mapping[PageRequest, Page]

    def apply(self, change: Never) -> ReplayPages:
        return self  # a replay changes nothing


def page_request(command: ReplayOrderEvents) -> PageRequest:
    """The page ``command`` asks for; the first page of a replay also counts the events the
    replay will send (``expected``), up to the store's end as it is then."""
    return PageRequest(
        after_position=command.after_position,
        up_to_position=command.up_to_position,
        count=command.expected is None,
    )


def replay_events(
    pages: ReplayPages, command: ReplayOrderEvents, *, settings: OrderSettings
) -> Decision[Never]:
    """Send one page of the event store, in store order, to the read model named by
    ``command.target``, then ask for the next page, or say the replay is over.

    Each page is one transaction whose outbox rows the relay publishes, so a replay of any
    length survives restarts and is sent exactly as stored (upcast to the newest contract
    versions, with the event's first message time and stream version). The replay covers
    the store as it is when the first page is read (``up_to_position``).
    """
    page = pages.pages[page_request(command)]
    expected = command.expected if command.expected is not None else page.count
    replayed = tuple(
        Send(
            stored.message,
            message_id=_replay_message_id(command.replay_id, stored),
            correlation_id=stored.metadata.get("correlation_id") or stored.stream_id,
            occurred_at=_first_occurred_at(stored),
            headers={
                STREAM_VERSION_HEADER: stored.version,
                REPLAY_ID_HEADER: command.replay_id,
                REPLAY_EXPECTED_HEADER: expected,
            },
            replay_to=command.target,
        )
        for stored in page.events
    )
    sent = command.sent + len(page.events)
    note = f"replay {command.replay_id} to {command.target}: sent {sent} of {expected} event(s)"
    full = len(page.events) == settings.replay_page_size
    if full and page.events[-1].global_position < page.up_to_position:
        next_page = command.model_copy(
            update={
                "after_position": page.events[-1].global_position,
                "up_to_position": page.up_to_position,
                "expected": expected,
                "sent": sent,
            }
        )
        return Decision(send=(*replayed, next_page), note=note)
    done = OrderEventsReplayed(replay_id=command.replay_id, target=command.target, events=sent)
    return Decision(send=(*replayed, Send(done, replay_to=command.target)), note=f"{note}; done")


def _replay_message_id(replay_id: str, stored: StoredEvent) -> str:
    """One id per event per replay: a page sent twice is deduplicated by the reader, and a
    second replay is not mistaken for the first."""
    return str(uuid.uuid5(uuid.UUID(replay_id), f"{stored.stream_id}:{stored.version}"))


def _first_occurred_at(stored: StoredEvent) -> datetime:
    """When the event was first sent (kept in its metadata); for events stored before that
    was kept, when it was recorded."""
    text = stored.metadata.get("occurred_at")
    if isinstance(text, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text)
    return stored.recorded_at


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
