"""The shipping's rules, with no servers."""

from __future__ import annotations

import re
import uuid

from hypothesis import given
from hypothesis import strategies as st

from workers.shipping import domain
from workers.shipping.domain import Shipment

SHIPMENT_ID = "7d9c3b8e-0b6a-4d3c-9d1f-2b9f6a1c0e11"
BLOCKED = ["XX"]


def created() -> Shipment:
    return Shipment("o1", SHIPMENT_ID, "TRK-0123456789", "DE", "created", None)


def test_a_shipment_to_an_allowed_country_is_created() -> None:
    assert domain.decide_creation(None, "DE", BLOCKED) == domain.Create("DE")


def test_a_blocked_destination_is_a_refusal_naming_the_country() -> None:
    decision = domain.decide_creation(None, "XX", BLOCKED)
    assert decision == domain.Refuse("destination country XX is blocked", new=True)
    assert domain.decide_creation(None, "FR", ["xx", "fr"]) == domain.Refuse(
        "destination country FR is blocked", new=True
    )


def test_asking_again_answers_the_same_without_a_second_shipment() -> None:
    assert domain.decide_creation(created(), "DE", BLOCKED) == domain.AlreadyCreated(
        SHIPMENT_ID, "TRK-0123456789"
    )
    refused = Shipment("o1", None, None, "XX", "refused", "destination country XX is blocked")
    # Even if the country has been unblocked since: the recorded answer stands.
    assert domain.decide_creation(refused, "XX", []) == domain.Refuse(
        "destination country XX is blocked", new=False
    )


def test_a_cancellation_before_the_creation_leaves_a_tombstone_that_refuses_it() -> None:
    assert domain.decide_cancellation(None) == domain.LeaveTombstone()
    tombstone = Shipment("o1", None, None, None, "cancelled", "payment refunded")
    assert tombstone.is_tombstone
    assert domain.decide_creation(tombstone, "DE", BLOCKED) == domain.Refuse(
        domain.CANCELLED_BEFORE_CREATED, new=False
    )
    assert domain.decide_cancellation(tombstone) == domain.AlreadyCancelled()


def test_a_cancellation_cancels_a_created_shipment_once() -> None:
    assert domain.decide_cancellation(created()) == domain.Cancel()
    cancelled = Shipment("o1", SHIPMENT_ID, "TRK-0123456789", "DE", "cancelled", "x")
    assert not cancelled.is_tombstone
    assert domain.decide_cancellation(cancelled) == domain.AlreadyCancelled()
    # And a creation asked again after it is refused, never shipped a second time.
    assert domain.decide_creation(cancelled, "DE", BLOCKED) == domain.Refuse(
        domain.ALREADY_CANCELLED, new=False
    )


def test_cancelling_a_refused_shipment_has_nothing_to_cancel() -> None:
    refused = Shipment("o1", None, None, "XX", "refused", "blocked")
    assert domain.decide_cancellation(refused) == domain.NothingShipped()


def test_a_tracking_number_is_derived_from_the_shipment_id() -> None:
    assert domain.tracking_number(SHIPMENT_ID) == domain.tracking_number(SHIPMENT_ID.upper())
    assert domain.tracking_number(str(uuid.UUID(int=0))) == "TRK-0000000000"
    assert domain.tracking_number(str(uuid.UUID(int=35))) == "TRK-000000000Z"


@given(st.uuids())
def test_a_tracking_number_is_trk_and_ten_upper_case_alphanumerics(shipment_id: uuid.UUID) -> None:
    number = domain.tracking_number(str(shipment_id))
    assert re.fullmatch(r"TRK-[0-9A-Z]{10}", number)
    assert number == domain.tracking_number(str(shipment_id))


countries = st.sampled_from(["DE", "FR", "XX", "YY", "US"])


@given(countries, st.lists(countries, max_size=3))
def test_a_shipment_is_created_exactly_when_its_country_is_not_blocked(
    country: str, blocked: list[str]
) -> None:
    decision = domain.decide_creation(None, country, blocked)
    if country in blocked:
        assert isinstance(decision, domain.Refuse) and country in decision.reason
    else:
        assert decision == domain.Create(country)
