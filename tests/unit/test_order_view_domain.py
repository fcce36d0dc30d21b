"""The read model's rules, with no servers: any arrival order, any repeats, one final row;
then each handler's decision about a message as a value (the row it stores, what it counts
for a rebuild, the saga it saw end), what write makes of a batch's changes, and properties
of any sequence of decisions."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from contracts import (
    Envelope,
    Message,
    Money,
    OrderConfirmed,
    OrderEventsReplayed,
    OrderLine,
    OrderPlacedV2,
    OrderRejected,
    PaymentCompleted,
    Received,
    ShipmentCreated,
)
from contracts.envelope import REPLAY_EXPECTED_HEADER, REPLAY_ID_HEADER, STREAM_VERSION_HEADER
from workers.order_view import domain, handlers, store
from workers.order_view.domain import (
    AppliedForReplay,
    Decided,
    Paid,
    Placed,
    ReplaySent,
    SagaEnded,
    Shipped,
    Summaries,
    Summary,
)
from workers.order_view.store import ReplayCount
from workers.runtime.decision import Decision, after
from workers.runtime.errors import PermanentError

ORDER = "6f1c1a3e-9a1c-4a43-9a49-7b0c5a9e1f10"
OTHER = "7f1c1a3e-9a1c-4a43-9a49-7b0c5a9e1f10"
REPLAY = "2d4c9b1e-5f7a-4c3b-8e2d-1a0b9c8d7e6f"

PLACED_AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
DECIDED_AT = datetime(2024, 5, 1, 12, 0, 3, tzinfo=UTC)

PLACED = Placed(1, "customer-1", 3, Decimal("29.70"), "EUR", "choreography", PLACED_AT)
PAID_AT = datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
SHIPPED_AT = datetime(2024, 5, 1, 12, 0, 2, tzinfo=UTC)

PAID = Paid("0b1f6a64-8a0e-4d4e-9d59-7b2d7f7d2a11")
SHIPPED = Shipped("TRK-123")
CONFIRMED = Decided(2, "CONFIRMED", None, DECIDED_AT, PAID.payment_id, "TRK-123")
# order.confirmed v1 (or upcast from it) names no references.
CONFIRMED_V1 = Decided(2, "CONFIRMED", None, DECIDED_AT)
REJECTED = Decided(2, "REJECTED", "shipping to XX is blocked", DECIDED_AT)

# What an order's events can be: a confirmed order was paid and shipped; a rejected one may
# have been paid and even shipped before the rejection undid it.
CONFIRMED_ORDER: list[domain.ViewEvent] = [PLACED, PAID, SHIPPED, CONFIRMED]
REJECTED_ORDER: list[domain.ViewEvent] = [PLACED, PAID, SHIPPED, REJECTED]


def final(events: list[domain.ViewEvent], order_id: str = ORDER) -> Summary:
    return domain.apply_all(Summary(order_id), events)


def test_a_confirmed_order_in_stream_order() -> None:
    assert final(CONFIRMED_ORDER) == Summary(
        order_id=ORDER,
        status="CONFIRMED",
        customer_id="customer-1",
        item_count=3,
        total_amount=Decimal("29.70"),
        currency="EUR",
        saga="choreography",
        payment_id=PAID.payment_id,
        tracking_number="TRK-123",
        rejection_reason=None,
        created_at=PLACED_AT,
        updated_at=DECIDED_AT,
        last_version=2,
    )


def test_a_rejected_order_shows_no_payment_or_tracking_whatever_came_first() -> None:
    late_placed: list[domain.ViewEvent] = [REJECTED, PAID, SHIPPED, PLACED]
    for events in (REJECTED_ORDER, late_placed):
        summary = final(events)
        assert summary.status == "REJECTED"
        assert summary.rejection_reason == "shipping to XX is blocked"
        assert (summary.payment_id, summary.tracking_number) == (None, None)
        assert (summary.created_at, summary.updated_at) == (PLACED_AT, DECIDED_AT)


def test_the_order_stream_alone_gives_the_row_all_events_give() -> None:
    # What a rebuild replays: only the order service's events.
    assert final([PLACED, CONFIRMED]) == final(CONFIRMED_ORDER)
    assert final([PLACED, REJECTED]) == final(REJECTED_ORDER)


def test_a_v1_confirmation_keeps_the_references_the_services_reported() -> None:
    assert final([PLACED, PAID, SHIPPED, CONFIRMED_V1]) == final(CONFIRMED_ORDER)
    assert final([PLACED, CONFIRMED_V1]).payment_id is None


def test_only_other_services_events_leave_the_status_unknown() -> None:
    summary = final([PAID, SHIPPED])
    assert summary.status is None and summary.last_version == 0
    assert (summary.payment_id, summary.tracking_number) == (PAID.payment_id, "TRK-123")


def test_a_late_order_placed_fills_the_order_in_but_does_not_undo_its_decision() -> None:
    summary = final([CONFIRMED, PLACED])
    assert (summary.status, summary.last_version, summary.updated_at) == (
        "CONFIRMED",
        2,
        DECIDED_AT,
    )
    assert (summary.customer_id, summary.created_at) == ("customer-1", PLACED_AT)


T = TypeVar("T")


def arrivals(events: list[T]) -> st.SearchStrategy[list[T]]:
    """Every event at least once, some several times, in any order."""
    return st.lists(st.sampled_from(events), max_size=8).flatmap(
        lambda repeats: st.permutations(events + repeats)
    )


@given(arrivals(CONFIRMED_ORDER))
def test_any_arrival_order_with_repeats_gives_the_same_confirmed_row(
    events: list[domain.ViewEvent],
) -> None:
    assert final(events) == final(CONFIRMED_ORDER)


@given(arrivals(REJECTED_ORDER))
def test_any_arrival_order_with_repeats_gives_the_same_rejected_row(
    events: list[domain.ViewEvent],
) -> None:
    assert final(events) == final(REJECTED_ORDER)


@given(
    st.sampled_from(
        [
            CONFIRMED_ORDER,
            REJECTED_ORDER,
            [PLACED, PAID, REJECTED],
            [PLACED],
            [PLACED, CONFIRMED],
            [PLACED, PAID, SHIPPED, CONFIRMED_V1],
        ]
    ),
    st.data(),
)
def test_any_two_arrival_orders_of_any_order_s_events_give_the_same_row(
    order: list[domain.ViewEvent], data: st.DataObject
) -> None:
    first = data.draw(arrivals(order))
    second = data.draw(arrivals(order))
    assert final(first) == final(second)


# --- Messages as the view receives them. ----------------------------------------------

# A message and its envelope and headers: what a decision reads.
Arrival = tuple[domain.ProjectedEvent | OrderEventsReplayed, Received]

ITEMS = [
    OrderLine(sku="WIDGET", quantity=2, unit_price=Money.of("9.90", "EUR")),
    OrderLine(sku="GADGET", quantity=1, unit_price=Money.of("9.90", "EUR")),
]
TOTAL = Money.of("29.70", "EUR")


def received(message: Message, at: datetime, headers: Mapping[str, Any] | None = None) -> Received:
    envelope = Envelope(
        message_id=str(uuid.uuid4()),
        type=message.TYPE,
        version=message.VERSION,
        correlation_id=getattr(message, "order_id", REPLAY),
        causation_id=None,
        occurred_at=at,
        producer="order",
    )
    return Received(envelope, headers or {})


def versioned(version: int | None, replay: Mapping[str, Any]) -> dict[str, Any]:
    """An order event's headers: its stream version (None: absent) and a replay's."""
    return {**({} if version is None else {STREAM_VERSION_HEADER: version}), **replay}


def order_arrivals(
    order_id: str = ORDER,
    *,
    rejected: bool = False,
    with_versions: bool = True,
    replay: Mapping[str, Any] | None = None,
) -> dict[str, Arrival]:
    """The events of one order as the order, payment and shipping services send them (the
    view events PLACED, PAID, SHIPPED and CONFIRMED or REJECTED above); ``replay``: the
    headers of a replay on the order service's events."""
    replayed = replay or {}
    placed = OrderPlacedV2(
        order_id=order_id,
        customer_id="customer-1",
        items=ITEMS,
        total=TOTAL,
        country="DE",
        saga="choreography",
    )
    decided: OrderConfirmed | OrderRejected = (
        OrderRejected(order_id=order_id, reason="shipping to XX is blocked")
        if rejected
        else OrderConfirmed(
            order_id=order_id, payment_id=PAID.payment_id, tracking_number="TRK-123"
        )
    )
    paid = PaymentCompleted(
        order_id=order_id,
        payment_id=PAID.payment_id,
        amount=TOTAL,
        saga="choreography",
        country="DE",
        items=ITEMS,
    )
    shipped = ShipmentCreated(
        order_id=order_id,
        shipment_id="5c3e1f0a-2b4d-4e6f-8a9b-0c1d2e3f4a5b",
        tracking_number="TRK-123",
        saga="choreography",
    )
    return {
        "placed": (
            placed,
            received(placed, PLACED_AT, versioned(1 if with_versions else None, replayed)),
        ),
        "paid": (paid, received(paid, PAID_AT)),
        "shipped": (shipped, received(shipped, SHIPPED_AT)),
        "decided": (
            decided,
            received(decided, DECIDED_AT, versioned(2 if with_versions else None, replayed)),
        ),
    }


