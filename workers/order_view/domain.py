"""The read model's rules, free of I/O: how one event changes an order's summary row.

Events of one order arrive from different services in any order, some of them twice; the
row must end the same whatever the arrival order. So every column is owned by one kind of
event, and each rule commutes with every other:

- ``order.placed`` sets what the order is (customer, item count, total, saga, created_at)
  whenever it arrives; it sets status PENDING only if no later stream version was applied;
- ``order.confirmed`` / ``order.rejected`` set status, reason and updated_at only if their
  stream version is newer than the last one applied; a rejection clears payment_id and
  tracking_number (a refused or undone order shows no references), a confirmation (v2)
  sets the ones it names;
- ``payment.completed`` / ``shipment.created`` set payment_id / tracking_number unless the
  order is already REJECTED (the same values a confirmation names: one payment and one
  shipment per order).

So the order's own stream (placed, then confirmed or rejected) gives the same row as all the
services' events together: that is what lets ``fleet view rebuild`` replay the order
service's event store alone.

A repeat changes nothing: the same fields again, or a stream version already applied.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Literal

Status = Literal["PENDING", "CONFIRMED", "REJECTED"]
STATUSES: tuple[Status, ...] = ("PENDING", "CONFIRMED", "REJECTED")

# Stream versions the order service gives its events, for messages that lack the header.
PLACED_VERSION = 1
DECIDED_VERSION = 2


@dataclass(frozen=True)
class Summary:
    """One row of ``order_summaries``; only order_id and last_version are always known."""

    order_id: str
    status: Status | None = None
    customer_id: str | None = None
    item_count: int | None = None
    total_amount: Decimal | None = None
    currency: str | None = None
    saga: str | None = None
    payment_id: str | None = None
    tracking_number: str | None = None
    rejection_reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_version: int = 0


@dataclass(frozen=True)
class Placed:
    version: int
    customer_id: str
    item_count: int
    total_amount: Decimal
    currency: str
    saga: str
    occurred_at: datetime


@dataclass(frozen=True)
class Decided:
    """order.confirmed (status CONFIRMED) or order.rejected (REJECTED, with a reason)."""

    version: int
    status: Literal["CONFIRMED", "REJECTED"]
    reason: str | None
    occurred_at: datetime
    # Named by order.confirmed v2 (None from v1 and for a rejection).
    payment_id: str | None = None
    tracking_number: str | None = None


@dataclass(frozen=True)
class Paid:
    payment_id: str


@dataclass(frozen=True)
class Shipped:
    tracking_number: str


ViewEvent = Placed | Decided | Paid | Shipped


def apply(summary: Summary, event: ViewEvent) -> Summary:
    """The row after ``event``; the same row whatever order the events come in."""
    if isinstance(event, Placed):
        placed = replace(
            summary,
            customer_id=event.customer_id,
            item_count=event.item_count,
            total_amount=event.total_amount,
            currency=event.currency,
            saga=event.saga,
            created_at=event.occurred_at,
        )
        if event.version > summary.last_version:
            placed = replace(
                placed,
                status="PENDING",
                updated_at=event.occurred_at,
                last_version=event.version,
            )
        return placed
    if isinstance(event, Decided):
        if event.version <= summary.last_version:
            return summary
        decided = replace(
            summary,
            status=event.status,
            rejection_reason=event.reason,
            updated_at=event.occurred_at,
            last_version=event.version,
        )
        if event.status == "REJECTED":
            return replace(decided, payment_id=None, tracking_number=None)
        return replace(
            decided,
            payment_id=event.payment_id or decided.payment_id,
            tracking_number=event.tracking_number or decided.tracking_number,
        )
    if summary.status == "REJECTED":
        return summary
    if isinstance(event, Paid):
        return replace(summary, payment_id=event.payment_id)
    return replace(summary, tracking_number=event.tracking_number)


def apply_all(summary: Summary, events: list[ViewEvent]) -> Summary:
    for event in events:
        summary = apply(summary, event)
    return summary
