"""The shipping's rules, free of I/O: what creating or cancelling a shipment does.

Every decision is keyed by the order id and can be asked again: at most one shipment per
order, and asking to create a shipment that exists answers with the recorded one. A
destination in the blocked countries is a refusal (an event, not an error).

A cancellation can arrive before its creation (a saga compensating a step whose command is
still in flight). It then leaves a tombstone, a ``cancelled`` shipment with no shipment id,
so that the late creation is refused. Cancelling a refused shipment changes nothing, and
every cancellation is answered with ``shipment.cancelled``: the saga needs an answer to every
compensation. A creation asked again after its shipment was cancelled is refused, never
shipped a second time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Status = Literal["created", "refused", "cancelled"]

CANCELLED_BEFORE_CREATED = "the shipment was cancelled (the order cancelled) before it was created"
ALREADY_CANCELLED = "the shipment was already cancelled"

TRACKING_PREFIX = "TRK-"
TRACKING_LENGTH = 10
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Shipment:
    """One order's shipment, whatever happened to it. ``shipment_id`` and
    ``tracking_number`` are set once a shipment was created (and stay when it is cancelled);
    a tombstone has neither."""

    order_id: str
    shipment_id: str | None
    tracking_number: str | None
    country: str | None
    status: Status
    reason: str | None

    @property
    def is_tombstone(self) -> bool:
        return self.status == "cancelled" and self.shipment_id is None


def tracking_number(shipment_id: str) -> str:
    """``TRK-`` and ten upper-case letters and digits, derived from the shipment id alone (the
    same id always gives the same number): its 128 bits in base 36, the last ten digits."""
    value = uuid.UUID(shipment_id).int
    digits = []
    for _ in range(TRACKING_LENGTH):
        value, digit = divmod(value, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return TRACKING_PREFIX + "".join(reversed(digits))


# Decisions on a creation request.
@dataclass(frozen=True)
class Create:
    country: str


@dataclass(frozen=True)
class AlreadyCreated:
    shipment_id: str
    tracking_number: str


@dataclass(frozen=True)
class Refuse:
    """A business refusal: nothing is shipped (nothing changes but the record)."""

    reason: str
    new: bool  # False when the refusal was already recorded and is only repeated


CreateDecision = Create | AlreadyCreated | Refuse


def decide_creation(
    existing: Shipment | None, country: str, blocked_countries: Iterable[str]
) -> CreateDecision:
    if existing is not None:
        if existing.status == "created":
            assert existing.shipment_id is not None and existing.tracking_number is not None
            return AlreadyCreated(existing.shipment_id, existing.tracking_number)
        if existing.is_tombstone:
            return Refuse(CANCELLED_BEFORE_CREATED, new=False)
        if existing.status == "cancelled":
            return Refuse(ALREADY_CANCELLED, new=False)
        return Refuse(existing.reason or "the shipment was refused", new=False)
    if country.upper() in {blocked.upper() for blocked in blocked_countries}:
        return Refuse(f"destination country {country} is blocked", new=True)
    return Create(country)


# Decisions on a cancellation request.
@dataclass(frozen=True)
class Cancel:
    """Cancel the created shipment."""


@dataclass(frozen=True)
class AlreadyCancelled:
    pass


@dataclass(frozen=True)
class LeaveTombstone:
    """Nothing was created yet: remember the cancellation so a late creation is refused."""


@dataclass(frozen=True)
class NothingShipped:
    """The shipment was refused: there is nothing to cancel."""


CancelDecision = Cancel | AlreadyCancelled | LeaveTombstone | NothingShipped


def decide_cancellation(existing: Shipment | None) -> CancelDecision:
    if existing is None:
        return LeaveTombstone()
    if existing.status == "created":
        return Cancel()
    if existing.status == "refused":
        return NothingShipped()
    return AlreadyCancelled()