LIVE = order_arrivals()
LIVE_REJECTED = order_arrivals(rejected=True)
REPLAYED = order_arrivals(replay={REPLAY_ID_HEADER: REPLAY, REPLAY_EXPECTED_HEADER: 10})


def rows(**stored: list[domain.ViewEvent]) -> Summaries:
    """The stored rows, each given by the view events it was made of (keyword: order)."""
    ids = {"order": ORDER, "other": OTHER}
    return Summaries({ids[key]: final(events, ids[key]) for key, events in stored.items()})


def replay_end(replay_id: str, events: int) -> Arrival:
    message = OrderEventsReplayed(replay_id=replay_id, target="order_view", events=events)
    return message, received(message, DECIDED_AT)


def project(state: Summaries, arrival: Arrival) -> Decision[domain.Change]:
    message, envelope = arrival
    assert isinstance(message, domain.ProjectedEvent)
    return domain.project(state, message, received=envelope)


def rebuild(state: Summaries, arrival: Arrival) -> Decision[domain.Change]:
    message, envelope = arrival
    assert isinstance(message, domain.ReplayedMessage)
    return domain.rebuild(state, message, received=envelope)


# --- The live projection: the exact decision, for every case. --------------------------


@pytest.mark.parametrize(
    ("state", "arrival", "decision"),
    [
        pytest.param(
            rows(),
            LIVE["placed"],
            Decision(changes=(final([PLACED]),)),
            id="a new order's row is stored",
        ),
        pytest.param(
            rows(order=[PLACED]),
            LIVE["decided"],
            Decision(
                changes=(final([PLACED, CONFIRMED]), SagaEnded("choreography", "CONFIRMED", 3.0))
            ),
            id="a confirmation ends the saga",
        ),
        pytest.param(
            rows(order=[PLACED, PAID]),
            LIVE_REJECTED["decided"],
            Decision(
                changes=(
                    final([PLACED, PAID, REJECTED]),
                    SagaEnded("choreography", "REJECTED", 3.0),
                )
            ),
            id="a rejection ends the saga and clears the payment",
        ),
        pytest.param(
            rows(order=[PLACED, CONFIRMED]),
            LIVE["decided"],
            Decision(),
            id="a repeated decision stores nothing and ends nothing",
        ),
        pytest.param(
            rows(order=[PLACED, PAID]),
            LIVE["paid"],
            Decision(),
            id="a repeated payment stores nothing",
        ),
        pytest.param(
            rows(),
            LIVE["decided"],
            Decision(changes=(final([CONFIRMED]),)),
            id="a decision before the order is stored, with no saga time to tell",
        ),
        pytest.param(
            rows(order=[CONFIRMED]),
            LIVE["placed"],
            Decision(changes=(final([CONFIRMED, PLACED]),)),
            id="a late order.placed fills the row in and ends no saga",
        ),
        pytest.param(
            rows(),
            LIVE["paid"],
            Decision(changes=(final([PAID]),)),
            id="a payment first makes a row with no status",
        ),
        pytest.param(
            rows(order=[PLACED, REJECTED]),
            LIVE["shipped"],
            Decision(),
            id="a shipment after the rejection stores nothing",
        ),
        pytest.param(
            rows(order=[PLACED], other=[PLACED]),
            order_arrivals(with_versions=False)["decided"],
            Decision(
                changes=(final([PLACED, CONFIRMED]), SagaEnded("choreography", "CONFIRMED", 3.0))
            ),
            id="without a stream version the order service's is assumed",
        ),
    ],
)
def test_project_decides(state: Summaries, arrival: Arrival, decision: Decision[Any]) -> None:
    assert project(state, arrival) == decision


