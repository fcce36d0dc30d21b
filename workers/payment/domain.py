"""The payment's rules, free of I/O: what a charge or a refund does to an account.

    books = Books(payments={...}, accounts={"CUST-1": Account(...)})  # what store.load_books read
    decision = charge_payment(books, command)                          # changes and the reply

Money is ``Decimal`` in whole cents (two decimals) with a currency; never a float.

Every decision is keyed by the order id and can be asked again: at most one charge per order,
and asking to charge an order that is already charged answers with the recorded payment
without a second charge. A refund gives the charged amount back once. An order's payment id
is derived from its order id, so every row of an order (a charge, a refusal, a tombstone)
has the same one, whichever process decided it.

A refund can arrive before its charge (a saga compensating a step whose command is still in
flight). It then leaves a tombstone, a ``refunded`` payment with no amount, so that the late
charge is refused. The saga needs an answer to every compensation, so such a refund, and a
refund of a charge that was refused, is still answered with ``payment.refunded``: the amount
is zero (in the order's currency when a refused charge told us which, else ``EUR``) and the
payment id is the one recorded for the order's row, which never belonged to a charge.

A charge after its order was refunded (a charge repeated under a new message id once the
saga has compensated) is refused too: charging again would take the money a second time, and
in choreography a ``payment.completed`` would ship a cancelled order.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Literal

from contracts import (
    ChargePayment,
    Money,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    RefundPayment,
    ShipmentFailed,
    StockReserved,
)
from workers.runtime.decision import Decision
from workers.runtime.errors import PermanentError

Status = Literal["charged", "refused", "refunded"]

CENT = Decimal("0.01")
# NUMERIC(14, 2): twelve digits before the point.
MAX_AMOUNT = Decimal("999999999999.99")
DEFAULT_CURRENCY = "EUR"
ZERO = Decimal("0.00")

REFUNDED_BEFORE_CHARGED = "the payment was refunded (the order cancelled) before it was charged"
ALREADY_REFUNDED = "the payment was already refunded"

# What asks for a charge, and what asks for a refund (in choreography, a reserved stock is
# charged and a failed shipment refunded).
ChargeRequest = ChargePayment | StockReserved
RefundRequest = RefundPayment | ShipmentFailed

# The namespace of payment ids (uuid5 of the order id). Never change it: an order's payment
# id must be the same in every process and every release, or a repeated request would name
# another payment.
PAYMENT_IDS = uuid.UUID("b03df4a5-5b81-4d38-b387-267d5b8531df")


def payment_id_for(order_id: str) -> str:
    """The id of the order's payment (one per order, whatever happened to it)."""
    return str(uuid.uuid5(PAYMENT_IDS, order_id))


@dataclass(frozen=True)
class Account:
    customer_id: str
    balance: Decimal
    currency: str


@dataclass(frozen=True)
class Payment:
    """One order's payment, whatever happened to it. ``amount`` is None for a tombstone (a
    refund that came first) and for a charge refused because its amount was invalid."""

    order_id: str
    payment_id: str
    customer_id: str | None
    amount: Decimal | None
    currency: str | None
    status: Status
    reason: str | None

    @property
    def is_tombstone(self) -> bool:
        return self.status == "refunded" and self.amount is None


def to_cents(amount: Decimal) -> Decimal | None:
    """``amount`` with exactly two decimals, or None if that would change its value or it is
    out of the range the accounts can hold."""
    try:
        cents = amount.quantize(CENT)
    except InvalidOperation:
        return None
    if cents != amount or abs(cents) > MAX_AMOUNT:
        return None
    return abs(cents) if cents == 0 else cents  # no "-0.00"


# --- Changes: what a decision does to the books (store.write_books stores them). --------


@dataclass(frozen=True)
class Charged:
    """``amount`` is taken from the customer's account for the order."""

    order_id: str
    payment_id: str
    customer_id: str
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class Refused:
    """The charge is refused: only the refusal is recorded (``amount`` None when the amount
    itself was invalid)."""

    order_id: str
    payment_id: str
    customer_id: str
    amount: Decimal | None
    currency: str
    reason: str


