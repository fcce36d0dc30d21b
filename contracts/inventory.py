"""Messages of the inventory service: the commands it acts on and the events it emits."""

from __future__ import annotations

from contracts.base import (
    Command,
    CountryCode,
    CustomerId,
    Event,
    Money,
    OrderId,
    OrderLines,
    Reason,
    SagaStyle,
)
from contracts.registry import registry


@registry.register
class ReserveStock(Command):
    TYPE = "inventory.reserve_stock"
    VERSION = 1

    order_id: OrderId
    items: OrderLines
    saga: SagaStyle
    customer_id: CustomerId
    total: Money
    country: CountryCode


@registry.register
class ReleaseStock(Command):
    TYPE = "inventory.release_stock"
    VERSION = 1

    order_id: OrderId
    reason: Reason
    # Echoed in the reply, so that whoever reacts to it knows which saga style drives it.
    saga: SagaStyle


@registry.register
class StockReserved(Event):
    """Carries the whole order so that, in choreography, payment can charge without a lookup."""

    TYPE = "stock.reserved"
    VERSION = 1

    order_id: OrderId
    items: OrderLines
    saga: SagaStyle
    customer_id: CustomerId
    total: Money
    country: CountryCode


@registry.register
class StockReservationFailed(Event):
    TYPE = "stock.reservation_failed"
    VERSION = 1

    order_id: OrderId
    reason: Reason
    saga: SagaStyle
    customer_id: CustomerId | None = None


@registry.register
class StockReleased(Event):
    TYPE = "stock.released"
    VERSION = 1

    order_id: OrderId
    saga: SagaStyle