@pytest.mark.parametrize(("header", "version"), [(2, 2), ("2", 2), (b"2", 2), (5, 5)], ids=repr)
def test_the_stream_version_header_may_arrive_as_text_or_bytes(header: Any, version: int) -> None:
    assert domain.stream_version({STREAM_VERSION_HEADER: header}, 1) == version
    assert domain.stream_version({}, domain.DECIDED_VERSION) == domain.DECIDED_VERSION


@pytest.mark.parametrize("header", ["two", b"x", None, 0, -3, True], ids=repr)
def test_a_stream_version_that_is_no_positive_int_can_never_be_projected(header: Any) -> None:
    message, _ = LIVE["placed"]
    envelope = received(message, PLACED_AT, {STREAM_VERSION_HEADER: header})
    with pytest.raises(PermanentError, match=STREAM_VERSION_HEADER):
        project(rows(), (message, envelope))


# --- The rebuild: the same rows, each replayed event counted, the replay's end. --------


@pytest.mark.parametrize(
    ("state", "arrival", "decision"),
    [
        pytest.param(
            rows(),
            REPLAYED["placed"],
            Decision(changes=(final([PLACED]), AppliedForReplay(REPLAY, 10))),
            id="a replayed event is stored and counted",
        ),
        pytest.param(
            rows(order=[PLACED]),
            REPLAYED["decided"],
            Decision(changes=(final([PLACED, CONFIRMED]), AppliedForReplay(REPLAY, 10))),
            id="a replayed decision ends no live saga",
        ),
        pytest.param(
            rows(order=[PLACED, CONFIRMED]),
            REPLAYED["placed"],
            Decision(changes=(AppliedForReplay(REPLAY, 10),)),
            id="an event the live view has already is counted all the same",
        ),
        pytest.param(
            rows(),
            replay_end(REPLAY, 42),
            Decision(changes=(ReplaySent(REPLAY, 42),)),
            id="the replay's end says how many it sent",
        ),
    ],
)
def test_rebuild_decides(state: Summaries, arrival: Arrival, decision: Decision[Any]) -> None:
    assert rebuild(state, arrival) == decision


