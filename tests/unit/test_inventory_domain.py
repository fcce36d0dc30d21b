"""The inventory's rules, with no servers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.inventory import domain
from workers.inventory.domain import Line, Reservation


def reserved(*lines: Line) -> Reservation:
    return Reservation("o1", "reserved", None, lines)


def test_a_new_order_with_enough_stock_is_reserved_with_lines_merged_by_sku() -> None:
    decision = domain.decide_reservation(
        None, {"a": 5, "b": 1}, [Line("b", 1), Line("a", 2), Line("a", 3)]
    )
    assert decision == domain.Reserve((Line("a", 5), Line("b", 1)))


def test_out_of_stock_refuses_all_lines_and_names_the_short_ones() -> None:
    decision = domain.decide_reservation(None, {"a": 5, "b": 0}, [Line("a", 1), Line("b", 2)])
    assert isinstance(decision, domain.Refuse) and decision.new
    assert decision.reason == "out of stock: b (wanted 2, available 0)"


def test_an_unknown_sku_is_a_refusal() -> None:
    decision = domain.decide_reservation(None, {"a": 5}, [Line("a", 1), Line("zz", 1)])
    assert decision == domain.Refuse("unknown SKU: zz", new=True)


def test_asking_again_answers_the_same_without_a_new_effect() -> None:
    existing = reserved(Line("a", 2))
    assert domain.decide_reservation(existing, {}, [Line("a", 2)]) == domain.AlreadyReserved(
        (Line("a", 2),)
    )
    refused = Reservation("o1", "refused", "out of stock: a", ())
    assert domain.decide_reservation(refused, {"a": 99}, [Line("a", 1)]) == domain.Refuse(
        "out of stock: a", new=False
    )


def test_a_release_before_the_reservation_leaves_a_tombstone_that_refuses_it() -> None:
    assert domain.decide_release(None) == domain.LeaveTombstone()
    tombstone = Reservation("o1", "released", "payment failed", ())
    decision = domain.decide_reservation(tombstone, {"a": 10}, [Line("a", 1)])
    assert decision == domain.Refuse(domain.RELEASED_BEFORE_RESERVED, new=False)


def test_release_gives_back_what_was_reserved_once() -> None:
    assert domain.decide_release(reserved(Line("a", 2))) == domain.Release((Line("a", 2),))
    assert domain.decide_release(Reservation("o1", "released", "x", (Line("a", 2),))) == (
        domain.AlreadyReleased()
    )
    assert domain.decide_release(Reservation("o1", "refused", "x", ())) == domain.NothingHeld()


def test_a_line_must_have_a_positive_quantity() -> None:
    with pytest.raises(ValueError, match="positive"):
        domain.merge_lines([Line("a", 0)])


skus = st.sampled_from(["a", "b", "c", "d"])
lines = st.lists(st.builds(Line, skus, st.integers(1, 20)), min_size=1, max_size=6)
stock = st.dictionaries(skus, st.integers(0, 60))


@given(stock, lines)
def test_a_reservation_is_all_or_nothing_and_never_takes_more_than_available(
    available: dict[str, int], wanted: list[Line]
) -> None:
    decision = domain.decide_reservation(None, available, wanted)
    totals: dict[str, int] = {}
    for line in wanted:
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    fits = all(sku in available and available[sku] >= n for sku, n in totals.items())
    if fits:
        assert decision == domain.Reserve(tuple(Line(s, n) for s, n in sorted(totals.items())))
    else:
        assert isinstance(decision, domain.Refuse)


@given(lines)
def test_releasing_a_reservation_gives_back_exactly_what_it_took(wanted: list[Line]) -> None:
    decision = domain.decide_reservation(None, {"a": 999, "b": 999, "c": 999, "d": 999}, wanted)
    assert isinstance(decision, domain.Reserve)
    release = domain.decide_release(reserved(*decision.lines))
    assert release == domain.Release(decision.lines)
