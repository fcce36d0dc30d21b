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

from datetime import UTC, datetime

import asyncpg
from aio_pika.abc import AbstractConnection

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
from workers.runtime import metrics
from workers.runtime.errors import PermanentError
from workers.runtime.service import Service
from workers.runtime.settings import Settings

service = Service("order_view", emits=())  # a projection: it emits nothing


ProjectedEvent = OrderPlacedV2 | OrderConfirmed | OrderRejected | PaymentCompleted | ShipmentCreated


@service.legacy_handler()
async def project(uow: UnitOfWork, event: ProjectedEvent) -> None:
    before, after = await _project(uow, event)
    _observe_saga_end(before, after)


async def _project(uow: UnitOfWork, event: ProjectedEvent) -> tuple[domain.Summary, domain.Summary]:
    view_event = to_view_event(uow, event)
    await uow.lock(event.order_id)
    existing = await store.load(uow.conn, event.order_id)
    before = existing or domain.Summary(order_id=event.order_id)
    after = domain.apply(before, view_event)
    if after != before or existing is None:
        await store.save(uow.conn, after)
    return before, after


def _observe_saga_end(before: domain.Summary, after: domain.Summary) -> None:
    """A live saga that just ended, in either style: how long it took, placed to decided.
    (The view sees both styles' ends; a rebuild's replays are history, not observed.)"""
    ended = after.status in ("CONFIRMED", "REJECTED") and before.status != after.status
    if ended and after.created_at is not None and after.updated_at is not None:
        metrics.SAGA_SECONDS.labels(after.saga or "unknown", (after.status or "").lower()).observe(
            max(0.0, (after.updated_at - after.created_at).total_seconds())
        )


async def sample(settings: Settings, conn: asyncpg.Connection, broker: AbstractConnection) -> None:
    """The metrics sampler's gauges of the view: choreographed sagas by state (the
    orchestrator counts orchestrated ones), and how far the view is behind."""
    from workers.order_view import public  # public imports this module

    counts = await store.counts_by_saga_and_status(conn)
    for status in domain.STATUSES:
        metrics.SAGAS.labels("choreography", status.lower()).set(
            counts.get(("choreography", status), 0)
        )
    lag = await public.view_lag(settings, await store.last_update(conn), connection=broker)
    metrics.VIEW_WAITING.set(lag["messages_waiting"])
    metrics.VIEW_LAG.set(public.lag_seconds(lag, datetime.now(UTC)))


service.samplers.append(sample)


ReplayedMessage = OrderPlacedV2 | OrderConfirmed | OrderRejected | OrderEventsReplayed


@service.legacy_handler(from_replays=True)
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
    await _project(uow, message)
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
