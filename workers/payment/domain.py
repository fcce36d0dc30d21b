"""The payment's rules, free of I/O: what a charge or a refund does to an account.

Money is ``Decimal`` in whole cents (two decimals) with a currency; never a float.

Every decision is keyed by the order id and can be asked again: at most one charge per order,
and asking to charge an order that is already charged answers with the recorded payment
without a second charge. A refund gives the charged amount back once.

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

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

Status = Literal["charged", "refused", "refunded"]

CENT = Decimal("0.01")
# NUMERIC(14, 2): twelve digits before the point.
MAX_AMOUNT = Decimal("999999999999.99")
DEFAULT_CURRENCY = "EUR"
ZERO = Decimal("0.00")

REFUNDED_BEFORE_CHARGED = "the payment was refunded (the order cancelled) before it was charged"
ALREADY_REFUNDED = "the payment was already refunded"


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


# Decisions on a charge request.
@dataclass(frozen=True)
class Charge:
    """Take ``amount`` from the account."""

    amount: Decimal
    currency: str


@dataclass(frozen=True)
class AlreadyCharged:
    payment_id: str
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class Refuse:
    """A business refusal: nothing is charged (nothing changes but the record)."""

    reason: str
    new: bool  # False when the refusal was already recorded and is only repeated
    # The amount to record with a new refusal (None when the amount itself is invalid).
    amount: Decimal | None = None


ChargeDecision = Charge | AlreadyCharged | Refuse


def decide_charge(
    existing: Payment | None,
    account: Account | None,
    customer_id: str,
    amount: Decimal,
    currency: str,
) -> ChargeDecision:
    """``account`` is the customer's account (None if there is none); it is only read when
    there is no payment for the order yet."""
    if existing is not None:
        if existing.status == "charged":
            assert existing.amount is not None and existing.currency is not None
            return AlreadyCharged(existing.payment_id, existing.amount, existing.currency)
        if existing.is_tombstone:
            return Refuse(REFUNDED_BEFORE_CHARGED, new=False)
        if existing.status == "refunded":
            return Refuse(ALREADY_REFUNDED, new=False)
        return Refuse(existing.reason or "the payment was refused", new=False)
    cents = to_cents(amount)
    if cents is None:
        return Refuse(f"invalid amount: {amount} {currency}", new=True)
    if cents < 0:
        return Refuse(f"invalid amount: {cents} {currency} is negative", new=True)
    if account is None:
        return Refuse(f"unknown customer: {customer_id}", new=True, amount=cents)
    if account.currency != currency:
        return Refuse(
            f"currency mismatch: the charge is in {currency}, the account of {customer_id}"
            f" is in {account.currency}",
            new=True,
            amount=cents,
        )
    if account.balance < cents:
        return Refuse(
            f"insufficient funds: balance {account.balance} {account.currency},"
            f" charge {cents} {currency}",
            new=True,
            amount=cents,
        )
    return Charge(cents, currency)


# Decisions on a refund request.
@dataclass(frozen=True)
class Refund:
    """Give ``amount`` back to ``customer_id``'s account."""

    payment_id: str
    customer_id: str
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class AlreadyRefunded:
    payment_id: str
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class LeaveTombstone:
    """Nothing was charged yet: remember the refund so a late charge is refused. Answered
    with a zero refund."""

    amount: Decimal = ZERO
    currency: str = DEFAULT_CURRENCY


@dataclass(frozen=True)
class NothingCharged:
    """The charge was refused, or this is a tombstone already: answer with a zero refund."""

    payment_id: str
    amount: Decimal
    currency: str


RefundDecision = Refund | AlreadyRefunded | LeaveTombstone | NothingCharged


def decide_refund(existing: Payment | None) -> RefundDecision:
    if existing is None:
        return LeaveTombstone()
    currency = existing.currency or DEFAULT_CURRENCY
    if existing.status == "charged":
        assert existing.amount is not None and existing.customer_id is not None
        return Refund(existing.payment_id, existing.customer_id, existing.amount, currency)
    if existing.status == "refunded" and existing.amount is not None:
        return AlreadyRefunded(existing.payment_id, existing.amount, currency)
    return NothingCharged(existing.payment_id, ZERO, currency)


def balance_after(account: Account, decision: Charge | Refund) -> Decimal:
    """The account's balance once ``decision`` is applied (never negative for a Charge that
    ``decide_charge`` made from this account)."""
    if isinstance(decision, Charge):
        return account.balance - decision.amount
    return account.balance + decision.amount
