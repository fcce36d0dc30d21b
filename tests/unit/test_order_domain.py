"""The order's rules, with no servers: folding events, placing, confirming, rejecting,
snapshots of the aggregate."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    Money,
    OrderConfirmed,
    OrderLine,
    OrderLineV1,
    OrderPlaced,
    OrderPlacedV1,
    OrderRejected,
    PlaceOrder,
    registry,
)
from workers.order import domain
from workers.order.domain import Order, Outcome, Status

ORDER_ID = "0b0e4b8c-51a4-4d4c-9a50-4a3a1f1e9f11"


def line(sku: str, quantity: int, price: str, currency: str = "EUR") -> OrderLine:
    return OrderLine(sku=sku, quantity=quantity, unit_price=Money.of(price, currency))


def place_command(key: str = "key-1", order_id: str | None = None, **changes: Any) -> PlaceOrder:
    values: dict[str, Any] = {
        "idempotency_key": key,
        "customer_id": "customer-1",
        "items": [line("a", 2, "1.25"), line("b", 1, "10.00")],
        "country": "DE",
        "saga": "choreography",
        "order_id": order_id,
        **changes,
    }
    return PlaceOrder(**values)


def placed_order(order_id: str = ORDER_ID) -> Order:
    decision = domain.place(None, place_command(order_id=order_id))
    order = domain.fold(None, decision.events)
    assert order is not None
    return order


def test_placing_a_new_order_emits_order_placed_v2_with_the_total() -> None:
    command = place_command()
    decision = domain.place(None, command)
    assert decision.outcome is Outcome.PLACED
    (event,) = decision.events
    assert isinstance(event, OrderPlaced) and event.VERSION == 2
    assert event.order_id == domain.order_id_for(command)
    assert event.total == Money.of("12.50", "EUR")
    assert (event.customer_id, event.country, event.saga) == ("customer-1", "DE", "choreography")
    assert event.items == command.items


def test_the_order_id_is_the_client_s_or_derived_from_the_idempotency_key() -> None:
    assert domain.order_id_for(place_command(order_id=ORDER_ID)) == ORDER_ID
    derived = domain.order_id_for(place_command("key-7"))
    assert derived == str(uuid.uuid5(domain.ORDER_NAMESPACE, "key-7"))
    assert domain.order_id_for(place_command("key-7", customer_id="someone else")) == derived
    assert domain.order_id_for(place_command("key-8")) != derived


def test_placing_an_order_that_exists_emits_nothing() -> None:
    existing = placed_order()
    again = domain.place(existing, place_command(order_id=ORDER_ID))
    assert again == domain.Decision(Outcome.ALREADY_PLACED)
    different = domain.place(existing, place_command(order_id=ORDER_ID, country="FR"))
    assert different.outcome is Outcome.ALREADY_PLACED and not different.events
    assert different.note and "other contents" in different.note
    assert domain.place(
        domain.fold(existing, [OrderConfirmed(order_id=ORDER_ID)]), place_command(order_id=ORDER_ID)
    ) == domain.Decision(Outcome.ALREADY_PLACED)


def test_confirm_and_reject_move_a_pending_order_once() -> None:
    order = placed_order()
    assert order.status is Status.PENDING
    confirm = domain.confirm(order, ORDER_ID)
    # The events name the order's saga style, so the orchestrator can leave a
    # choreographed order's events before any transaction.
    confirmed_event = OrderConfirmed(order_id=ORDER_ID, saga="choreography")
    assert confirm == domain.Decision(Outcome.CONFIRMED, (confirmed_event,))
    confirmed = domain.fold(order, confirm.events)
    assert confirmed is not None and confirmed.status is Status.CONFIRMED

    reject = domain.reject(order, ORDER_ID, "out of stock")
    assert reject.events == (
        OrderRejected(order_id=ORDER_ID, reason="out of stock", saga="choreography"),
    )
    rejected = domain.fold(order, reject.events)
    assert rejected is not None
    assert (rejected.status, rejected.rejection_reason) == (Status.REJECTED, "out of stock")


def test_repeats_are_no_ops_and_late_replies_are_refused() -> None:
    order = placed_order()
    confirmed = domain.fold(order, [OrderConfirmed(order_id=ORDER_ID)])
    rejected = domain.fold(order, [OrderRejected(order_id=ORDER_ID, reason="payment failed")])
    assert domain.confirm(confirmed, ORDER_ID) == domain.Decision(Outcome.ALREADY_CONFIRMED)
    assert domain.reject(rejected, ORDER_ID, "x") == domain.Decision(Outcome.ALREADY_REJECTED)

    late_confirm = domain.confirm(rejected, ORDER_ID)
    assert late_confirm.outcome is Outcome.REFUSED and not late_confirm.events
    assert late_confirm.note and "payment failed" in late_confirm.note
    late_reject = domain.reject(confirmed, ORDER_ID, "shipment failed")
    assert late_reject.outcome is Outcome.REFUSED and not late_reject.events


def test_an_order_that_was_never_placed_cannot_be_confirmed_or_rejected() -> None:
    assert domain.confirm(None, ORDER_ID).outcome is Outcome.UNKNOWN_ORDER
    assert domain.reject(None, ORDER_ID, "x").outcome is Outcome.UNKNOWN_ORDER


def test_an_upcast_v1_order_placed_folds_into_an_order_in_eur() -> None:
    v1 = OrderPlacedV1(
        order_id=ORDER_ID,
        customer_id="c",
        items=[OrderLineV1(sku="a", quantity=3, unit_price=4.1)],
        total=12.3,
        country="FR",
    )
    upcast = registry.decode("order.placed", 1, registry.encode(v1))
    order = domain.fold(None, [upcast])
    assert order is not None
    assert order.total == Money.of("12.30", "EUR")
    assert order.items[0].unit_price == Money.of("4.10", "EUR")
    assert order.saga == "orchestration"


@pytest.mark.parametrize(
    "events",
    [
        [OrderConfirmed(order_id=ORDER_ID)],
        ["placed", "placed"],
        ["placed", OrderConfirmed(order_id=ORDER_ID), OrderRejected(order_id=ORDER_ID, reason="x")],
        ["placed", OrderRejected(order_id=ORDER_ID, reason="x"), OrderConfirmed(order_id=ORDER_ID)],
    ],
)
def test_a_stream_that_breaks_the_rules_is_corrupt(events: list[Any]) -> None:
    placed = domain.place(None, place_command(order_id=ORDER_ID)).events[0]
    with pytest.raises(domain.CorruptStream):
        domain.fold(None, [placed if event == "placed" else event for event in events])


def test_an_order_survives_its_snapshot() -> None:
    order = placed_order()
    rejected = domain.fold(order, [OrderRejected(order_id=ORDER_ID, reason="no stock")])
    for state in (order, rejected):
        assert state is not None
        assert domain.from_snapshot(domain.to_snapshot(state)) == state


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s.pop("status"),
        lambda s: s.update(status="SHIPPED"),
        lambda s: s.update(saga="improvised"),
        lambda s: s.update(items=[]),
        lambda s: s.update(total={"amount": 12.5, "currency": "EUR"}),
        lambda s: s.update(customer_id=7),
    ],
)
def test_a_snapshot_of_another_shape_is_refused(damage: Any) -> None:
    state = domain.to_snapshot(placed_order())
    damage(state)
    with pytest.raises((KeyError, TypeError, ValueError)):
        domain.from_snapshot(state)


# --- Properties. ------------------------------------------------------------------------

reasons = st.text(min_size=1, max_size=20)
commands = st.lists(
    st.one_of(st.just(("confirm", "")), st.tuples(st.just("reject"), reasons)), max_size=12
)


@given(commands)
def test_any_sequence_of_confirms_and_rejects_ends_final_once(
    sequence: list[tuple[str, str]],
) -> None:
    order: Order | None = placed_order()
    stream: list[Any] = []
    for kind, reason in sequence:
        if kind == "confirm":
            decision = domain.confirm(order, ORDER_ID)
        else:
            decision = domain.reject(order, ORDER_ID, reason)
        stream.extend(decision.events)
        order = domain.fold(order, decision.events)
    assert order is not None
    if not sequence:
        assert order.status is Status.PENDING and stream == []
        return
    # The first command decides, exactly once; nothing after it changes the order.
    assert len(stream) == 1
    first_kind, first_reason = sequence[0]
    if first_kind == "confirm":
        assert stream == [OrderConfirmed(order_id=ORDER_ID, saga=order.saga)]
        assert (order.status, order.rejection_reason) == (Status.CONFIRMED, None)
    else:
        assert stream == [OrderRejected(order_id=ORDER_ID, reason=first_reason, saga=order.saga)]
        assert (order.status, order.rejection_reason) == (Status.REJECTED, first_reason)
    assert order.final


money = st.decimals(min_value=0, max_value=10_000, places=2).map(
    lambda amount: Money.of(format(amount, "f"), "EUR")
)
lines = st.builds(
    OrderLine,
    sku=st.text(min_size=1, max_size=8),
    quantity=st.integers(1, 50),
    unit_price=money,
)


@given(
    st.lists(lines, min_size=1, max_size=5),
    st.sampled_from(["orchestration", "choreography"]),
    st.one_of(st.none(), reasons),
    st.sampled_from(list(Status)),
)
def test_every_order_round_trips_through_its_snapshot(
    items: list[OrderLine], saga: Any, reason: str | None, status: Status
) -> None:
    order = Order(
        order_id=ORDER_ID,
        status=status,
        customer_id="c",
        items=tuple(items),
        total=domain.order_total(items),
        country="DE",
        saga=saga,
        rejection_reason=reason,
    )
    assert domain.from_snapshot(domain.to_snapshot(order)) == order


@given(st.lists(lines, min_size=1, max_size=5), st.text(min_size=1, max_size=30))
def test_the_same_key_always_names_the_same_order(items: list[OrderLine], key: str) -> None:
    first = domain.place(None, place_command(key, items=items))
    (event,) = first.events
    assert isinstance(event, OrderPlaced)
    assert event.order_id == domain.order_id_for(place_command(key))
    order = domain.fold(None, first.events)
    assert domain.place(order, place_command(key, items=items)).events == ()