@pytest.mark.parametrize(
    ("headers", "counted"),
    [
        (
            {REPLAY_ID_HEADER: REPLAY.encode(), REPLAY_EXPECTED_HEADER: 7},
            AppliedForReplay(REPLAY, 7),
        ),
        ({REPLAY_ID_HEADER: REPLAY}, AppliedForReplay(REPLAY, None)),
        ({REPLAY_ID_HEADER: REPLAY, REPLAY_EXPECTED_HEADER: "7"}, AppliedForReplay(REPLAY, None)),
        ({REPLAY_ID_HEADER: REPLAY, REPLAY_EXPECTED_HEADER: -1}, AppliedForReplay(REPLAY, None)),
        ({REPLAY_ID_HEADER: REPLAY, REPLAY_EXPECTED_HEADER: True}, AppliedForReplay(REPLAY, None)),
    ],
)
def test_the_replay_headers_name_the_replay_and_perhaps_its_size(
    headers: dict[str, Any], counted: AppliedForReplay
) -> None:
    message, _ = REPLAYED["placed"]
    envelope = received(message, PLACED_AT, {STREAM_VERSION_HEADER: 1, **headers})
    assert rebuild(rows(), (message, envelope)).changes[-1] == counted


@pytest.mark.parametrize("replay_id", [None, "", b""], ids=repr)
def test_a_replayed_event_of_no_replay_can_never_be_counted(replay_id: Any) -> None:
    message, _ = REPLAYED["placed"]
    headers = {} if replay_id is None else {REPLAY_ID_HEADER: replay_id}
    with pytest.raises(PermanentError, match=REPLAY_ID_HEADER):
        rebuild(rows(), (message, received(message, PLACED_AT, headers)))


