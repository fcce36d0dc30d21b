"""The order's rules, with no servers: folding events, each decision with its exact changes
and the exact messages it sends, snapshots of the aggregate, the replay's pages; then
properties of any sequence of decisions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    ConfirmOrder,
    Envelope,
    Message,
    Money,
    OrderConfirmed,
    OrderEventsReplayed,
    OrderLine,
    OrderLineV1,
    OrderPlaced,
    OrderPlacedV1,
    OrderRejected,
    PaymentFailed,
    PlaceOrder,
    Received,
    RejectOrder,
    ReplayOrderEvents,
    Send,
    ShipmentCreated,
    ShipmentFailed,
    StockReservationFailed,
    registry,
)
from contracts.envelope import REPLAY_EXPECTED_HEADER, REPLAY_ID_HEADER, STREAM_VERSION_HEADER
from db.event_store import Page, PageRequest, Snapshot, StoredEvent
from workers.order import domain, store
from workers.order.domain import (
    Appended,
    Order,
    Orders,
    ReplayPages,
    SnapshotTaken,
    Status,
    Stream,
)
from workers.order.settings import OrderSettings
from workers.runtime.decision import Decision, after
from workers.runtime.errors import PermanentError

ORDER_ID = "0b0e4b8c-51a4-4d4c-9a50-4a3a1f1e9f11"
OTHER_ORDER_ID = "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f"
CAUSE = "5e0f3c2a-1b4d-4e6f-8a9b-0c1d2e3f4a5b"  # the message id of the message decided on
CORRELATION = "saga-correlation"
SHIPMENT = "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
PAYMENT = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
NOW = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
AT = datetime(2026, 3, 1, 9, 30, 15, tzinfo=UTC)  # NOW in whole seconds, as envelopes have it
# Every field given: unit tests read no FLEET_ setting.
SETTINGS = OrderSettings(snapshot_every=20, replay_page_size=3)


def settings(*, snapshot_every: int = 20, replay_page_size: int = 3) -> OrderSettings:
    return OrderSettings(snapshot_every=snapshot_every, replay_page_size=replay_page_size)


def received(message_id: str = CAUSE, correlation_id: str = CORRELATION) -> Received:
    envelope = Envelope(
        message_id=message_id,
        type="order.confirm_order",
        version=2,
        correlation_id=correlation_id,
        causation_id=None,
        occurred_at=NOW,
        producer="test",
    )
    return Received(envelope, {})


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


def placed_event(order_id: str = ORDER_ID, saga: Any = "choreography") -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id="customer-1",
        items=[line("a", 2, "1.25"), line("b", 1, "10.00")],
        total=Money.of("12.50", "EUR"),
        country="DE",
        saga=saga,
    )


def order_of(*events: Message) -> Order:
    order = domain.fold(None, events)
    assert order is not None
    return order


def orders_with(*events: Message, order_id: str = ORDER_ID) -> Orders:
    """The batch's state with one order, at the version of its last event."""
    return Orders(NOW, {order_id: Stream(order_of(*events), len(events))})


def appended(
    event: domain.OrderEvent, version: int, *, correlation_id: str = CORRELATION
) -> Appended:
    message_id = domain.event_message_id(event.order_id, version)
    return Appended(event.order_id, version, event, message_id, correlation_id, CAUSE, AT)


def sent_as_stored(change: Appended) -> Send:
    return Send(
        change.event,
        message_id=change.message_id,
        correlation_id=change.correlation_id,
        headers={STREAM_VERSION_HEADER: change.version},
        occurred_at=change.occurred_at,
    )


# --- Placing. ----------------------------------------------------------------------------


def test_placing_a_new_order_appends_and_sends_order_placed_v2_in_its_own_correlation() -> None:
    decision = domain.place_order(
        Orders(NOW), place_command(order_id=ORDER_ID), settings=SETTINGS, received=received()
    )
    # order.placed starts the order's correlation: the order id, not the command's.
    change = appended(placed_event(), 1, correlation_id=ORDER_ID)
    assert decision == Decision(
        changes=(change,),
        send=(sent_as_stored(change),),
        note=f"order {ORDER_ID}: order.placed (version 1)",
    )
    assert placed_event().VERSION == 2


