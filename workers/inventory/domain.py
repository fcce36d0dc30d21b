"""The inventory's rules, free of I/O: what a reservation or a release does.

    stock = Stock(reservations={...}, available={"SKU-1": 5})   # what store.load_stock read
    decision = reserve_stock(stock, command)                     # changes and the reply

Every decision is keyed by the order id and can be asked again: asking to reserve an order
that is already reserved answers the same way, and a release that comes before its
reservation leaves a tombstone that refuses the late reservation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from contracts import (
    OrderPlacedV2,
    PaymentFailed,
    ReleaseStock,
    ReserveStock,
    ShipmentFailed,
    StockReleased,
    StockReservationFailed,
    StockReserved,
)
from workers.runtime.decision import Decision

Status = Literal["reserved", "refused", "released"]

RELEASED_BEFORE_RESERVED = "the order was released before its reservation arrived"

# What asks for a reservation, and what asks for its release (in choreography, a failed
# payment or shipment releases the stock).
ReservationRequest = ReserveStock | OrderPlacedV2
ReleaseRequest = ReleaseStock | PaymentFailed | ShipmentFailed


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


# --- Changes: what a decision does to the stock (store.write_stock stores them). --------


@dataclass(frozen=True)
class Reserved:
    """The order's lines are taken from available stock."""

    order_id: str
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Refused:
    """The order cannot have its stock: only the refusal is recorded."""

    order_id: str
    reason: str


@dataclass(frozen=True)
class Released:
    """The order's reserved lines go back to available stock."""

    order_id: str
    lines: tuple[Line, ...]
    reason: str


@dataclass(frozen=True)
class TombstoneLeft:
    """Released before anything was reserved: remembered, so the late reservation is
    refused."""

    order_id: str
    reason: str


Change = Reserved | Refused | Released | TombstoneLeft


@dataclass(frozen=True)
class Stock:
    """What a batch decides on: the reservations of its orders (absent: none yet) and the
    available units of the SKUs they name (absent: no such SKU)."""

    reservations: Mapping[str, Reservation] = field(default_factory=dict)
    available: Mapping[str, int] = field(default_factory=dict)

    def apply(self, change: Change) -> Stock:
        available = dict(self.available)
        match change:
            case Reserved(order_id, lines):
                reservation = Reservation(order_id, "reserved", None, lines)
                for line in lines:
                    available[line.sku] -= line.quantity
            case Refused(order_id, reason):
                reservation = Reservation(order_id, "refused", reason, ())
            case Released(order_id, lines, reason):
                reservation = Reservation(order_id, "released", reason, lines)
                for line in lines:
                    available[line.sku] = available.get(line.sku, 0) + line.quantity
            case TombstoneLeft(order_id, reason):
                reservation = Reservation(order_id, "released", reason, ())
        reservations = {**self.reservations, reservation.order_id: reservation}
        return Stock(reservations, available)


def merge_lines(lines: Iterable[Line]) -> tuple[Line, ...]:
    """One line per SKU, sorted by SKU (stock rows are then locked in one global order)."""
    totals: dict[str, int] = {}
    for line in lines:
        if line.quantity <= 0:
            raise ValueError(f"quantity of {line.sku} must be positive, not {line.quantity}")
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    return tuple(Line(sku, quantity) for sku, quantity in sorted(totals.items()))


def wanted_lines(request: ReservationRequest) -> tuple[Line, ...]:
    return merge_lines(Line(item.sku, item.quantity) for item in request.items)


# --- Decisions. ------------------------------------------------------------------------


def reserve_stock(stock: Stock, command: ReservationRequest) -> Decision[Change]:
    """All lines or none; out of stock or an unknown SKU is a refusal event, not an error.
    In choreography the reservation follows ``order.placed``; an orchestrated order waits
    for the orchestrator's command. Asked again, it answers as it did the first time."""
    order_id = command.order_id
    reserved = StockReserved(
        order_id=order_id,
        items=command.items,
        saga=command.saga,
        customer_id=command.customer_id,
        total=command.total,
        country=command.country,
    )
    existing = stock.reservations.get(order_id)
    if existing is not None:
        if existing.status == "reserved":
            return Decision(send=(reserved,))
        return Decision(send=(_failed(command, _refused_before(existing)),))
    wanted = wanted_lines(command)
    reason = _shortage(stock.available, wanted)
    if reason is not None:
        return Decision(changes=(Refused(order_id, reason),), send=(_failed(command, reason),))
    return Decision(changes=(Reserved(order_id, wanted),), send=(reserved,))


def _refused_before(existing: Reservation) -> str:
    if existing.status == "released" and not existing.lines:
        return RELEASED_BEFORE_RESERVED
    return existing.reason or "the order's reservation was already released"


def _shortage(available: Mapping[str, int], wanted: tuple[Line, ...]) -> str | None:
    """Why ``wanted`` cannot be reserved from ``available``; None when it can."""
    unknown = [line.sku for line in wanted if line.sku not in available]
    if unknown:
        return f"unknown SKU: {', '.join(unknown)}"
    short = [
        f"{line.sku} (wanted {line.quantity}, available {available[line.sku]})"
        for line in wanted
        if available[line.sku] < line.quantity
    ]
    return f"out of stock: {', '.join(short)}" if short else None


def _failed(command: ReservationRequest, reason: str) -> StockReservationFailed:
    return StockReservationFailed(
        order_id=command.order_id,
        reason=reason,
        saga=command.saga,
        customer_id=command.customer_id,
    )


def release_stock(stock: Stock, command: ReleaseRequest) -> Decision[Change]:
    """Give the order's stock back; before any reservation, leave a tombstone instead.
    Every release is answered with ``stock.released``: the saga needs an answer to every
    compensation."""
    order_id = command.order_id
    released = StockReleased(order_id=order_id, saga=command.saga)
    existing = stock.reservations.get(order_id)
    if existing is None:
        return Decision(changes=(TombstoneLeft(order_id, command.reason),), send=(released,))
    if existing.status == "reserved":
        change = Released(order_id, existing.lines, command.reason)
        return Decision(changes=(change,), send=(released,))
    return Decision(send=(released,))  # released before, or refused: nothing is held
