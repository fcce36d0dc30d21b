"""Messages of the order service: the commands it acts on and the events it emits."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, model_validator

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
    PaymentId,
    Quantity,
    Reason,
    SagaStyle,
    Sku,
    UuidText,
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
    def _priced_sensibly(self) -> PlaceOrder:
        # An order has one total, so all its prices share one currency.
        if len({line.unit_price.currency for line in self.items}) > 1:
            raise ValueError("all items must be priced in the same currency")
        # A negative price would make the charge a credit. (Only the command that places an
        # order is checked: events and the amounts services send are derived from it.)
        for index, line in enumerate(self.items):
            if line.unit_price.amount < 0:
                raise ValueError(f"items.{index}.unit_price must not be negative")
        return self


@registry.register
class ConfirmOrderV1(Command):
    """Superseded by v2, which names the payment and shipment the order is confirmed with."""

    TYPE = "order.confirm_order"
    VERSION = 1

    order_id: OrderId


@registry.register
class ConfirmOrderV2(Command):
    TYPE = "order.confirm_order"
    VERSION = 2

    order_id: OrderId
    # What the saga did for the order; the order's stream keeps them, so a read model rebuilt
    # from that stream alone shows them. None only when upcast from v1.
    payment_id: PaymentId | None = None
    tracking_number: NonEmptyStr | None = None


ConfirmOrder = ConfirmOrderV2


@registry.upcaster("order.confirm_order", from_version=1)
def confirm_order_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "payment_id": None, "tracking_number": None}


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
class OrderConfirmedV1(Event):
    """Superseded by v2; stored v1 events and old producers read as v2 with no references."""

    TYPE = "order.confirmed"
    VERSION = 1

    order_id: OrderId


@registry.register
class OrderConfirmedV2(Event):
    """Superseded by v3, which names the order's saga style; read as v3 with saga None."""

    TYPE = "order.confirmed"
    VERSION = 2

    order_id: OrderId
    payment_id: PaymentId | None = None
    tracking_number: NonEmptyStr | None = None


@registry.register
class OrderConfirmedV3(Event):
    TYPE = "order.confirmed"
    VERSION = 3

    order_id: OrderId
    payment_id: PaymentId | None = None
    tracking_number: NonEmptyStr | None = None
    # Like every saga message: who drives the order, so the orchestrator's queue can drop a
    # choreographed order's event before any transaction. None: sent before v3 said it.
    saga: SagaStyle | None = None


OrderConfirmed = OrderConfirmedV3


@registry.upcaster("order.confirmed", from_version=1)
def order_confirmed_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "payment_id": None, "tracking_number": None}


@registry.upcaster("order.confirmed", from_version=2)
def order_confirmed_v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "saga": None}


@registry.register
class OrderRejectedV1(Event):
    """Superseded by v2, which names the order's saga style; read as v2 with saga None."""

    TYPE = "order.rejected"
    VERSION = 1

    order_id: OrderId
    reason: Reason


@registry.register
class OrderRejectedV2(Event):
    TYPE = "order.rejected"
    VERSION = 2

    order_id: OrderId
    reason: Reason
    saga: SagaStyle | None = None  # as in order.confirmed v3


OrderRejected = OrderRejectedV2


@registry.upcaster("order.rejected", from_version=1)
def order_rejected_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "saga": None}


# --- Replaying the order's event store (for read models to rebuild from). --------------

# Where a replay goes: the routing key on the replays exchange, one per read model.
ReplayTarget = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]


@registry.register
class ReplayOrderEvents(Command):
    """Send every stored order event, in store order, to ``target`` on the replays exchange.

    The order service sends one page per command and then this command again for the next
    page (``after_position``), so a long replay is many short transactions that survive a
    restart; ``up_to_position`` and ``expected`` are fixed by the first page.
    """

    TYPE = "order.replay_events"
    VERSION = 1

    replay_id: UuidText
    target: ReplayTarget
    after_position: Annotated[int, Field(ge=0)] = 0
    up_to_position: Annotated[int, Field(ge=0)] | None = None  # None: the store's end, now
    expected: Annotated[int, Field(ge=0)] | None = None  # events up to up_to_position
    sent: Annotated[int, Field(ge=0)] = 0  # events sent by the pages before


@registry.register
class OrderEventsReplayed(Event):
    """The last message of a replay, after all its events: how many were sent."""

    TYPE = "order.events_replayed"
    VERSION = 1

    replay_id: UuidText
    target: ReplayTarget
    events: Annotated[int, Field(ge=0)]