# --- What write stores, and what is observed once the batch has committed. -------------


def test_a_batch_writes_each_order_s_last_row_and_adds_up_each_replay_s_counters() -> None:
    second_replay = "3e5d0c2f-6a8b-4d4c-9f3e-2b1c0d9e8f7a"
    rows_written = store.rows_of(
        [
            final([PLACED]),
            AppliedForReplay(REPLAY, 10),
            final([PAID], OTHER),
            final([PLACED, CONFIRMED]),
            SagaEnded("choreography", "CONFIRMED", 3.0),
            AppliedForReplay(REPLAY, None),
            ReplaySent(REPLAY, 4),
            AppliedForReplay(second_replay, 3),
        ]
    )
    assert rows_written.summaries == {
        ORDER: final([PLACED, CONFIRMED]),
        OTHER: final([PAID], OTHER),
    }
    assert rows_written.replays == {
        REPLAY: ReplayCount(applied=2, expected=10, sent=4),
        second_replay: ReplayCount(applied=1, expected=3),
    }


def test_the_live_projection_observes_the_sagas_its_committed_batch_saw_end() -> None:
    assert handlers.service.handler_named("project").after_commit is handlers.observe_saga_ends
    assert handlers.service.handler_named("rebuild").after_commit is None
    labels = {"style": "orchestration", "outcome": "rejected"}

    def observed() -> tuple[float, float]:
        count = REGISTRY.get_sample_value("fleet_saga_duration_seconds_count", labels)
        total = REGISTRY.get_sample_value("fleet_saga_duration_seconds_sum", labels)
        return count or 0.0, total or 0.0

    before = observed()
    handlers.observe_saga_ends(
        [final([PLACED]), SagaEnded("orchestration", "REJECTED", 2.5), ReplaySent(REPLAY, 1)]
    )
    assert observed() == (before[0] + 1, before[1] + 2.5)


# --- Properties of any sequence of decisions. -----------------------------------------


def fold(
    decide: Any, stored: Summaries, batches: Sequence[Sequence[Arrival]]
) -> tuple[Summaries, list[Decision[domain.Change]]]:
    """The batches decided as the runtime decides them, each from the rows the batches
    before it wrote; the rows at the end, and every decision."""
    decisions = []
    for batch in batches:
        state, changes = stored, []
        for arrival in batch:
            decision = decide(state, arrival)
            state = after(state, decision.changes)
            changes += decision.changes
            decisions.append(decision)
        written = store.rows_of(changes).summaries
        assert {order_id: state.rows[order_id] for order_id in written} == written
        stored = Summaries({**stored.rows, **written})
    return stored, decisions