@dataclass(frozen=True)
class Refunded:
    """The charged ``amount`` goes back to the customer's account."""

    order_id: str
    payment_id: str
    customer_id: str
    amount: Decimal
    currency: str
    reason: str


@dataclass(frozen=True)
class TombstoneLeft:
    """Refunded before anything was charged: remembered, so the late charge is refused."""

    order_id: str
    payment_id: str
    reason: str


Change = Charged | Refused | Refunded | TombstoneLeft


def payment_after(change: Change) -> Payment:
    """The order's payment as ``change`` leaves it."""
    match change:
        case Charged(order_id, payment_id, customer_id, amount, currency):
            return Payment(order_id, payment_id, customer_id, amount, currency, "charged", None)
        case Refused(order_id, payment_id, customer_id, amount, currency, reason):
            return Payment(order_id, payment_id, customer_id, amount, currency, "refused", reason)
        case Refunded(order_id, payment_id, customer_id, amount, currency, reason):
            return Payment(order_id, payment_id, customer_id, amount, currency, "refunded", reason)
        case TombstoneLeft(order_id, payment_id, reason):
            return Payment(order_id, payment_id, None, None, None, "refunded", reason)


@dataclass(frozen=True)
class Movement:
    """Money moved on an account for an order (a line of the ledger): a charge takes
    ``amount``, a refund gives it back."""

    customer_id: str
    order_id: str
    kind: Literal["charge", "refund"]
    amount: Decimal

    @property
    def delta(self) -> Decimal:
        """What the movement does to the balance."""
        return -self.amount if self.kind == "charge" else self.amount


def movement_of(change: Change) -> Movement | None:
    """The money ``change`` moves, if any."""
    match change:
        case Charged(order_id, _, customer_id, amount, _):
            return Movement(customer_id, order_id, "charge", amount)
        case Refunded(order_id, _, customer_id, amount, _, _):
            return Movement(customer_id, order_id, "refund", amount)
    return None


@dataclass(frozen=True)
class Books:
    """What a batch decides on: the payments of its orders (absent: none yet) and the
    accounts it charges or refunds (absent: no such account)."""

    payments: Mapping[str, Payment] = field(default_factory=dict)
    accounts: Mapping[str, Account] = field(default_factory=dict)

    def apply(self, change: Change) -> Books:
        payments = {**self.payments, change.order_id: payment_after(change)}
        movement = movement_of(change)
        if movement is None:
            return Books(payments, self.accounts)
        account = self.accounts[movement.customer_id]
        moved = replace(account, balance=account.balance + movement.delta)
        return Books(payments, {**self.accounts, moved.customer_id: moved})


# --- Decisions. ------------------------------------------------------------------------


def charge_payment(books: Books, request: ChargeRequest) -> Decision[Change]:
    """Charge once per order; insufficient funds, an unknown customer, another currency than
    the account's or an invalid amount is a refusal event, not an error. In choreography the
    charge follows ``stock.reserved``; an orchestrated order waits for the orchestrator's
    command. Asked again, it answers as it did the first time."""
    order_id = request.order_id
    existing = books.payments.get(order_id)
    if existing is not None:
        if existing.status == "charged":
            assert existing.amount is not None and existing.currency is not None
            completed = _completed(request, existing.payment_id, existing.amount, existing.currency)
            return Decision(send=(completed,))
        return Decision(send=(_failed(request, _refused_before(existing)),))
    asked = _amount_asked(request)
    cents = to_cents(asked.amount)
    if cents is None:
        return _refuse(request, f"invalid amount: {asked.amount} {asked.currency}", None)
    if cents < 0:
        return _refuse(request, f"invalid amount: {cents} {asked.currency} is negative", None)
    account = books.accounts.get(request.customer_id)
    reason = _unpayable(account, request.customer_id, cents, asked.currency)
    if reason is not None:
        return _refuse(request, reason, cents)
    change = Charged(order_id, payment_id_for(order_id), request.customer_id, cents, asked.currency)
    return Decision(
        changes=(change,), send=(_completed(request, change.payment_id, cents, asked.currency),)
    )


