"""The read model's rules, free of I/O: how one event changes an order's summary row, and
what the view's two handlers decide about a message.

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

    summaries = Summaries({order_id: row})           # what store.load_summaries read
    decision = project(summaries, event, received=received)
    decision.changes                                 # (the row to store, SagaEnded(...))

Order events carry their stream version in the ``x-stream-version`` header (set by the
order service), which is how a late order.placed knows not to undo a confirmation; the time
of an event is its envelope's ``occurred_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from contracts import (
    OrderConfirmed,
    OrderEventsReplayed,
    OrderPlacedV2,
    OrderRejected,
    PaymentCompleted,
    Received,
    ShipmentCreated,
)
from contracts.envelope import REPLAY_EXPECTED_HEADER, REPLAY_ID_HEADER, STREAM_VERSION_HEADER
from workers.runtime.decision import Decision
from workers.runtime.errors import PermanentError

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


# --- What a batch decides on, and the changes of its decisions. ------------------------


@dataclass(frozen=True)
class SagaEnded:
    """A live order's saga just ended: how long it took, placed to decided. Not stored: the
    handler observes it as a metric once the batch has committed."""

    saga: str
    status: Literal["CONFIRMED", "REJECTED"]
    seconds: float


@dataclass(frozen=True)
class AppliedForReplay:
    """One more replayed event applied for replay ``replay_id``, which expects to send
    ``expected`` events in all (None: it did not say)."""

    replay_id: str
    expected: int | None


@dataclass(frozen=True)
class ReplaySent:
    """Replay ``replay_id`` says it sent ``events`` events in all (its last message)."""

    replay_id: str
    events: int


# What a decision changes: an order's row as it must now be stored (the Summary itself),
# a saga's end to observe, a replay's counters.
Change = Summary | SagaEnded | AppliedForReplay | ReplaySent


@dataclass(frozen=True)
class Summaries:
    """The stored rows of a batch's orders (absent: the view has no row for it yet)."""

    rows: Mapping[str, Summary] = field(default_factory=dict)

    def apply(self, change: Change) -> Summaries:
        if isinstance(change, Summary):
            return Summaries({**self.rows, change.order_id: change})
        return self  # the rest is counted or observed, not a row of the order


# --- From a message to a view event. ---------------------------------------------------

# The events the live projection reads; stock events are not projected: stock.reserved
# carries nothing the order events do not already give the row.
ProjectedEvent = OrderPlacedV2 | OrderConfirmed | OrderRejected | PaymentCompleted | ShipmentCreated
# What the order service replays to the view: its own events, then how many it sent.
ReplayedEvent = OrderPlacedV2 | OrderConfirmed | OrderRejected
ReplayedMessage = ReplayedEvent | OrderEventsReplayed


def view_event(event: ProjectedEvent, received: Received) -> ViewEvent:
    """What ``event`` says about its order's row (its time: the envelope's occurred_at)."""
    if isinstance(event, PaymentCompleted):
        return Paid(event.payment_id)
    if isinstance(event, ShipmentCreated):
        return Shipped(event.tracking_number)
    occurred_at = received.envelope.occurred_at
    if isinstance(event, OrderPlacedV2):
        return Placed(
            version=stream_version(received.headers, PLACED_VERSION),
            customer_id=event.customer_id,
            item_count=sum(item.quantity for item in event.items),
            total_amount=event.total.amount,
            currency=event.total.currency,
            saga=event.saga,
            occurred_at=occurred_at,
        )
    version = stream_version(received.headers, DECIDED_VERSION)
    if isinstance(event, OrderConfirmed):
        return Decided(
            version, "CONFIRMED", None, occurred_at, event.payment_id, event.tracking_number
        )
    return Decided(version, "REJECTED", event.reason, occurred_at)


def stream_version(headers: Mapping[str, Any], default: int) -> int:
    """The event's version in its order's stream (``default`` when the header is absent);
    a header that is no positive int can never be projected."""
    raw = headers.get(STREAM_VERSION_HEADER, default)
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise PermanentError(f"{STREAM_VERSION_HEADER} {raw!r} is not an int") from None
    if isinstance(raw, bool) or version < 1:
        raise PermanentError(f"{STREAM_VERSION_HEADER} {raw!r} is not a positive int")
    return version


def replay_headers(headers: Mapping[str, Any]) -> tuple[str, int | None]:
    """The replay a replayed event belongs to (required) and how many events it expects
    to send (None when the header is absent or no count)."""
    replay_id = headers.get(REPLAY_ID_HEADER)
    if isinstance(replay_id, bytes):
        replay_id = replay_id.decode("utf-8", errors="replace")
    if not isinstance(replay_id, str) or not replay_id:
        raise PermanentError(f"a replayed event must carry the {REPLAY_ID_HEADER} header")
    expected = headers.get(REPLAY_EXPECTED_HEADER)
    valid = isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0
    return replay_id, expected if valid else None


# --- Decisions. ------------------------------------------------------------------------


def project(summaries: Summaries, event: ProjectedEvent, *, received: Received) -> Decision[Change]:
    """A live event into its order's row; and, when it ended the order's saga, how long
    the saga took."""
    before, row = _row_after(summaries, event, received)
    if row is None:
        return Decision()
    ended = _saga_ended(before, row)
    return Decision(changes=(row,) if ended is None else (row, ended))


def rebuild(
    summaries: Summaries, message: ReplayedMessage, *, received: Received
) -> Decision[Change]:
    """What the order service replays from its event store (``fleet view rebuild``),
    applied exactly as the live events and counted for the rebuild's progress; its closing
    order.events_replayed says how many it sent.

    Live events keep being applied meanwhile: the projection commutes, so the two streams
    interleave safely, and the replayed order events alone give every order its full row.
    A replay is history: its sagas ended long ago and are not observed again."""
    if isinstance(message, OrderEventsReplayed):
        return Decision(changes=(ReplaySent(message.replay_id, message.events),))
    replay_id, expected = replay_headers(received.headers)
    _, row = _row_after(summaries, message, received)
    counted = AppliedForReplay(replay_id, expected)
    return Decision(changes=(counted,) if row is None else (row, counted))


def _row_after(
    summaries: Summaries, event: ProjectedEvent, received: Received
) -> tuple[Summary, Summary | None]:
    """The order's row before ``event``, and the row to store after it: None when the
    stored row is that already (a new order's row is stored even if ``event`` added
    nothing)."""
    stored = summaries.rows.get(event.order_id)
    before = stored or Summary(order_id=event.order_id)
    after = apply(before, view_event(event, received))
    return before, None if after == stored else after


def _saga_ended(before: Summary, after: Summary) -> SagaEnded | None:
    """The end of the order's saga if ``after`` just got its final status (in either saga
    style: the view sees both) and knows when the order was placed."""
    if after.status not in ("CONFIRMED", "REJECTED") or after.status == before.status:
        return None
    if after.created_at is None or after.updated_at is None:
        return None
    seconds = max(0.0, (after.updated_at - after.created_at).total_seconds())
    return SagaEnded(after.saga or "unknown", after.status, seconds)
