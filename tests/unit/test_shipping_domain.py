"""The shipping's rules, with no servers: each decision and its exact replies, as values;
then properties of any sequence of them."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    CancelShipment,
    CreateShipment,
    Money,
    OrderLine,
    PaymentCompleted,
    SagaStyle,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentFailed,
)
from workers.runtime.decision import Decision, after
from workers.shipping import domain, store
from workers.shipping.domain import (
    Cancelled,
    Created,
    Refused,
    Shipment,
    Shipments,
    TombstoneLeft,
)
from workers.shipping.settings import ShippingSettings

ORDER = "6f1c1a3e-9a1c-4a43-9a49-7b0c5a9e1f10"
SHIPMENT_ID = domain.shipment_id_for(ORDER)
TRACKING = domain.tracking_number(SHIPMENT_ID)
# A shipment id from before ids were derived (a random one): still what the order answers.
OLD_SHIPMENT_ID = "7d9c3b8e-0b6a-4d3c-9d1f-2b9f6a1c0e11"
SETTINGS = ShippingSettings(blocked_countries=["XX"])
ITEMS = [OrderLine(sku="sku-a", quantity=1, unit_price=Money.of("4.00", "EUR"))]
PAYMENT_ID = "0b6a7d9c-3b8e-4d3c-9d1f-2b9f6a1c0e11"


def create(
    country: str = "DE", *, order_id: str = ORDER, saga: SagaStyle = "orchestration"
) -> CreateShipment:
    return CreateShipment(order_id=order_id, country=country, items=ITEMS, saga=saga)


def cancel(order_id: str = ORDER, reason: str = "the saga compensates") -> CancelShipment:
    return CancelShipment(order_id=order_id, reason=reason, saga="orchestration")


def created_reply(shipment_id: str = SHIPMENT_ID, tracking: str = TRACKING) -> ShipmentCreated:
    return ShipmentCreated(
        order_id=ORDER, shipment_id=shipment_id, tracking_number=tracking, saga="orchestration"
    )


def failed(reason: str) -> ShipmentFailed:
    return ShipmentFailed(order_id=ORDER, reason=reason, saga="orchestration")


CANCELLED = ShipmentCancelled(order_id=ORDER, saga="orchestration")


def shipments(*recorded: Shipment) -> Shipments:
    return Shipments({shipment.order_id: shipment for shipment in recorded})


def created() -> Shipment:
    return Shipment(ORDER, SHIPMENT_ID, TRACKING, "DE", "created", None)


# --- Creating: the decision and its reply, for every case. -----------------------------


def test_a_shipment_to_an_allowed_country_is_created_under_the_order_s_shipment_id() -> None:
    decision = domain.create_shipment(Shipments(), create("DE"), settings=SETTINGS)
    assert decision == Decision(
        changes=(Created(ORDER, SHIPMENT_ID, TRACKING, "DE"),), send=(created_reply(),)
    )


@pytest.mark.parametrize(
    ("country", "blocked"), [("XX", ["XX"]), ("FR", ["xx", "fr"]), ("DE", ["DE", "FR"])]
)
def test_a_blocked_destination_is_a_refusal_event_naming_the_country(
    country: str, blocked: list[str]
) -> None:
    settings = ShippingSettings(blocked_countries=blocked)
    decision = domain.create_shipment(Shipments(), create(country), settings=settings)
    reason = f"destination country {country} is blocked"
    assert decision == Decision(changes=(Refused(ORDER, country, reason),), send=(failed(reason),))


@pytest.mark.parametrize(
    ("existing", "reply"),
    [
        (created(), created_reply()),
        # Created under a random id of old: the same answer.
        (
            Shipment(ORDER, OLD_SHIPMENT_ID, "TRK-0123456789", "DE", "created", None),
            created_reply(OLD_SHIPMENT_ID, "TRK-0123456789"),
        ),
        # Even if the country has been unblocked since: the recorded answer stands.
        (
            Shipment(ORDER, None, None, "XX", "refused", "destination country XX is blocked"),
            failed("destination country XX is blocked"),
        ),
        (
            Shipment(ORDER, SHIPMENT_ID, TRACKING, "DE", "cancelled", "x"),
            failed(domain.ALREADY_CANCELLED),
        ),
        (
            Shipment(ORDER, None, None, None, "cancelled", "payment refunded"),
            failed(domain.CANCELLED_BEFORE_CREATED),
        ),
    ],
)
def test_asking_again_answers_as_recorded_and_changes_nothing(
    existing: Shipment, reply: ShipmentCreated | ShipmentFailed
) -> None:
    unblocked = ShippingSettings(blocked_countries=[])
    decision = domain.create_shipment(shipments(existing), create("DE"), settings=unblocked)
    assert decision == Decision(send=(reply,))


def test_in_choreography_payment_completed_ships_and_passes_the_payment_id_on() -> None:
    payment = PaymentCompleted(
        order_id=ORDER,
        payment_id=PAYMENT_ID,
        amount=Money.of("4.00", "EUR"),
        saga="choreography",
        country="FR",
        items=ITEMS,
    )
    decision = domain.create_shipment(Shipments(), payment, settings=SETTINGS)
    assert decision == Decision(
        changes=(Created(ORDER, SHIPMENT_ID, TRACKING, "FR"),),
        send=(
            ShipmentCreated(
                order_id=ORDER,
                shipment_id=SHIPMENT_ID,
                tracking_number=TRACKING,
                saga="choreography",
                payment_id=PAYMENT_ID,
            ),
        ),
    )


# --- Cancelling. -----------------------------------------------------------------------


def test_a_cancellation_cancels_a_created_shipment_once_and_it_keeps_its_ids() -> None:
    decision = domain.cancel_shipment(shipments(created()), cancel())
    assert decision == Decision(
        changes=(Cancelled(ORDER, SHIPMENT_ID, TRACKING, "DE", "the saga compensates"),),
        send=(CANCELLED,),
    )
    gone = after(shipments(created()), decision.changes)
    assert gone.by_order[ORDER] == Shipment(
        ORDER, SHIPMENT_ID, TRACKING, "DE", "cancelled", "the saga compensates"
    )
    assert not gone.by_order[ORDER].is_tombstone
    assert domain.cancel_shipment(gone, cancel()) == Decision(send=(CANCELLED,))
    # And a creation asked again after it is refused, never shipped a second time.
    assert domain.create_shipment(gone, create(), settings=SETTINGS) == Decision(
        send=(failed(domain.ALREADY_CANCELLED),)
    )


def test_a_cancellation_before_the_creation_leaves_a_tombstone_that_refuses_it() -> None:
    decision = domain.cancel_shipment(Shipments(), cancel(reason="payment refunded"))
    assert decision == Decision(
        changes=(TombstoneLeft(ORDER, "payment refunded"),), send=(CANCELLED,)
    )
    tombstone = after(Shipments(), decision.changes)
    assert tombstone.by_order[ORDER].is_tombstone
    assert domain.create_shipment(tombstone, create(), settings=SETTINGS) == Decision(
        send=(failed(domain.CANCELLED_BEFORE_CREATED),)
    )
    assert domain.cancel_shipment(tombstone, cancel()) == Decision(send=(CANCELLED,))


def test_cancelling_a_refused_shipment_answers_cancelled_and_changes_nothing() -> None:
    refused = Shipment(ORDER, None, None, "XX", "refused", "blocked")
    assert domain.cancel_shipment(shipments(refused), cancel()) == Decision(send=(CANCELLED,))


# --- Ids and tracking numbers. ---------------------------------------------------------


def test_a_shipment_id_is_derived_from_the_order_id_alone() -> None:
    assert domain.shipment_id_for(ORDER) != domain.shipment_id_for(ORDER.replace("6", "7"))
    # The namespace never changes: an order keeps its shipment and tracking number.
    assert domain.shipment_id_for(ORDER) == "2fd6ff9f-2379-5454-be5f-70f0dd773455"
    assert TRACKING == "TRK-A419D46DZP"


def test_a_tracking_number_is_derived_from_the_shipment_id() -> None:
    assert domain.tracking_number(SHIPMENT_ID) == domain.tracking_number(SHIPMENT_ID.upper())
    assert domain.tracking_number(str(uuid.UUID(int=0))) == "TRK-0000000000"
    assert domain.tracking_number(str(uuid.UUID(int=35))) == "TRK-000000000Z"


@given(st.uuids())
def test_a_tracking_number_is_trk_and_ten_upper_case_alphanumerics(shipment_id: uuid.UUID) -> None:
    number = domain.tracking_number(str(shipment_id))
    assert re.fullmatch(r"TRK-[0-9A-Z]{10}", number)
    assert number == domain.tracking_number(str(shipment_id))


# --- What write stores: one row per order however many changes it had. ---------------


def test_a_batch_that_creates_and_cancels_one_order_writes_its_last_state() -> None:
    rows = store.rows_of(
        [
            Created(ORDER, SHIPMENT_ID, TRACKING, "DE"),
            Cancelled(ORDER, SHIPMENT_ID, TRACKING, "DE", "compensated"),
            Refused("refused", "XX", "blocked"),
            TombstoneLeft("tomb", "compensated"),
        ]
    )
    assert rows == [
        Shipment(ORDER, SHIPMENT_ID, TRACKING, "DE", "cancelled", "compensated"),
        Shipment("refused", None, None, "XX", "refused", "blocked"),
        Shipment("tomb", None, None, None, "cancelled", "compensated"),
    ]


# --- Properties of any sequence of decisions. -----------------------------------------

ORDERS = [f"{n}f1c1a3e-9a1c-4a43-9a49-7b0c5a9e1f10" for n in range(3)]
COUNTRIES = ["DE", "FR", "XX", "US"]
orders = st.sampled_from(ORDERS)
# Each order goes to one country, whoever asks and however often.
destinations = st.fixed_dictionaries({order_id: st.sampled_from(COUNTRIES) for order_id in ORDERS})
blocked_countries = st.lists(st.sampled_from(COUNTRIES), max_size=3)
# A request: (True, order) to create its shipment, (False, order) to cancel it.
requests = st.lists(st.tuples(st.booleans(), orders), max_size=12)


def decide_all(
    destination: dict[str, str], blocked: list[str], asked: list[tuple[bool, str]]
) -> list[tuple[CreateShipment | CancelShipment, Decision[domain.Change]]]:
    """Each request decided on the state the decisions before it left, as in a batch."""
    settings = ShippingSettings(blocked_countries=blocked)
    state = Shipments()
    decided: list[tuple[CreateShipment | CancelShipment, Decision[domain.Change]]] = []
    for creates, order_id in asked:
        if creates:
            request = create(destination[order_id], order_id=order_id)
            decided.append((request, domain.create_shipment(state, request, settings=settings)))
        else:
            command = cancel(order_id)
            decided.append((command, domain.cancel_shipment(state, command)))
        state = after(state, decided[-1][1].changes)
    return decided


@given(destinations, blocked_countries, requests)
def test_an_order_is_shipped_at_most_once_and_always_under_the_same_ids(
    destination: dict[str, str], blocked: list[str], asked: list[tuple[bool, str]]
) -> None:
    decided = decide_all(destination, blocked, asked)
    created = [c.order_id for _, d in decided for c in d.changes if isinstance(c, Created)]
    assert len(created) == len(set(created))
    for _, decision in decided:
        for reply in decision.send:
            if isinstance(reply, ShipmentCreated):
                assert reply.shipment_id == domain.shipment_id_for(reply.order_id)
                assert reply.tracking_number == domain.tracking_number(reply.shipment_id)


@given(destinations, blocked_countries, requests)
def test_a_blocked_country_is_always_refused(
    destination: dict[str, str], blocked: list[str], asked: list[tuple[bool, str]]
) -> None:
    for message, decision in decide_all(destination, blocked, asked):
        if isinstance(message, CreateShipment) and message.country in blocked:
            assert not any(isinstance(change, Created) for change in decision.changes)
            assert isinstance(decision.send[0], ShipmentFailed)


@given(destinations, blocked_countries, requests)
def test_every_request_is_answered_once_and_a_tombstone_refuses_every_later_creation(
    destination: dict[str, str], blocked: list[str], asked: list[tuple[bool, str]]
) -> None:
    cancelled_first: set[str] = set()
    seen: set[str] = set()
    for message, decision in decide_all(destination, blocked, asked):
        assert len(decision.send) == 1  # every request gets its one answer
        (reply,) = decision.send
        if isinstance(message, CancelShipment):
            assert reply == ShipmentCancelled(order_id=message.order_id, saga=message.saga)
            if message.order_id not in seen:
                cancelled_first.add(message.order_id)
                assert decision.changes == (TombstoneLeft(message.order_id, message.reason),)
        elif message.order_id in cancelled_first:
            assert decision == Decision(
                send=(
                    ShipmentFailed(
                        order_id=message.order_id,
                        reason=domain.CANCELLED_BEFORE_CREATED,
                        saga=message.saga,
                    ),
                )
            )
        else:
            assert isinstance(reply, ShipmentCreated | ShipmentFailed)
        seen.add(message.order_id)
