"""The inventory's rules, with no servers: each decision and its exact replies, as values;
then properties of any sequence of them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    Money,
    OrderLine,
    OrderPlacedV2,
    PaymentFailed,
    ReleaseStock,
    ReserveStock,
    ShipmentFailed,
    StockReleased,
    StockReservationFailed,
    StockReserved,
)
from workers.inventory import domain, store
from workers.inventory.domain import (
    Line,
    Refused,
    Released,
    Reservation,
    Reserved,
    Stock,
    TombstoneLeft,
)
from workers.runtime.decision import Decision, after

ORDER = "6f1c1a3e-9a1c-4a43-9a49-7b0c5a9e1f10"


def item(sku: str, quantity: int) -> OrderLine:
    return OrderLine(sku=sku, quantity=quantity, unit_price=Money.of("2.50", "EUR"))


def reserve(*items: OrderLine, order_id: str = ORDER, saga: str = "orchestration") -> ReserveStock:
    total = items[0].subtotal()
    for line in items[1:]:
        total += line.subtotal()
    return ReserveStock(
        order_id=order_id,
        items=list(items),
        saga=saga,
        customer_id="CUST-1",
        total=total,
        country="DE",
    )


def reserved_reply(command: ReserveStock | OrderPlacedV2) -> StockReserved:
    return StockReserved(
        order_id=command.order_id,
        items=command.items,
        saga=command.saga,
        customer_id=command.customer_id,
        total=command.total,
        country=command.country,
    )


def failed_reply(command: ReserveStock, reason: str) -> StockReservationFailed:
    return StockReservationFailed(
        order_id=command.order_id, reason=reason, saga=command.saga, customer_id="CUST-1"
    )


def release(order_id: str = ORDER, reason: str = "payment refused") -> ReleaseStock:
    return ReleaseStock(order_id=order_id, reason=reason, saga="orchestration")


# --- Reserving: the decision and its reply, for every case. ----------------------------


def test_a_new_order_with_enough_stock_is_reserved_with_lines_merged_by_sku() -> None:
    command = reserve(item("b", 1), item("a", 2), item("a", 3))
    decision = domain.reserve_stock(Stock(available={"a": 5, "b": 1}), command)
    assert decision == Decision(
        changes=(Reserved(ORDER, (Line("a", 5), Line("b", 1))),),
        send=(reserved_reply(command),),
    )


@pytest.mark.parametrize(
    ("available", "items", "reason"),
    [
        ({"a": 5, "b": 0}, [item("a", 1), item("b", 2)], "out of stock: b (wanted 2, available 0)"),
        ({"a": 5}, [item("a", 1), item("zz", 1)], "unknown SKU: zz"),
        (
            {"a": 1, "b": 1},
            [item("a", 2), item("b", 3)],
            "out of stock: a (wanted 2, available 1), b (wanted 3, available 1)",
        ),
    ],
)
def test_a_reservation_that_cannot_be_met_is_a_refusal_event_that_takes_nothing(
    available: dict[str, int], items: list[OrderLine], reason: str
) -> None:
    command = reserve(*items)
    decision = domain.reserve_stock(Stock(available=available), command)
    assert decision == Decision(
        changes=(Refused(ORDER, reason),), send=(failed_reply(command, reason),)
    )


def test_asking_again_answers_the_same_without_a_new_effect() -> None:
    command = reserve(item("a", 2))
    held = Reservation(ORDER, "reserved", None, (Line("a", 2),))
    stock = Stock({ORDER: held}, {"a": 0})
    assert domain.reserve_stock(stock, command) == Decision(send=(reserved_reply(command),))
    refused = Stock({ORDER: Reservation(ORDER, "refused", "out of stock: a", ())}, {"a": 99})
    assert domain.reserve_stock(refused, command) == Decision(
        send=(failed_reply(command, "out of stock: a"),)
    )


def test_in_choreography_order_placed_reserves_and_the_reply_says_choreography() -> None:
    placed = OrderPlacedV2(
        order_id=ORDER,
        customer_id="CUST-1",
        items=[item("a", 1)],
        total=Money.of("2.50", "EUR"),
        country="DE",
        saga="choreography",
    )
    decision = domain.reserve_stock(Stock(available={"a": 1}), placed)
    assert decision.send == (reserved_reply(placed),)
    assert decision.changes == (Reserved(ORDER, (Line("a", 1),)),)


# --- Releasing. ------------------------------------------------------------------------


def test_release_gives_back_what_was_reserved_once() -> None:
    held = Reservation(ORDER, "reserved", None, (Line("a", 2),))
    answer = StockReleased(order_id=ORDER, saga="orchestration")
    decision = domain.release_stock(Stock({ORDER: held}, {"a": 3}), release())
    assert decision == Decision(
        changes=(Released(ORDER, (Line("a", 2),), "payment refused"),), send=(answer,)
    )
    gone = Reservation(ORDER, "released", "x", (Line("a", 2),))
    assert domain.release_stock(Stock({ORDER: gone}), release()) == Decision(send=(answer,))
    refused = Reservation(ORDER, "refused", "x", ())
    assert domain.release_stock(Stock({ORDER: refused}), release()) == Decision(send=(answer,))


@pytest.mark.parametrize(
    "event",
    [
        PaymentFailed(order_id=ORDER, reason="insufficient funds", saga="choreography"),
        ShipmentFailed(order_id=ORDER, reason="blocked", saga="choreography"),
    ],
)
def test_in_choreography_a_failed_payment_or_shipment_releases(
    event: PaymentFailed | ShipmentFailed,
) -> None:
    held = Reservation(ORDER, "reserved", None, (Line("a", 1),))
    decision = domain.release_stock(Stock({ORDER: held}, {"a": 0}), event)
    assert decision.changes == (Released(ORDER, (Line("a", 1),), event.reason),)
    assert decision.send == (StockReleased(order_id=ORDER, saga="choreography"),)


def test_a_release_before_the_reservation_leaves_a_tombstone_that_refuses_it() -> None:
    decision = domain.release_stock(Stock(), release(reason="saga timed out"))
    assert decision.changes == (TombstoneLeft(ORDER, "saga timed out"),)
    stock = after(Stock(available={"a": 10}), decision.changes)
    command = reserve(item("a", 1))
    assert domain.reserve_stock(stock, command) == Decision(
        send=(failed_reply(command, domain.RELEASED_BEFORE_RESERVED),)
    )


def test_a_line_must_have_a_positive_quantity() -> None:
    with pytest.raises(ValueError, match="positive"):
        domain.merge_lines([Line("a", 0)])


# --- What write stores: one row per order however many changes it had. ---------------


def test_a_batch_that_reserves_and_releases_one_order_writes_its_last_state_and_both_moves() -> (
    None
):
    rows = store.rows_of(
        [
            Reserved(ORDER, (Line("a", 2), Line("b", 1))),
            Released(ORDER, (Line("a", 2), Line("b", 1)), "refused"),
            Refused("other", "unknown SKU: z"),
        ]
    )
    assert rows.reservations == {
        ORDER: ("released", "refused"),
        "other": ("refused", "unknown SKU: z"),
    }
    assert rows.lines == [(ORDER, Line("a", 2)), (ORDER, Line("b", 1))]
    assert rows.deltas == {"a": 0, "b": 0}
    assert [entry.delta for entry in rows.ledger] == [-2, -1, 2, 1]


# --- Properties of any sequence of decisions. -----------------------------------------

skus = st.sampled_from(["a", "b", "c", "d"])
orders = st.sampled_from([f"{n}f1c1a3e-9a1c-4a43-9a49-7b0c5a9e1f10" for n in range(3)])
wanted = st.lists(st.builds(item, skus, st.integers(1, 20)), min_size=1, max_size=4)
stock_levels = st.dictionaries(skus, st.integers(0, 60))
requests = st.lists(
    st.one_of(
        st.builds(lambda o, items: reserve(*items, order_id=o), orders, wanted),
        st.builds(lambda o: release(order_id=o), orders),
    ),
    max_size=12,
)


def decide_all(
    stock: Stock, messages: list[ReserveStock | ReleaseStock]
) -> list[Decision[domain.Change]]:
    decisions = []
    for message in messages:
        if isinstance(message, ReserveStock):
            decision = domain.reserve_stock(stock, message)
        else:
            decision = domain.release_stock(stock, message)
        stock = after(stock, decision.changes)
        decisions.append(decision)
    return decisions


@given(stock_levels, requests)
def test_stock_never_goes_negative_and_held_plus_available_is_what_there_was(
    levels: dict[str, int], messages: list[ReserveStock | ReleaseStock]
) -> None:
    stock = Stock(available=levels)
    changes = [change for d in decide_all(stock, messages) for change in d.changes]
    end = after(stock, changes)
    assert all(units >= 0 for units in end.available.values())
    held: dict[str, int] = {}
    for reservation in end.reservations.values():
        if reservation.status == "reserved":
            for line in reservation.lines:
                held[line.sku] = held.get(line.sku, 0) + line.quantity
    for sku, units in levels.items():
        assert end.available[sku] + held.get(sku, 0) == units
    # And what write would store moves the same units.
    for sku, delta in store.rows_of(changes).deltas.items():
        assert levels[sku] + delta == end.available[sku]


@given(stock_levels, orders, wanted)
def test_reserve_then_release_restores_the_stock(
    levels: dict[str, int], order_id: str, items: list[OrderLine]
) -> None:
    stock = Stock(available=levels)
    decisions = decide_all(stock, [reserve(*items, order_id=order_id), release(order_id=order_id)])
    end = after(stock, [change for d in decisions for change in d.changes])
    assert end.available == levels


@given(stock_levels, requests)
def test_every_request_is_answered_and_a_tombstone_refuses_every_later_reservation(
    levels: dict[str, int], messages: list[ReserveStock | ReleaseStock]
) -> None:
    decisions = decide_all(Stock(available=levels), messages)
    released_first: set[str] = set()
    seen: set[str] = set()
    for message, decision in zip(messages, decisions, strict=True):
        assert len(decision.send) == 1  # every request gets its one answer
        if isinstance(message, ReleaseStock):
            if message.order_id not in seen:
                released_first.add(message.order_id)
            assert isinstance(decision.send[0], StockReleased)
        elif message.order_id in released_first:
            assert decision.changes == ()
            assert isinstance(decision.send[0], StockReservationFailed)
        seen.add(message.order_id)