def _amount_asked(request: ChargeRequest) -> Money:
    return request.total if isinstance(request, StockReserved) else request.amount


def _refused_before(existing: Payment) -> str:
    if existing.is_tombstone:
        return REFUNDED_BEFORE_CHARGED
    if existing.status == "refunded":
        return ALREADY_REFUNDED
    return existing.reason or "the payment was refused"


def _unpayable(
    account: Account | None, customer_id: str, cents: Decimal, currency: str
) -> str | None:
    """Why ``account`` cannot pay ``cents`` (a valid amount) in ``currency``; None when it
    can."""
    if account is None:
        return f"unknown customer: {customer_id}"
    if account.currency != currency:
        return (
            f"currency mismatch: the charge is in {currency}, the account of {customer_id}"
            f" is in {account.currency}"
        )
    if account.balance < cents:
        return (
            f"insufficient funds: balance {account.balance} {account.currency},"
            f" charge {cents} {currency}"
        )
    return None


def _refuse(request: ChargeRequest, reason: str, amount: Decimal | None) -> Decision[Change]:
    """The refusal recorded with ``amount`` (None when the amount itself is invalid)."""
    order_id = request.order_id
    currency = _amount_asked(request).currency
    change = Refused(
        order_id, payment_id_for(order_id), request.customer_id, amount, currency, reason
    )
    return Decision(changes=(change,), send=(_failed(request, reason),))


def _completed(
    request: ChargeRequest, payment_id: str, amount: Decimal, currency: str
) -> PaymentCompleted:
    return PaymentCompleted(
        order_id=request.order_id,
        payment_id=payment_id,
        amount=_money(amount, currency),
        saga=request.saga,
        country=request.country,
        items=request.items,
    )


def _failed(request: ChargeRequest, reason: str) -> PaymentFailed:
    return PaymentFailed(order_id=request.order_id, reason=reason, saga=request.saga)


def refund_payment(books: Books, request: RefundRequest) -> Decision[Change]:
    """Give the charge back once; before any charge, leave a tombstone instead. Every refund
    is answered with ``payment.refunded`` (zero when nothing was charged). In choreography the
    refund follows ``shipment.failed``; an orchestrated one is the orchestrator's to act on.
    A charge to a customer who has no account (any more) can never be refunded: an error."""
    order_id = request.order_id
    if isinstance(request, ShipmentFailed):
        reason = f"shipment failed: {request.reason}"
    else:
        reason = request.reason
    existing = books.payments.get(order_id)
    if existing is None:
        tombstone = TombstoneLeft(order_id, payment_id_for(order_id), reason)
        zero = _refunded(request, tombstone.payment_id, ZERO, DEFAULT_CURRENCY)
        return Decision(changes=(tombstone,), send=(zero,))
    currency = existing.currency or DEFAULT_CURRENCY
    if existing.status == "charged":
        assert existing.customer_id is not None and existing.amount is not None
        if existing.customer_id not in books.accounts:
            raise PermanentError(
                f"order {order_id} was charged to {existing.customer_id}, who has no account"
            )
        change = Refunded(
            order_id, existing.payment_id, existing.customer_id, existing.amount, currency, reason
        )
        given_back = _refunded(request, existing.payment_id, existing.amount, currency)
        return Decision(changes=(change,), send=(given_back,))
    if existing.status == "refunded" and existing.amount is not None:
        return Decision(send=(_refunded(request, existing.payment_id, existing.amount, currency),))
    # The charge was refused, or this is a tombstone already: nothing was charged.
    return Decision(send=(_refunded(request, existing.payment_id, ZERO, currency),))


def _refunded(
    request: RefundRequest, payment_id: str, amount: Decimal, currency: str
) -> PaymentRefunded:
    return PaymentRefunded(
        order_id=request.order_id,
        payment_id=payment_id,
        amount=_money(amount, currency),
        saga=request.saga,
    )


def _money(amount: Decimal, currency: str) -> Money:
    return Money.of(format(amount, "f"), currency)
