"""The order_view's handlers: project an order's events into its summary row, live
(``project``) and from a replay of the order service's event store (``rebuild``).

The row is read under the order's lock, changed by the pure ``domain.apply`` and written
back, in one transaction with the inbox entry; the view emits nothing.

Order events carry their stream version in the ``x-stream-version`` header (set by the
order service), which is how a late order.placed knows not to undo a confirmation. Stock
events are not projected: stock.reserved carries nothing the order events do not already
give the row, so binding them would only add traffic.
"""

from __future__ import annotations

from datetime import datetime

from contracts import (
    OrderConfirmed,
    OrderEventsReplayed,
    OrderPlacedV2,
    OrderRejected,
    PaymentCompleted,
    ShipmentCreated,
)
from contracts.envelope import REPLAY_EXPECTED_HEADER, REPLAY_ID_HEADER, STREAM_VERSION_HEADER
from db.unit_of_work import UnitOfWork
from workers.order_view import domain, store
from workers.runtime.errors import PermanentError
from workers.runtime.service import Service

service = Service("order_view", emits=())  # a projection: it emits nothing


ProjectedEvent = OrderPlacedV2 | OrderConfirmed | OrderRejected | PaymentCompleted | ShipmentCreated


@service.handler()
async def project(uow: UnitOfWork, event: ProjectedEvent) -> None:
    view_event = to_view_event(uow, event)
    await uow.lock(event.order_id)
    existing = await store.load(uow.conn, event.order_id)
    before = existing or domain.Summary(order_id=event.order_id)
    after = domain.apply(before, view_event)
    if after != before or existing is None:
        await store.save(uow.conn, after)


ReplayedMessage = OrderPlacedV2 | OrderConfirmed | OrderRejected | OrderEventsReplayed


@service.handler(from_replays=True)
async def rebuild(uow: UnitOfWork, message: ReplayedMessage) -> None:
    """Apply what the order service replays from its event store (``fleet view rebuild``)
    exactly as the live events, and count it for the rebuild's progress.

    Live events keep being applied meanwhile: the projection commutes, so the two streams
    interleave safely, and the replayed order events alone give every order its full row.
    """
    if isinstance(message, OrderEventsReplayed):
        await store.replay_ended(uow.conn, message.replay_id, message.events)
        return
    replay_id, expected = _replay_headers(uow)
    await project(uow, message)
    await store.count_applied(uow.conn, replay_id, expected)


def _replay_headers(uow: UnitOfWork) -> tuple[str, int | None]:
    headers = uow.received.headers if uow.received is not None else {}
    replay_id = headers.get(REPLAY_ID_HEADER)
    if isinstance(replay_id, bytes):
        replay_id = replay_id.decode("utf-8", errors="replace")
    if not isinstance(replay_id, str) or not replay_id:
        raise PermanentError(f"a replayed event must carry the {REPLAY_ID_HEADER} header")
    expected = headers.get(REPLAY_EXPECTED_HEADER)
    return replay_id, expected if isinstance(expected, int) and expected >= 0 else None


def to_view_event(uow: UnitOfWork, event: ProjectedEvent) -> domain.ViewEvent:
    if isinstance(event, PaymentCompleted):
        return domain.Paid(event.payment_id)
    if isinstance(event, ShipmentCreated):
        return domain.Shipped(event.tracking_number)
    occurred_at, version = _occurred_and_version(
        uow, domain.PLACED_VERSION if isinstance(event, OrderPlacedV2) else domain.DECIDED_VERSION
    )
    if isinstance(event, OrderPlacedV2):
        return domain.Placed(
            version=version,
            customer_id=event.customer_id,
            item_count=sum(item.quantity for item in event.items),
            total_amount=event.total.amount,
            currency=event.total.currency,
            saga=event.saga,
            occurred_at=occurred_at,
        )
    if isinstance(event, OrderConfirmed):
        return domain.Decided(
            version, "CONFIRMED", None, occurred_at, event.payment_id, event.tracking_number
        )
    return domain.Decided(version, "REJECTED", event.reason, occurred_at)


def _occurred_and_version(uow: UnitOfWork, default: int) -> tuple[datetime, int]:
    if uow.received is None:
        raise PermanentError("order_view projects only received messages (no envelope)")
    raw = uow.received.headers.get(STREAM_VERSION_HEADER, default)
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise PermanentError(f"{STREAM_VERSION_HEADER} {raw!r} is not an int") from None
    if isinstance(raw, bool) or version < 1:
        raise PermanentError(f"{STREAM_VERSION_HEADER} {raw!r} is not a positive int")
    return uow.received.envelope.occurred_at, version