def test_the_order_id_is_the_client_s_or_derived_from_the_idempotency_key() -> None:
    assert domain.order_id_for(place_command(order_id=ORDER_ID)) == ORDER_ID
    derived = domain.order_id_for(place_command("key-7"))
    assert derived == str(uuid.uuid5(domain.ORDER_NAMESPACE, "key-7"))
    assert domain.order_id_for(place_command("key-7", customer_id="someone else")) == derived
    assert domain.order_id_for(place_command("key-8")) != derived
    assert domain.order_id_of(place_command("key-7")) == derived
    assert domain.order_id_of(ConfirmOrder(order_id=ORDER_ID)) == ORDER_ID


def test_an_event_s_message_id_is_its_stream_version_s() -> None:
    first = domain.event_message_id(ORDER_ID, 1)
    assert first == str(uuid.uuid5(domain.EVENT_NAMESPACE, f"{ORDER_ID}:1"))
    assert first == domain.event_message_id(ORDER_ID, 1)
    assert first != domain.event_message_id(ORDER_ID, 2)
    assert first != domain.event_message_id("another order", 1)


# --- Decisions that change nothing: the exact note. ------------------------------------

CONFIRMED = OrderConfirmed(order_id=ORDER_ID, saga="choreography")
REJECTED = OrderRejected(order_id=ORDER_ID, reason="out of stock", saga="choreography")
ORCHESTRATED = placed_event(saga="orchestration")


@pytest.mark.parametrize(
    ("stream", "request_", "note"),
    [
        (
            [placed_event()],
            place_command(order_id=ORDER_ID),
            f"order {ORDER_ID}: already placed",
        ),
        (
            [placed_event(), CONFIRMED],
            place_command(order_id=ORDER_ID),
            f"order {ORDER_ID}: already placed",
        ),
        (
            [placed_event()],
            place_command(order_id=ORDER_ID, country="FR"),
            f"order {ORDER_ID} was placed before with other contents; the first one stands",
        ),
        (
            [placed_event(), CONFIRMED],
            ConfirmOrder(order_id=ORDER_ID),
            f"order {ORDER_ID}: already confirmed",
        ),
        (
            [placed_event(), REJECTED],
            ConfirmOrder(order_id=ORDER_ID),
            f"order {ORDER_ID} is REJECTED (out of stock): a late confirmation cannot reopen it",
        ),
        (
            [placed_event(), REJECTED],
            RejectOrder(order_id=ORDER_ID, reason="again"),
            f"order {ORDER_ID}: already rejected",
        ),
        (
            [placed_event(), CONFIRMED],
            RejectOrder(order_id=ORDER_ID, reason="too late"),
            f"order {ORDER_ID} is CONFIRMED: a late rejection (too late) cannot reopen it",
        ),
        (
            [ORCHESTRATED],
            ShipmentCreated(
                order_id=ORDER_ID, shipment_id=SHIPMENT, tracking_number="TN", saga="choreography"
            ),
            f"order {ORDER_ID}: shipment.created says choreography but the order was placed"
            " for orchestration; ignored",
        ),
        (
            [ORCHESTRATED],
            PaymentFailed(order_id=ORDER_ID, reason="insufficient funds", saga="choreography"),
            f"order {ORDER_ID}: payment.failed says choreography but the order was placed"
            " for orchestration; ignored",
        ),
    ],
)
def test_repeats_late_replies_and_another_saga_s_events_change_nothing(
    stream: list[Message], request_: domain.OrderRequest, note: str
) -> None:
    decision = decide(orders_with(*stream), request_, SETTINGS)
    assert decision == Decision(note=note)


def decide(
    orders: Orders,
    request: domain.OrderRequest,
    section: OrderSettings,
    cause: Received | None = None,
) -> Decision[domain.Change]:
    cause = cause or received()
    if isinstance(request, PlaceOrder):
        return domain.place_order(orders, request, settings=section, received=cause)
    if isinstance(request, ConfirmOrder | ShipmentCreated):
        return domain.confirm_order(orders, request, settings=section, received=cause)
    return domain.reject_order(orders, request, settings=section, received=cause)


# --- Confirming and rejecting a pending order: the exact event, stored and sent. -------


