"""The inventory's rules, free of I/O: what a reservation or a release does.

Every decision is keyed by the order id and can be asked again: asking to reserve an order
that is already reserved answers the same way, and a release that comes before its
reservation leaves a tombstone that refuses the late reservation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Status = Literal["reserved", "refused", "released"]


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


@dataclass(frozen=True)
class Reservation:
    order_id: str
    status: Status
    reason: str | None
    lines: tuple[Line, ...]


# Decisions on a reservation request.
@dataclass(frozen=True)
class Reserve:
    """Take these quantities from available stock."""

    lines: tuple[Line, ...]


@dataclass(frozen=True)
class AlreadyReserved:
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Refuse:
    """A business refusal: the order cannot have its stock (nothing changes but the record)."""

    reason: str
    new: bool  # False when the refusal was already recorded and is only repeated


ReservationDecision = Reserve | AlreadyReserved | Refuse

RELEASED_BEFORE_RESERVED = "the order was released before its reservation arrived"


def merge_lines(lines: Iterable[Line]) -> tuple[Line, ...]:
    """One line per SKU, sorted by SKU (stock rows are then locked in one global order)."""
    totals: dict[str, int] = {}
    for line in lines:
        if line.quantity <= 0:
            raise ValueError(f"quantity of {line.sku} must be positive, not {line.quantity}")
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    return tuple(Line(sku, quantity) for sku, quantity in sorted(totals.items()))


def decide_reservation(
    existing: Reservation | None, available: Mapping[str, int], lines: Iterable[Line]
) -> ReservationDecision:
    """``available`` maps each requested SKU that exists to its available quantity."""
    if existing is not None:
        if existing.status == "reserved":
            return AlreadyReserved(existing.lines)
        if existing.status == "released" and not existing.lines:
            return Refuse(RELEASED_BEFORE_RESERVED, new=False)
        return Refuse(existing.reason or "the order's reservation was already released", new=False)
    wanted = merge_lines(lines)
    unknown = [line.sku for line in wanted if line.sku not in available]
    if unknown:
        return Refuse(f"unknown SKU: {', '.join(unknown)}", new=True)
    short = [
        f"{line.sku} (wanted {line.quantity}, available {available[line.sku]})"
        for line in wanted
        if available[line.sku] < line.quantity
    ]
    if short:
        return Refuse(f"out of stock: {', '.join(short)}", new=True)
    return Reserve(wanted)


# Decisions on a release request.
@dataclass(frozen=True)
class Release:
    """Give these quantities back to available stock."""

    lines: tuple[Line, ...]


@dataclass(frozen=True)
class AlreadyReleased:
    pass


@dataclass(frozen=True)
class LeaveTombstone:
    """Nothing was reserved yet: remember the release so a late reservation is refused."""


@dataclass(frozen=True)
class NothingHeld:
    """The reservation was refused: there is nothing to give back."""


ReleaseDecision = Release | AlreadyReleased | LeaveTombstone | NothingHeld


def decide_release(existing: Reservation | None) -> ReleaseDecision:
    if existing is None:
        return LeaveTombstone()
    if existing.status == "reserved":
        return Release(existing.lines)
    if existing.status == "refused":
        return NothingHeld()
    return AlreadyReleased()
