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

import logging
from typing import Any

from contracts import (
    ConfirmOrder,
    PaymentFailed,
    PlaceOrder,
    RejectOrder,
    ShipmentCreated,
    ShipmentFailed,
    StockReservationFailed,
)
from contracts.envelope import STREAM_VERSION_HEADER
from db.unit_of_work import UnitOfWork
from workers.errors import PermanentError
from workers.order import domain, store
from workers.service import Service
from workers.settings import get_settings

log = logging.getLogger("fleet.order")

service = Service("order")

FailureEvent = StockReservationFailed | PaymentFailed | ShipmentFailed


@service.handler("order.place_order")
async def place_order(uow: UnitOfWork, command: PlaceOrder) -> None:
    """Place the order once per order id; placing it again emits nothing new."""
    order_id = domain.order_id_for(command)
    loaded = await store.load_order(uow.conn, order_id)
    # order.placed starts the order's correlation: everything the saga does carries its id.
    await _apply(uow, loaded, domain.place(loaded.order, command), correlation_id=order_id)


@service.handler("order.confirm_order", "shipment.created")
async def confirm_order(uow: UnitOfWork, message: ConfirmOrder | ShipmentCreated) -> None:
    if isinstance(message, ShipmentCreated) and message.saga != "choreography":
        return  # the orchestrator confirms orchestrated orders itself
    loaded = await store.load_order(uow.conn, message.order_id)
    if isinstance(message, ShipmentCreated) and not _choreographed(loaded, message):
        return
    await _apply(uow, loaded, domain.confirm(loaded.order, message.order_id))


@service.handler(
    "order.reject_order", "stock.reservation_failed", "payment.failed", "shipment.failed"
)
async def reject_order(uow: UnitOfWork, message: RejectOrder | FailureEvent) -> None:
    if not isinstance(message, RejectOrder) and message.saga != "choreography":
        return  # the orchestrator compensates orchestrated orders itself
    loaded = await store.load_order(uow.conn, message.order_id)
    if not isinstance(message, RejectOrder) and not _choreographed(loaded, message):
        return
    await _apply(uow, loaded, domain.reject(loaded.order, message.order_id, message.reason))


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
            }
        )
    version = await store.append(
        uow.conn,
        loaded,
        decision.events,
        metadata,
        snapshot_every=get_settings().snapshot_every,
    )
    log.info("order %s: %s (version %d)", loaded.order_id, decision.outcome, version)