@pytest.mark.parametrize(
    ("saga", "request_", "event"),
    [
        (
            "orchestration",
            ConfirmOrder(order_id=ORDER_ID, payment_id=PAYMENT, tracking_number="TN-9"),
            OrderConfirmed(
                order_id=ORDER_ID,
                payment_id=PAYMENT,
                tracking_number="TN-9",
                saga="orchestration",
            ),
        ),
        (
            "choreography",
            ShipmentCreated(
                order_id=ORDER_ID,
                shipment_id=SHIPMENT,
                tracking_number="TN-1",
                saga="choreography",
                payment_id=PAYMENT,
            ),
            # The references the shipment reported stay in the stream, for read models.
            OrderConfirmed(
                order_id=ORDER_ID,
                payment_id=PAYMENT,
                tracking_number="TN-1",
                saga="choreography",
            ),
        ),
        (
            "orchestration",
            RejectOrder(order_id=ORDER_ID, reason="no"),
            OrderRejected(order_id=ORDER_ID, reason="no", saga="orchestration"),
        ),
        (
            "choreography",
            StockReservationFailed(
                order_id=ORDER_ID, reason="out of stock: a", saga="choreography"
            ),
            OrderRejected(order_id=ORDER_ID, reason="out of stock: a", saga="choreography"),
        ),
        (
            "choreography",
            PaymentFailed(order_id=ORDER_ID, reason="insufficient funds", saga="choreography"),
            OrderRejected(order_id=ORDER_ID, reason="insufficient funds", saga="choreography"),
        ),
        (
            "choreography",
            ShipmentFailed(order_id=ORDER_ID, reason="blocked country", saga="choreography"),
            OrderRejected(order_id=ORDER_ID, reason="blocked country", saga="choreography"),
        ),
    ],
)
def test_a_pending_order_is_confirmed_or_rejected_at_its_next_version(
    saga: Any, request_: domain.OrderRequest, event: domain.OrderEvent
) -> None:
    decision = decide(orders_with(placed_event(saga=saga)), request_, SETTINGS)
    # In the correlation of the message decided on (the saga's), caused by it.
    change = appended(event, 2)
    assert decision == Decision(
        changes=(change,),
        send=(sent_as_stored(change),),
        note=f"order {ORDER_ID}: {event.TYPE} (version 2)",
    )


@pytest.mark.parametrize(
    "request_",
    [
        ConfirmOrder(order_id=ORDER_ID),
        ShipmentCreated(
            order_id=ORDER_ID, shipment_id=SHIPMENT, tracking_number="TN", saga="choreography"
        ),
        RejectOrder(order_id=ORDER_ID, reason="x"),
        PaymentFailed(order_id=ORDER_ID, reason="x", saga="choreography"),
    ],
)
def test_an_order_that_was_never_placed_cannot_be_confirmed_or_rejected(
    request_: domain.OrderRequest,
) -> None:
    with pytest.raises(PermanentError, match=f"order {ORDER_ID} was never placed"):
        decide(Orders(NOW), request_, SETTINGS)


# --- Snapshots as changes. ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "snapshot_at"),
    [(1, [1, 2]), (2, [2]), (3, []), (0, [])],
)
def test_a_snapshot_is_taken_whenever_the_stream_passes_a_multiple(
    every: int, snapshot_at: list[int]
) -> None:
    section = settings(snapshot_every=every)
    place = decide(Orders(NOW), place_command(order_id=ORDER_ID), section)
    confirm = decide(after(Orders(NOW), place.changes), ConfirmOrder(order_id=ORDER_ID), section)
    snapshots = [
        change for change in (*place.changes, *confirm.changes) if isinstance(change, SnapshotTaken)
    ]
    placed = order_of(placed_event())
    confirmed = order_of(placed_event(), CONFIRMED)
    expected = {1: SnapshotTaken(ORDER_ID, 1, placed), 2: SnapshotTaken(ORDER_ID, 2, confirmed)}
    assert snapshots == [expected[version] for version in snapshot_at]
    assert len(confirm.send) == 1  # a snapshot is not sent


# --- A batch: each decision sees the changes of those before it. ------------------------


def test_a_batch_decides_the_second_request_for_an_order_on_the_first_s_outcome() -> None:
    orders = Orders(NOW)
    first = decide(orders, place_command("key-1"), SETTINGS)
    orders = after(orders, first.changes)
    again = decide(orders, place_command("key-1"), SETTINGS)
    assert again.changes == () and again.send == ()
    order_id = domain.order_id_for(place_command("key-1"))
    reject = decide(orders, RejectOrder(order_id=order_id, reason="no"), SETTINGS)
    orders = after(orders, reject.changes)
    assert [change.version for change in reject.changes if isinstance(change, Appended)] == [2]
    late = decide(orders, ConfirmOrder(order_id=order_id), SETTINGS)
    assert late.changes == () and late.note is not None and "REJECTED (no)" in late.note
    assert orders.stream(order_id) == Stream(
        order_of(placed_event(order_id), OrderRejected(order_id=order_id, reason="no")), 2
    )


