"""The API's request and answer bodies, as OpenAPI shows them. A request is built from the
contracts' own field types, so it is refused for the reasons the PlaceOrder contract would
refuse it, and with the field named."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from contracts import Money, SagaStyle
from contracts.base import Amount, CountryCode, CustomerId, Quantity, Sku
from workers.order.public import DEFAULT_COUNTRY
from workers.order_view.public import Status

# What PlaceOrder takes as a price: a decimal string that is not negative ("-0" is zero).
PRICE_PATTERN = r"^(\d+(\.\d{1,4})?|-0+(\.0{1,4})?)$"


# Money as the document shows a price: PlaceOrder refuses a negative one (a 422 naming the
# line), so the document must not promise it (tests/integration/test_fuzz_api.py found that).
class UnitPrice(Money):
    """An exact amount that is not negative, in one currency."""

    amount: Annotated[Amount, WithJsonSchema({"type": "string", "pattern": PRICE_PATTERN})]


class OrderLineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku = Field(examples=["SKU-0001"])
    quantity: Quantity = Field(examples=[2])
    unit_price: UnitPrice = Field(
        description='A decimal string and a currency, e.g. {"amount": "9.90", "currency": "EUR"}'
        " (never a JSON number: a float loses cents). Every line of an order has one currency."
    )


class PlaceOrderRequest(BaseModel):
    """An order to place; the ``Idempotency-Key`` header makes placing it again harmless."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "CUST-0001",
                    "items": [
                        {
                            "sku": "SKU-0001",
                            "quantity": 2,
                            "unit_price": {"amount": "9.90", "currency": "EUR"},
                        }
                    ],
                    "country": DEFAULT_COUNTRY,
                    "saga": "orchestration",
                }
            ]
        },
    )

    customer_id: CustomerId
    items: Annotated[list[OrderLineRequest], Field(min_length=1)]
    country: CountryCode = Field(DEFAULT_COUNTRY, description="Destination, ISO 3166 alpha-2.")
    saga: SagaStyle = Field(
        "orchestration", description="Who drives the order: the orchestrator, or the services."
    )


class PlacedAnswer(BaseModel):
    order_id: str = Field(description="Derived from the Idempotency-Key: same key, same id.")
    status: Status = Field(
        description="PENDING until the saga ends; the view's status when it already has the "
        "order (the key was used before)."
    )
    idempotency_key: str


class OrderSummary(BaseModel):
    """One order as the read model (order_view) has it."""

    order_id: str
    status: Status
    customer_id: str | None
    item_count: int | None = Field(description="Units ordered, over all lines.")
    total: str | None = Field(description='Amount and currency for people, e.g. "19.80 EUR".')
    total_amount: str | None = Field(description='A decimal string, e.g. "19.80".')
    currency: str | None
    saga: SagaStyle | None
    payment_id: str | None = Field(description="Set once paid; null for a rejected order.")
    tracking_number: str | None = Field(description="Set once shipped; null when rejected.")
    rejection_reason: str | None
    created_at: datetime | None
    updated_at: datetime | None
    version: int = Field(description="The order stream's last version the view applied.")


class ViewLag(BaseModel):
    """How far behind the write side the view is."""

    messages_waiting: int | None = Field(
        description="Messages in the view's queues, not projected yet (null: RabbitMQ could "
        "not be asked)."
    )
    last_update: datetime | None = Field(description="When the view last applied an update.")


class OrderAnswer(BaseModel):
    order: OrderSummary
    lag: ViewLag


class OrderListAnswer(BaseModel):
    orders: list[OrderSummary] = Field(description="Newest first.")
    lag: ViewLag


class HealthAnswer(BaseModel):
    status: Literal["ok", "unavailable"]
    broker: str = Field(description='"ok", or why RabbitMQ cannot be used.')
    database: str = Field(description='"ok", or why the view\'s database cannot be used.')


class ErrorAnswer(BaseModel):
    detail: str
