"""Messages of the order service: the commands it acts on and the events it emits."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator

from contracts.base import (
    WIRE_CONFIG,
    Command,
    CountryCode,
    CustomerId,
    Event,
    Money,
    NonEmptyStr,
    OrderId,
    OrderLines,
    Quantity,
    Reason,
    SagaStyle,
    Sku,
)
from contracts.registry import registry


@registry.register
class PlaceOrder(Command):
    TYPE = "order.place_order"
    VERSION = 1

    idempotency_key: NonEmptyStr  # the same key places the same order once
    customer_id: CustomerId
    items: OrderLines
    country: CountryCode
    saga: SagaStyle = "orchestration"
    order_id: OrderId | None = None  # chosen by the order service when absent

    @model_validator(mode="after")
    def _one_currency(self) -> PlaceOrder:
        # An order has one total, so all its prices share one currency.
        if len({line.unit_price.currency for line in self.items}) > 1:
            raise ValueError("all items must be priced in the same currency")
        return self


@registry.register
class ConfirmOrder(Command):
    TYPE = "order.confirm_order"
    VERSION = 1

    order_id: OrderId


@registry.register
class RejectOrder(Command):
    TYPE = "order.reject_order"
    VERSION = 1

    order_id: OrderId
    reason: Reason


class OrderLineV1(BaseModel):
    model_config = WIRE_CONFIG

    sku: Sku
    quantity: Quantity
    unit_price: Annotated[float, Field(allow_inf_nan=False)]


@registry.register
class OrderPlacedV1(Event):
    """Prices as JSON numbers: superseded by v2, still read from old streams and producers."""

    TYPE = "order.placed"
    VERSION = 1

    order_id: OrderId
    customer_id: CustomerId
    items: Annotated[list[OrderLineV1], Field(min_length=1)]
    total: Annotated[float, Field(allow_inf_nan=False)]
    country: CountryCode


@registry.register
class OrderPlacedV2(Event):
    TYPE = "order.placed"
    VERSION = 2

    order_id: OrderId
    customer_id: CustomerId
    items: OrderLines
    total: Money
    country: CountryCode
    saga: SagaStyle = "orchestration"


OrderPlaced = OrderPlacedV2  # the version producers emit

# v1 predates multi-currency: every v1 order was priced in EUR.
V1_CURRENCY = "EUR"
_CENT = Decimal("0.01")


def _v1_money(number: float) -> dict[str, str]:
    # str() first: it gives the shortest decimal that reads back as the same float ("0.1", not
    # Decimal(0.1) = 0.1000000000000000055511151231257827021181583404541015625), then cents.
    amount = Decimal(str(number)).quantize(_CENT, rounding=ROUND_HALF_UP)
    return {"amount": format(amount, "f"), "currency": V1_CURRENCY}


@registry.upcaster("order.placed", from_version=1)
def order_placed_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        **payload,
        "items": [
            {**line, "unit_price": _v1_money(line["unit_price"])} for line in payload["items"]
        ],
        "total": _v1_money(payload["total"]),
        "saga": "orchestration",  # v1 producers knew no other saga style
    }


@registry.register
class OrderConfirmed(Event):
    TYPE = "order.confirmed"
    VERSION = 1

    order_id: OrderId


@registry.register
class OrderRejected(Event):
    TYPE = "order.rejected"
    VERSION = 1

    order_id: OrderId
    reason: Reason
