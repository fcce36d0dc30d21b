"""Messages of the shipping service: the commands it acts on and the events it emits."""

from __future__ import annotations

from contracts.base import (
    Command,
    CountryCode,
    Event,
    NonEmptyStr,
    OrderId,
    OrderLines,
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
class ShipmentCreated(Event):
    TYPE = "shipment.created"
    VERSION = 1

    order_id: OrderId
    shipment_id: ShipmentId
    tracking_number: NonEmptyStr
    saga: SagaStyle


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