def test_write_stores_every_event_with_its_metadata_and_each_order_s_last_snapshot() -> None:
    placed, confirmed = appended(placed_event(), 1), appended(CONFIRMED, 2)
    other = appended(placed_event(OTHER_ORDER_ID), 1)
    first = SnapshotTaken(ORDER_ID, 1, order_of(placed_event()))
    last = SnapshotTaken(ORDER_ID, 2, order_of(placed_event(), CONFIRMED))
    rows = store.rows_of([placed, first, other, confirmed, last])
    assert [(e.stream_id, e.version, e.message) for e in rows.events] == [
        (ORDER_ID, 1, placed.event),
        (OTHER_ORDER_ID, 1, other.event),
        (ORDER_ID, 2, confirmed.event),
    ]
    assert rows.events[0].metadata == {
        "message_id": placed.message_id,
        "correlation_id": CORRELATION,
        "causation_id": CAUSE,
        "occurred_at": "2026-03-01T09:30:15+00:00",
    }
    assert rows.snapshots == {
        ORDER_ID: Snapshot(ORDER_ID, 2, domain.SCHEMA_VERSION, domain.to_snapshot(last.order))
    }


# --- Folding events. ---------------------------------------------------------------------


def test_an_upcast_v1_order_placed_folds_into_an_order_in_eur() -> None:
    v1 = OrderPlacedV1(
        order_id=ORDER_ID,
        customer_id="c",
        items=[OrderLineV1(sku="a", quantity=3, unit_price=4.1)],
        total=12.3,
        country="FR",
    )
    order = order_of(registry.decode("order.placed", 1, registry.encode(v1)))
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
    with pytest.raises(domain.CorruptStream):
        domain.fold(None, [placed_event() if event == "placed" else event for event in events])


# --- Snapshots of the aggregate. -------------------------------------------------------


def test_an_order_survives_its_snapshot() -> None:
    for state in (order_of(placed_event()), order_of(placed_event(), REJECTED)):
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
    state = domain.to_snapshot(order_of(placed_event()))
    damage(state)
    with pytest.raises((KeyError, TypeError, ValueError)):
        domain.from_snapshot(state)


# --- Replaying the store: one page, as first sent, then the next page or the end. ------

REPLAY_ID = "9d5e4c1b-2a3f-4b6c-8d7e-1f0a2b3c4d5e"
RECORDED = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def stored(
    position: int, *, version: int = 1, metadata: dict[str, Any] | None = None
) -> StoredEvent:
    order_id = str(uuid.UUID(int=position))
    return StoredEvent(
        stream_id=order_id,
        version=version,
        message=OrderConfirmed(order_id=order_id),
        type="order.confirmed",
        contract_version=3,
        metadata=metadata if metadata is not None else {},
        recorded_at=RECORDED,
        global_position=position,
    )


def replay(**fields: Any) -> ReplayOrderEvents:
    return ReplayOrderEvents(replay_id=REPLAY_ID, target="order_view", **fields)


def replayed(event: StoredEvent, expected: int, correlation_id: str, at: datetime) -> Send:
    return Send(
        event.message,
        message_id=str(uuid.uuid5(uuid.UUID(REPLAY_ID), f"{event.stream_id}:{event.version}")),
        correlation_id=correlation_id,
        occurred_at=at,
        headers={
            STREAM_VERSION_HEADER: event.version,
            REPLAY_ID_HEADER: REPLAY_ID,
            REPLAY_EXPECTED_HEADER: expected,
        },
        replay_to="order_view",
    )


def test_a_full_first_page_sends_its_events_as_first_sent_then_asks_for_the_next() -> None:
    first_sent = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    events = [
        stored(
            4, version=2, metadata={"correlation_id": "c-4", "occurred_at": first_sent.isoformat()}
        ),
        stored(5),  # stored before metadata was kept: its stream and its recording time
        stored(7, metadata={"occurred_at": "not a time"}),
    ]
    command = replay()
    request = domain.page_request(command)
    assert request == PageRequest(after_position=0, up_to_position=None, count=True)
    pages = ReplayPages({request: Page(events, up_to_position=9, count=6)})
    decision = domain.replay_events(pages, command, settings=SETTINGS)
    assert decision == Decision(
        send=(
            replayed(events[0], 6, "c-4", first_sent),
            replayed(events[1], 6, events[1].stream_id, RECORDED),
            replayed(events[2], 6, events[2].stream_id, RECORDED),
            replay(after_position=7, up_to_position=9, expected=6, sent=3),
        ),
        note=f"replay {REPLAY_ID} to order_view: sent 3 of 6 event(s)",
    )


