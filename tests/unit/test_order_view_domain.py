"""The read model's rules, with no servers: any arrival order, any repeats, one final row."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from workers.order_view import domain
from workers.order_view.domain import Decided, Paid, Placed, Shipped, Summary

PLACED_AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
DECIDED_AT = datetime(2024, 5, 1, 12, 0, 3, tzinfo=UTC)

PLACED = Placed(1, "customer-1", 3, Decimal("29.70"), "EUR", "choreography", PLACED_AT)
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


def final(events: list[domain.ViewEvent]) -> Summary:
    return domain.apply_all(Summary("o1"), events)


def test_a_confirmed_order_in_stream_order() -> None:
    assert final(CONFIRMED_ORDER) == Summary(
        order_id="o1",
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


def arrivals(events: list[domain.ViewEvent]) -> st.SearchStrategy[list[domain.ViewEvent]]:
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
