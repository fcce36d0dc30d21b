"""The order's handlers: load the order's stream, decide (domain), append + emit.

Each handler appends the events it decided on to the order's stream and emits the same
events through the outbox, in one transaction with its inbox entry. Two handlers deciding
on the same version of one order collide on the stream's primary key: the loser's
transaction is rolled back (``ConcurrencyConflict``, transient) and its message is retried
after a delay, when it decides again on the winner's outcome.

In choreography the order reacts to the other services' events (shipment.created
confirms; a failure event rejects); in orchestration only the orchestrator's commands move
it, and those events are acknowledged and ignored.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import datetime
from typing import Any

from contracts import (
    ConfirmOrder,
    OrderEventsReplayed,
    PaymentFailed,
    PlaceOrder,
    RejectOrder,
    ReplayOrderEvents,
    ShipmentCreated,
    ShipmentFailed,
    StockReservationFailed,
    command_or_choreography,
)
from contracts.envelope import REPLAY_EXPECTED_HEADER, REPLAY_ID_HEADER, STREAM_VERSION_HEADER
from contracts.routing import replays_exchange
from db import event_store
from db.unit_of_work import UnitOfWork
from workers.order import domain, store
from workers.order.settings import OrderSettings
from workers.runtime import tracing
from workers.runtime.errors import PermanentError
from workers.runtime.service import Service

log = logging.getLogger("fleet.order")

service = Service(
    "order",
    settings=OrderSettings,
    emits=(
        "order.placed",
        "order.confirmed",
        "order.rejected",
        "order.replay_events",  # the next page of a replay, to itself
        # not order.events_replayed: it goes to <ns>.replays only, which emits cannot say
    ),
)

FailureEvent = StockReservationFailed | PaymentFailed | ShipmentFailed


@service.legacy_handler()
async def place_order(uow: UnitOfWork, command: PlaceOrder, settings: OrderSettings) -> None:
    """Place the order once per order id; placing it again emits nothing new."""
    order_id = domain.order_id_for(command)
    loaded = await store.load_order(uow.conn, order_id)
    decision = domain.place(loaded.order, command)
    # order.placed starts the order's correlation: everything the saga does carries its id.
    await _apply(uow, loaded, decision, settings, correlation_id=order_id)


@service.legacy_handler()
async def replay_events(
    uow: UnitOfWork, command: ReplayOrderEvents, settings: OrderSettings
) -> None:
    """Send one page of the event store, in store order, to the read model named by
    ``command.target``, then ask for the next page, or say the replay is over.

    Each page is one transaction whose outbox rows the relay publishes, so a replay of any
    length survives restarts and is sent exactly as stored (upcast to the newest contract
    versions, with the event's first message time and stream version). The replay covers
    the store as it is when the first page is read (``up_to_position``).
    """
    up_to = command.up_to_position
    if up_to is None:
        up_to = await event_store.last_position(uow.conn)
    expected = command.expected
    if expected is None:
        expected = await event_store.count_events(uow.conn, up_to)
    page_size = settings.replay_page_size
    # A span per page: the replayed events are emitted in it, so the view's side of the
    # rebuild continues its trace.
    with tracing.span(
        "rebuild page",
        attributes={"fleet.replay_id": command.replay_id, "fleet.replay.sent": command.sent},
    ) as span:
        page = await event_store.all_events(
            uow.conn, after_position=command.after_position, limit=page_size, up_to_position=up_to
        )
        span.set_attribute("fleet.replay.page_events", len(page))
        route = (replays_exchange(uow.namespace), command.target)
        for stored in page:
            uow.emit(
                stored.message,
                message_id=_replay_message_id(command.replay_id, stored),
                correlation_id=stored.metadata.get("correlation_id") or stored.stream_id,
                occurred_at=_first_occurred_at(stored),
                headers={
                    STREAM_VERSION_HEADER: stored.version,
                    REPLAY_ID_HEADER: command.replay_id,
                    REPLAY_EXPECTED_HEADER: expected,
                },
                route=route,
            )
        sent = command.sent + len(page)
        if len(page) == page_size and page[-1].global_position < up_to:
            next_page = command.model_copy(
                update={
                    "after_position": page[-1].global_position,
                    "up_to_position": up_to,
                    "expected": expected,
                    "sent": sent,
                }
            )
            uow.emit(next_page)
        else:
            done = OrderEventsReplayed(
                replay_id=command.replay_id, target=command.target, events=sent
            )
            uow.emit(done, route=route)
    log.info(
        "replay %s to %s: sent %d of %d event(s)%s",
        command.replay_id,
        command.target,
        sent,
        expected,
        "" if len(page) == page_size else "; done",
    )


def _replay_message_id(replay_id: str, stored: event_store.StoredEvent) -> str:
    """One id per event per replay: a page sent twice is deduplicated by the reader, and a
    second replay is not mistaken for the first."""
    return str(uuid.uuid5(uuid.UUID(replay_id), f"{stored.stream_id}:{stored.version}"))


def _first_occurred_at(stored: event_store.StoredEvent) -> datetime:
    """When the event was first emitted (kept in its metadata); for events stored before
    that was kept, when it was recorded."""
    text = stored.metadata.get("occurred_at")
    if isinstance(text, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text)
    return stored.recorded_at


# In orchestration the orchestrator confirms and rejects orders itself (with commands).
@service.legacy_handler(when=command_or_choreography)
async def confirm_order(
    uow: UnitOfWork, message: ConfirmOrder | ShipmentCreated, settings: OrderSettings
) -> None:
    loaded = await store.load_order(uow.conn, message.order_id)
    if isinstance(message, ShipmentCreated) and not _choreographed(loaded, message):
        return
    decision = domain.confirm(
        loaded.order,
        message.order_id,
        payment_id=message.payment_id,
        tracking_number=message.tracking_number,
    )
    await _apply(uow, loaded, decision, settings)


@service.legacy_handler(when=command_or_choreography)
async def reject_order(
    uow: UnitOfWork, message: RejectOrder | FailureEvent, settings: OrderSettings
) -> None:
    loaded = await store.load_order(uow.conn, message.order_id)
    if not isinstance(message, RejectOrder) and not _choreographed(loaded, message):
        return
    decision = domain.reject(loaded.order, message.order_id, message.reason)
    await _apply(uow, loaded, decision, settings)


def _choreographed(loaded: store.LoadedOrder, event: ShipmentCreated | FailureEvent) -> bool:
    """An event says its saga is choreographed; the order placed says the same (or is
    unknown, which the decision reports)."""
    if loaded.order is None or loaded.order.saga == "choreography":
        return True
    log.warning(
        "order %s: %s says choreography but the order was placed for %s; ignored",
        loaded.order_id,
        event.TYPE,
        loaded.order.saga,
    )
    return False


async def _apply(
    uow: UnitOfWork,
    loaded: store.LoadedOrder,
    decision: domain.Decision,
    settings: OrderSettings,
    *,
    correlation_id: str | None = None,
) -> None:
    if decision.outcome is domain.Outcome.UNKNOWN_ORDER:
        raise PermanentError(decision.note or f"order {loaded.order_id} was never placed")
    if not decision.events:
        # A refusal, or a repeat whose contents differ, is worth a look; a plain repeat is not.
        log.log(
            logging.WARNING if decision.note else logging.INFO,
            "order %s: %s%s",
            loaded.order_id,
            decision.outcome,
            f": {decision.note}" if decision.note else "",
        )
        return
    metadata: list[dict[str, Any]] = []
    for position, event in enumerate(decision.events, start=loaded.version + 1):
        # The stream version travels with the event, so a projection can apply an order's
        # events in stream order whatever order they arrive in.
        envelope = uow.emit(
            event, correlation_id=correlation_id, headers={STREAM_VERSION_HEADER: position}
        )
        metadata.append(
            {
                "message_id": envelope.message_id,
                "correlation_id": envelope.correlation_id,
                "causation_id": envelope.causation_id,
                # A replay sends the event with the time it first had (read models show it).
                "occurred_at": envelope.occurred_at.isoformat(),
            }
        )
    version = await store.append(
        uow.conn,
        loaded,
        decision.events,
        metadata,
        snapshot_every=settings.snapshot_every,
    )
    log.info("order %s: %s (version %d)", loaded.order_id, decision.outcome, version)
