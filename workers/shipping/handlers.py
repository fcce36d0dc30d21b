"""The shipping's handlers: decode (done by the runtime), decide (domain), write + emit."""

from __future__ import annotations

import uuid

from contracts import (
    CancelShipment,
    CreateShipment,
    PaymentCompleted,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentFailed,
    command_or_choreography,
)
from db.unit_of_work import UnitOfWork
from workers.runtime.service import Service
from workers.shipping import domain, store
from workers.shipping.settings import ShippingSettings

service = Service(
    "shipping",
    settings=ShippingSettings,
    emits=("shipment.created", "shipment.failed", "shipment.cancelled"),
)


@service.legacy_handler(when=command_or_choreography)
async def create_shipment(
    uow: UnitOfWork, message: CreateShipment | PaymentCompleted, settings: ShippingSettings
) -> None:
    """Create the order's shipment once; a blocked destination is a refusal event, not an
    error. In choreography the shipment follows ``payment.completed``; an orchestrated
    ``payment.completed`` is the orchestrator's to act on."""
    order_id = message.order_id
    await uow.lock(order_id)
    existing = await store.load_shipment(uow.conn, order_id)
    decision = domain.decide_creation(existing, message.country, settings.blocked_countries)
    if isinstance(decision, domain.Refuse):
        if decision.new:
            await store.refuse(uow.conn, order_id, message.country, decision.reason)
        uow.emit(ShipmentFailed(order_id=order_id, reason=decision.reason, saga=message.saga))
        return
    if isinstance(decision, domain.Create):
        shipment_id = str(uuid.uuid4())
        tracking_number = domain.tracking_number(shipment_id)
        await store.create(uow.conn, order_id, shipment_id, tracking_number, decision.country)
    else:
        # Created before: answer the same, so a repeated request gets its reply again.
        shipment_id, tracking_number = decision.shipment_id, decision.tracking_number
    uow.emit(
        ShipmentCreated(
            order_id=order_id,
            shipment_id=shipment_id,
            tracking_number=tracking_number,
            saga=message.saga,
            # Passed on in choreography, where the order confirms on this event.
            payment_id=message.payment_id if isinstance(message, PaymentCompleted) else None,
        )
    )


@service.legacy_handler()
async def cancel_shipment(uow: UnitOfWork, command: CancelShipment) -> None:
    """Cancel the order's shipment once; before any shipment, leave a tombstone instead.
    Choreography never cancels a shipment: it is the saga's last step."""
    await uow.lock(command.order_id)
    existing = await store.load_shipment(uow.conn, command.order_id)
    decision = domain.decide_cancellation(existing)
    if isinstance(decision, domain.Cancel):
        await store.cancel(uow.conn, command.order_id, command.reason)
    elif isinstance(decision, domain.LeaveTombstone):
        await store.leave_tombstone(uow.conn, command.order_id, command.reason)
    uow.emit(ShipmentCancelled(order_id=command.order_id, saga=command.saga))
