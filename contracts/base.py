"""What every message is made of: the Message base class, Money, order lines, ids."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

# Strict so that Python callers cannot slip a "1" into an int or an int into a str; JSON input
# still parses, because in JSON mode strict pydantic accepts the JSON spelling of each type.
WIRE_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)

MessageKind = Literal["command", "event"]
SagaStyle = Literal["orchestration", "choreography"]

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# Ids the fleet generates (orders, payments, shipments): UUID text, lower-cased so that one id
# has one spelling in every database and inbox.
UuidText = Annotated[
    str,
    StringConstraints(pattern=UUID_PATTERN),
    AfterValidator(str.lower),
    WithJsonSchema({"type": "string", "format": "uuid", "pattern": UUID_PATTERN}),
]
OrderId = UuidText
PaymentId = UuidText
ShipmentId = UuidText

NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]
# Ids that come from outside the fleet (customers, SKUs, client keys): any non-empty text.
CustomerId = NonEmptyStr
Sku = NonEmptyStr
Reason = NonEmptyStr

CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Quantity = Annotated[int, Field(ge=1)]

AMOUNT_PATTERN = r"^-?\d+(\.\d{1,4})?$"
_AMOUNT = re.compile(AMOUNT_PATTERN, re.ASCII)  # ASCII: \d would also match other scripts' digits


def _parse_amount(value: object) -> Decimal:
    # Only strings: a float has already lost the cents (0.1 + 0.2), and a JSON number may be
    # read as a float by any consumer on the way.
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        raise PydanticCustomError(
            "decimal_string",
            'amount must be a decimal string like "12.50", with at most 4 decimals',
        )
    return Decimal(value)


def _format_amount(amount: Decimal) -> str:
    return format(amount, "f")  # never exponent notation such as "1E+2"


Amount = Annotated[
    Decimal,
    PlainValidator(_parse_amount),
    PlainSerializer(_format_amount, return_type=str),
    WithJsonSchema({"type": "string", "pattern": AMOUNT_PATTERN}),
]


class Money(BaseModel):
    """An exact amount in one currency; on the wire {"amount": "12.50", "currency": "EUR"}."""

    model_config = WIRE_CONFIG

    amount: Amount
    currency: CurrencyCode

    @classmethod
    def of(cls, amount: str, currency: str) -> Money:
        return cls.model_validate({"amount": amount, "currency": currency})

    def __add__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} to {self.currency}")
        return Money.of(_format_amount(self.amount + other.amount), self.currency)

    def times(self, factor: int) -> Money:
        if isinstance(factor, bool) or not isinstance(factor, int):
            raise TypeError(f"Money can only be multiplied by an int, not {factor!r}")
        return Money.of(_format_amount(self.amount * factor), self.currency)

    def __str__(self) -> str:
        return f"{_format_amount(self.amount)} {self.currency}"


class OrderLine(BaseModel):
    model_config = WIRE_CONFIG

    sku: Sku
    quantity: Quantity
    unit_price: Money

    def subtotal(self) -> Money:
        return self.unit_price.times(self.quantity)


OrderLines = Annotated[list[OrderLine], Field(min_length=1)]


class Message(BaseModel):
    """A versioned message. Subclasses set TYPE and VERSION and are registered in the registry;
    a released (TYPE, VERSION) never changes shape: a change is a new VERSION plus an upcaster."""

    model_config = WIRE_CONFIG

    TYPE: ClassVar[str]
    VERSION: ClassVar[int]
    KIND: ClassVar[MessageKind]


class Command(Message):
    """Asks one service to act; sent to the commands exchange, routing key = TYPE."""

    KIND: ClassVar[MessageKind] = "command"


class Event(Message):
    """States what happened; published to the events exchange, routing key = TYPE."""

    KIND: ClassVar[MessageKind] = "event"
