"""The shipping's rules, free of I/O: what creating or cancelling a shipment does.

    shipments = Shipments({order_id: Shipment(...)})              # read by store.load_shipments
    decision = create_shipment(shipments, command, settings=...)  # changes and the reply

Every decision is keyed by the order id and can be asked again: at most one shipment per
order, and asking to create a shipment that exists answers with the recorded one. A
destination in the blocked countries is a refusal (an event, not an error).

A cancellation can arrive before its creation (a saga compensating a step whose command is
still in flight). It then leaves a tombstone, a ``cancelled`` shipment with no shipment id,
so that the late creation is refused. Cancelling a refused shipment changes nothing, and
every cancellation is answered with ``shipment.cancelled``: the saga needs an answer to every
compensation. A creation asked again after its shipment was cancelled is refused, never
shipped a second time. An order's shipment id is derived from its order id, and its tracking
number from the shipment id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from contracts import (
    CancelShipment,
    CreateShipment,
    PaymentCompleted,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentFailed,
)
from workers.runtime.decision import Decision
from workers.shipping.settings import ShippingSettings

Status = Literal["created", "refused", "cancelled"]

CANCELLED_BEFORE_CREATED = "the shipment was cancelled (the order cancelled) before it was created"
ALREADY_CANCELLED = "the shipment was already cancelled"

TRACKING_PREFIX = "TRK-"
TRACKING_LENGTH = 10
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# What asks for a shipment (in choreography, a completed payment is shipped).
CreationRequest = CreateShipment | PaymentCompleted

# The namespace of shipment ids (uuid5 of the order id). Never change it: an order's
# shipment id, and the tracking number derived from it, must be the same in every process
# and every release.
SHIPMENT_IDS = uuid.UUID("7686c8d7-b1d0-440f-a631-76e50f64b499")


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


def shipment_id_for(order_id: str) -> str:
    """The id of the order's shipment, once created (at most one per order)."""
    return str(uuid.uuid5(SHIPMENT_IDS, order_id))


def tracking_number(shipment_id: str) -> str:
    """``TRK-`` and ten upper-case letters and digits, derived from the shipment id alone (the
    same id always gives the same number): its 128 bits in base 36, the last ten digits."""
    value = uuid.UUID(shipment_id).int
    digits = []
    for _ in range(TRACKING_LENGTH):
        value, digit = divmod(value, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return TRACKING_PREFIX + "".join(reversed(digits))


# --- Changes: what a decision does to the shipments (store.write_shipments stores them). --


@dataclass(frozen=True)
class Created:
    """The order's shipment is created."""

    order_id: str
    shipment_id: str
    tracking_number: str
    country: str


@dataclass(frozen=True)
class Refused:
    """Nothing is shipped: only the refusal is recorded."""

    order_id: str
    country: str
    reason: str


@dataclass(frozen=True)
class Cancelled:
    """The created shipment is cancelled; it keeps its ids."""

    order_id: str
    shipment_id: str
    tracking_number: str
    country: str
    reason: str


@dataclass(frozen=True)
class TombstoneLeft:
    """Cancelled before anything was created: remembered, so the late creation is refused."""

    order_id: str
    reason: str


Change = Created | Refused | Cancelled | TombstoneLeft


def shipment_after(change: Change) -> Shipment:
    """The order's shipment as ``change`` leaves it."""
    match change:
        case Created(order_id, shipment_id, tracking, country):
            return Shipment(order_id, shipment_id, tracking, country, "created", None)
        case Refused(order_id, country, reason):
            return Shipment(order_id, None, None, country, "refused", reason)
        case Cancelled(order_id, shipment_id, tracking, country, reason):
            return Shipment(order_id, shipment_id, tracking, country, "cancelled", reason)
        case TombstoneLeft(order_id, reason):
            return Shipment(order_id, None, None, None, "cancelled", reason)


@dataclass(frozen=True)
class Shipments:
    """What a batch decides on: the shipments of its orders (absent: none yet)."""

    by_order: Mapping[str, Shipment] = field(default_factory=dict)

    def apply(self, change: Change) -> Shipments:
        return Shipments({**self.by_order, change.order_id: shipment_after(change)})


# --- Decisions. ------------------------------------------------------------------------


def create_shipment(
    shipments: Shipments, request: CreationRequest, *, settings: ShippingSettings
) -> Decision[Change]:
    """Create the order's shipment once; a blocked destination is a refusal event, not an
    error. In choreography the shipment follows ``payment.completed``; an orchestrated order
    waits for the orchestrator's command. Asked again, it answers as it did the first time,
    even if the blocked countries have changed since."""
    order_id = request.order_id
    existing = shipments.by_order.get(order_id)
    if existing is not None:
        if existing.status == "created":
            assert existing.shipment_id is not None and existing.tracking_number is not None
            return Decision(
                send=(_created(request, existing.shipment_id, existing.tracking_number),)
            )
        return Decision(send=(_failed(request, _refused_before(existing)),))
    if request.country.upper() in {blocked.upper() for blocked in settings.blocked_countries}:
        reason = f"destination country {request.country} is blocked"
        return Decision(
            changes=(Refused(order_id, request.country, reason),), send=(_failed(request, reason),)
        )
    shipment_id = shipment_id_for(order_id)
    change = Created(order_id, shipment_id, tracking_number(shipment_id), request.country)
    return Decision(
        changes=(change,), send=(_created(request, change.shipment_id, change.tracking_number),)
    )


def _refused_before(existing: Shipment) -> str:
    if existing.is_tombstone:
        return CANCELLED_BEFORE_CREATED
    if existing.status == "cancelled":
        return ALREADY_CANCELLED
    return existing.reason or "the shipment was refused"


def _created(request: CreationRequest, shipment_id: str, tracking: str) -> ShipmentCreated:
    return ShipmentCreated(
        order_id=request.order_id,
        shipment_id=shipment_id,
        tracking_number=tracking,
        saga=request.saga,
        # Passed on in choreography, where the order confirms on this event.
        payment_id=request.payment_id if isinstance(request, PaymentCompleted) else None,
    )


def _failed(request: CreationRequest, reason: str) -> ShipmentFailed:
    return ShipmentFailed(order_id=request.order_id, reason=reason, saga=request.saga)


def cancel_shipment(shipments: Shipments, command: CancelShipment) -> Decision[Change]:
    """Cancel the order's shipment once; before any shipment, leave a tombstone instead.
    Every cancellation is answered with ``shipment.cancelled``. Choreography never cancels a
    shipment: it is the saga's last step."""
    order_id = command.order_id
    cancelled = ShipmentCancelled(order_id=order_id, saga=command.saga)
    existing = shipments.by_order.get(order_id)
    if existing is None:
        return Decision(changes=(TombstoneLeft(order_id, command.reason),), send=(cancelled,))
    if existing.status == "created":
        assert existing.shipment_id is not None and existing.tracking_number is not None
        assert existing.country is not None
        change = Cancelled(
            order_id,
            existing.shipment_id,
            existing.tracking_number,
            existing.country,
            command.reason,
        )
        return Decision(changes=(change,), send=(cancelled,))
    return Decision(send=(cancelled,))  # cancelled before, or refused: nothing is shipped
