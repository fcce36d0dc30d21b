"""Messages of the payment service: the commands it acts on and the events it emits."""

from __future__ import annotations

from contracts.base import (
    Command,
    CountryCode,
    CustomerId,
    Event,
    Money,
    OrderId,
    OrderLines,
    PaymentId,
    Reason,
    SagaStyle,
)
from contracts.registry import registry


@registry.register
class ChargePayment(Command):
    TYPE = "payment.charge_payment"
    VERSION = 1

    order_id: OrderId
    customer_id: CustomerId
    amount: Money
    saga: SagaStyle
    country: CountryCode
    items: OrderLines


@registry.register
class RefundPayment(Command):
    TYPE = "payment.refund_payment"
    VERSION = 1

    order_id: OrderId
    reason: Reason
    # Echoed in the reply, so that whoever reacts to it knows which saga style drives it.
    saga: SagaStyle


@registry.register
class PaymentCompleted(Event):
    """Carries country and items so that, in choreography, shipping needs no lookup."""

    TYPE = "payment.completed"
    VERSION = 1

    order_id: OrderId
    payment_id: PaymentId
    amount: Money
    saga: SagaStyle
    country: CountryCode
    items: OrderLines


@registry.register
class PaymentFailed(Event):
    TYPE = "payment.failed"
    VERSION = 1

    order_id: OrderId
    reason: Reason
    saga: SagaStyle


@registry.register
class PaymentRefunded(Event):
    TYPE = "payment.refunded"
    VERSION = 1

    order_id: OrderId
    payment_id: PaymentId
    amount: Money
    saga: SagaStyle