@pytest.mark.parametrize(
    ("positions", "up_to"),
    [([8, 9], 9), ([7, 8, 9], 9), ([], 9)],  # short, full to the end, nothing left
)
def test_the_last_page_says_the_replay_is_over_to_the_read_model(
    positions: list[int], up_to: int
) -> None:
    command = replay(after_position=7, up_to_position=up_to, expected=6, sent=3)
    request = domain.page_request(command)
    assert request == PageRequest(after_position=7, up_to_position=9, count=False)
    events = [stored(position) for position in positions]
    pages = ReplayPages({request: Page(events, up_to_position=up_to, count=None)})
    decision = domain.replay_events(pages, command, settings=SETTINGS)
    sent = 3 + len(events)
    done = OrderEventsReplayed(replay_id=REPLAY_ID, target="order_view", events=sent)
    assert decision == Decision(
        send=(
            *(replayed(event, 6, event.stream_id, RECORDED) for event in events),
            Send(done, replay_to="order_view"),
        ),
        note=f"replay {REPLAY_ID} to order_view: sent {sent} of 6 event(s); done",
    )


# --- Properties of any sequence of requests for one order. ------------------------------

reasons = st.text(min_size=1, max_size=20)
order_requests = st.lists(
    st.one_of(
        st.builds(
            lambda country: place_command("key-p", country=country), st.sampled_from(["DE", "FR"])
        ),
        st.just(ConfirmOrder(order_id=domain.order_id_for(place_command("key-p")))),
        st.builds(
            lambda reason: RejectOrder(
                order_id=domain.order_id_for(place_command("key-p")), reason=reason
            ),
            reasons,
        ),
    ),
    max_size=12,
)
snapshot_every = st.integers(0, 4)


@given(order_requests, snapshot_every)
def test_any_sequence_of_requests_places_once_ends_once_and_numbers_its_stream_without_gaps(
    requests: list[domain.OrderRequest], every: int
) -> None:
    section = settings(snapshot_every=every)
    order_id = domain.order_id_for(place_command("key-p"))
    orders = Orders(NOW)
    stored_events: list[Appended] = []
    final: Order | None = None
    for n, request in enumerate(requests):
        cause = received(message_id=str(uuid.UUID(int=n + 1)))
        try:
            decision = decide(orders, request, section, cause)
        except PermanentError:
            # Only a confirm or a reject before the order was placed can never succeed.
            assert not isinstance(request, PlaceOrder)
            assert orders.stream(order_id).order is None
            continue
        orders = after(orders, decision.changes)
        appended_now = [c for c in decision.changes if isinstance(c, Appended)]
        stored_events += appended_now
        # What is sent is what is stored: same event, id, version, correlation and time;
        # caused by the message decided on.
        assert decision.send == tuple(sent_as_stored(change) for change in appended_now)
        assert all(change.causation_id == cause.envelope.message_id for change in appended_now)
        # A snapshot is the order as it stands, at a multiple of snapshot_every.
        for change in decision.changes:
            if isinstance(change, SnapshotTaken):
                assert change.version % every == 0
                assert orders.stream(order_id) == Stream(change.order, change.version)
        # A final order never changes.
        current = orders.stream(order_id).order
        if final is not None:
            assert current == final and not appended_now
        elif current is not None and current.final:
            final = current
    types = [change.event.TYPE for change in stored_events]
    assert types.count("order.placed") <= 1
    assert types.count("order.confirmed") + types.count("order.rejected") <= 1
    assert [change.version for change in stored_events] == list(range(1, len(stored_events) + 1))
    assert len({change.message_id for change in stored_events}) == len(stored_events)
    assert orders.stream(order_id).version == len(stored_events)


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
    first = decide(Orders(NOW), place_command(key, items=items), SETTINGS)
    (change,) = first.changes
    assert isinstance(change, Appended)
    assert change.order_id == domain.order_id_for(place_command(key))
    again = decide(after(Orders(NOW), first.changes), place_command(key, items=items), SETTINGS)
    assert again.changes == () and again.send == ()