def split(items: list[T], data: st.DataObject) -> list[list[T]]:
    """``items`` in batches of any sizes, in order."""
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(items) - 1)))))
    bounds = [0, *(cut for cut in cuts if cut < len(items)), len(items)]
    return [items[start:end] for start, end in itertools.pairwise(bounds)]


TWO_ORDERS = [*LIVE.values(), *order_arrivals(OTHER, rejected=True).values()]


@given(arrivals(TWO_ORDERS), st.data())
def test_any_arrival_order_and_batching_gives_each_order_the_row_apply_all_gives(
    events: list[Arrival], data: st.DataObject
) -> None:
    stored, _ = fold(project, Summaries(), split(events, data))
    for order_id, row in ((ORDER, final(CONFIRMED_ORDER)), (OTHER, final(REJECTED_ORDER, OTHER))):
        its_events = [
            domain.view_event(message, envelope)
            for message, envelope in events
            if isinstance(message, domain.ProjectedEvent) and message.order_id == order_id
        ]
        assert stored.rows[order_id] == final(its_events, order_id) == row


@given(arrivals(list(LIVE.values())), st.data())
def test_a_live_saga_s_end_is_observed_once_when_its_order_was_placed_first(
    events: list[Arrival], data: st.DataObject
) -> None:
    _, decisions = fold(project, Summaries(), split(events, data))
    ended = [change for d in decisions for change in d.changes if isinstance(change, SagaEnded)]
    kinds = [message.TYPE for message, _ in events]
    placed_first = kinds.index("order.placed") < kinds.index("order.confirmed")
    assert ended == ([SagaEnded("choreography", "CONFIRMED", 3.0)] if placed_first else [])


REPLAYS = [REPLAY, "3e5d0c2f-6a8b-4d4c-9f3e-2b1c0d9e8f7a"]


def replayed(order_id: str, replay_id: str, kind: str) -> Arrival:
    headers = {REPLAY_ID_HEADER: replay_id, REPLAY_EXPECTED_HEADER: 20}
    return order_arrivals(order_id, replay=headers)[kind]


replays = st.lists(
    st.one_of(
        st.builds(
            replayed,
            st.sampled_from([ORDER, OTHER]),
            st.sampled_from(REPLAYS),
            st.sampled_from(["placed", "decided"]),
        ),
        st.builds(replay_end, st.sampled_from(REPLAYS), st.integers(0, 30)),
    ),
    max_size=16,
)


@given(replays)
def test_a_batch_counts_each_replayed_event_once_and_keeps_what_its_replay_sent(
    batch: list[Arrival],
) -> None:
    _, decisions = fold(rebuild, Summaries(), [batch])
    counted = store.rows_of([change for d in decisions for change in d.changes]).replays
    for replay_id in REPLAYS:
        applied = sum(
            1
            for message, envelope in batch
            if not isinstance(message, OrderEventsReplayed)
            and envelope.headers[REPLAY_ID_HEADER] == replay_id
        )
        sent = [
            message.events
            for message, _ in batch
            if isinstance(message, OrderEventsReplayed) and message.replay_id == replay_id
        ]
        assert counted.get(replay_id, ReplayCount()) == ReplayCount(
            applied, 20 if applied else None, sent[-1] if sent else None
        )


@given(arrivals([REPLAYED["placed"], REPLAYED["decided"]]), st.data())
def test_a_replay_of_the_order_s_stream_gives_the_row_every_live_event_gives(
    events: list[Arrival], data: st.DataObject
) -> None:
    stored, _ = fold(rebuild, Summaries(), split(events, data))
    assert stored.rows == {ORDER: final(CONFIRMED_ORDER)}
