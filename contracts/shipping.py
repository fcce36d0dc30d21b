"""Messages of the shipping service: the commands it acts on and the events it emits."""

from __future__ import annotations

from typing import Any

from contracts.base import (
    Command,
    CountryCode,
    Event,
    NonEmptyStr,
    OrderId,
    OrderLines,
    PaymentId,
    Reason,
    SagaStyle,
    ShipmentId,
)
from contracts.registry import registry


@registry.register
class CreateShipment(Command):
    TYPE = "shipping.create_shipment"
    VERSION = 1

    order_id: OrderId
    country: CountryCode
    items: OrderLines
    saga: SagaStyle


@registry.register
class CancelShipment(Command):
    TYPE = "shipping.cancel_shipment"
    VERSION = 1

    order_id: OrderId
    reason: Reason
    # Echoed in the reply, so that whoever reacts to it knows which saga style drives it.
    saga: SagaStyle


@registry.register
class ShipmentCreatedV1(Event):
    """Superseded by v2, which names the payment the shipment followed."""

    TYPE = "shipment.created"
    VERSION = 1

    order_id: OrderId
    shipment_id: ShipmentId
    tracking_number: NonEmptyStr
    saga: SagaStyle


@registry.register
class ShipmentCreatedV2(Event):
    TYPE = "shipment.created"
    VERSION = 2

    order_id: OrderId
    shipment_id: ShipmentId
    tracking_number: NonEmptyStr
    saga: SagaStyle
    # In choreography the shipment follows payment.completed and passes its payment id on,
    # so the order confirmed on this event records both references. None when orchestrated
    # (the orchestrator knows the payment) and when upcast from v1.
    payment_id: PaymentId | None = None


ShipmentCreated = ShipmentCreatedV2


@registry.upcaster("shipment.created", from_version=1)
def shipment_created_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "payment_id": None}


@registry.register
class ShipmentFailed(Event):
    TYPE = "shipment.failed"
    VERSION = 1

    order_id: OrderId
    reason: Reason
    saga: SagaStyle


@registry.register
class ShipmentCancelled(Event):
    TYPE = "shipment.cancelled"
    VERSION = 1

    order_id: OrderId
    saga: SagaStyle
