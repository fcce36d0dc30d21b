"""The orchestrated saga's decisions, with no servers: for each step and each thing that can
arrive, the exact decision (the saga as it must be stored, its step-log line, the commands
with all their fields); then properties of any sequence of replies, deadlines and operator
requests, decided one after the other as a batch is."""

from __future__ import annotations

import typing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    CancelShipment,
    ChargePayment,
    Command,
    CompensateSaga,
    ConfirmOrder,
    CreateShipment,
    Envelope,
    Money,
    OrderConfirmed,
    OrderLine,
    OrderPlacedV2,
    OrderRejected,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    Received,
    RefundPayment,
    RejectOrder,
    ReleaseStock,
    ReserveStock,
    RetryStep,
    Send,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentFailed,
    StockReleased,
    StockReservationFailed,
    StockReserved,
)
from workers.orchestrator import domain, store
from workers.orchestrator.domain import (
    OperatorRequest,
    OrderFacts,
    Recorded,
    Reply,
    Saga,
    Sagas,
    Status,
    Step,
)
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime.decision import Decision, after

ORDER_ID = "6f1c1a3e-9a1c-4a43-9a49-7b0c5a9e1f10"
PAYMENT_ID = "0d4b7c2e-51f3-4c8e-9a1d-2b3c4d5e6f70"
SHIPMENT_ID = "1e5c8d3f-62a4-4d9f-8b2e-3c4d5e6f7a81"
REQUEST_ID = "2f6d9e4a-73b5-4e0a-9c3f-4d5e6f7a8b92"
TRACKING = "TRK-0000000001"
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # when the saga's step was sent
LATER = NOW + timedelta(minutes=5)  # when the decision is made: past the step's deadline
SETTINGS = OrchestratorSettings(step_timeout_seconds=30.0, deadline_poll_seconds=1.0)
TIMEOUT = timedelta(seconds=30)
ITEMS = [OrderLine(sku="A", quantity=2, unit_price=Money.of("5.00", "EUR"))]
TOTAL = Money.of("10.00", "EUR")
FACTS = OrderFacts(ORDER_ID, "c-1", tuple(ITEMS), TOTAL, "DE")

# --- The commands, every field spelled out. --------------------------------------------

RESERVE = ReserveStock(
    order_id=ORDER_ID,
    items=ITEMS,
    saga="orchestration",
    customer_id="c-1",
    total=TOTAL,
    country="DE",
)
CHARGE = ChargePayment(
    order_id=ORDER_ID,
    customer_id="c-1",
    amount=TOTAL,
    saga="orchestration",
    country="DE",
    items=ITEMS,
)
SHIP = CreateShipment(order_id=ORDER_ID, country="DE", items=ITEMS, saga="orchestration")
CONFIRM = ConfirmOrder(order_id=ORDER_ID, payment_id=PAYMENT_ID, tracking_number=TRACKING)


def release(reason: str) -> ReleaseStock:
    return ReleaseStock(order_id=ORDER_ID, reason=reason, saga="orchestration")


def refund(reason: str) -> RefundPayment:
    return RefundPayment(order_id=ORDER_ID, reason=reason, saga="orchestration")


def cancel(reason: str) -> CancelShipment:
    return CancelShipment(order_id=ORDER_ID, reason=reason, saga="orchestration")


def reject(reason: str) -> RejectOrder:
    return RejectOrder(order_id=ORDER_ID, reason=reason)


# --- What arrives. -----------------------------------------------------------------------

PLACED = OrderPlacedV2(
    order_id=ORDER_ID,
    customer_id="c-1",
    items=ITEMS,
    total=TOTAL,
    country="DE",
    saga="orchestration",
)
STOCK_RESERVED = StockReserved(
    order_id=ORDER_ID,
    items=ITEMS,
    saga="orchestration",
    customer_id="c-1",
    total=TOTAL,
    country="DE",
)
OUT_OF_STOCK = StockReservationFailed(
    order_id=ORDER_ID, reason="out of stock: A", saga="orchestration", customer_id="c-1"
)
PAID = PaymentCompleted(
    order_id=ORDER_ID,
    payment_id=PAYMENT_ID,
    amount=TOTAL,
    saga="orchestration",
    country="DE",
    items=ITEMS,
)
PAYMENT_REFUSED = PaymentFailed(
    order_id=ORDER_ID, reason="insufficient funds", saga="orchestration"
)
SHIPPED = ShipmentCreated(
    order_id=ORDER_ID, shipment_id=SHIPMENT_ID, tracking_number=TRACKING, saga="orchestration"
)
SHIPPING_REFUSED = ShipmentFailed(order_id=ORDER_ID, reason="blocked: XX", saga="orchestration")
CONFIRMED = OrderConfirmed(order_id=ORDER_ID, payment_id=PAYMENT_ID, tracking_number=TRACKING)
STOCK_RELEASED = StockReleased(order_id=ORDER_ID, saga="orchestration")
REFUNDED = PaymentRefunded(
    order_id=ORDER_ID, payment_id=PAYMENT_ID, amount=TOTAL, saga="orchestration"
)
CANCELLED = ShipmentCancelled(order_id=ORDER_ID, saga="orchestration")
REJECTED = OrderRejected(order_id=ORDER_ID, reason="refused")
REPLIES: tuple[Reply, ...] = (
    STOCK_RESERVED,
    OUT_OF_STOCK,
    PAID,
    PAYMENT_REFUSED,
    SHIPPED,
    SHIPPING_REFUSED,
    CONFIRMED,
    STOCK_RELEASED,
    REFUNDED,
    CANCELLED,
    REJECTED,
)
RETRY = RetryStep(order_id=ORDER_ID, requested_by="alice")
COMPENSATE = CompensateSaga(order_id=ORDER_ID, reason="customer called", requested_by="alice")
# The deadline watcher's turn (not a message).
DEADLINE: Literal["deadline"] = "deadline"
Arrival = Reply | OperatorRequest | Literal["deadline"]
ASKED = f"operator retry by alice (request {REQUEST_ID})"
ASKED_TO_COMPENSATE = f"operator compensation by alice (request {REQUEST_ID})"


# How an operator request arrives: its message id names it in the step log.
RECEIVED = Received(
    Envelope.new("orchestrator.retry_step", 1, "fleet-cli", message_id=REQUEST_ID), {}
)


def decide(sagas: Sagas, arrival: Arrival) -> Decision[Recorded]:
    """What the orchestrator decides when ``arrival`` comes for the order's saga."""
    if isinstance(arrival, str):
        return domain.deadline_passed(sagas, ORDER_ID, settings=SETTINGS)
    if isinstance(arrival, RetryStep | CompensateSaga):
        return domain.operator_request(sagas, arrival, settings=SETTINGS, received=RECEIVED)
    return domain.advance_saga(sagas, arrival, settings=SETTINGS)


def saga(
    step: Step,
    *completed: domain.Action,
    status: Status = "running",
    pending: tuple[domain.Compensation, ...] = (),
    reason: str | None = None,
    deadline_at: datetime | None = NOW + TIMEOUT,
) -> Saga:
    """The order's saga at ``step`` as loaded (version 3), with what its completed steps
    reported."""
    return Saga(
        FACTS,
        status,
        step,
        completed,
        pending,
        reason,
        deadline_at,
        version=3,
        payment_id=PAYMENT_ID if "charge_payment" in completed else None,
        tracking_number=TRACKING if "create_shipment" in completed else None,
    )


def compensating(step: Step, *pending: domain.Compensation, reason: str = "refused") -> Saga:
    return saga(
        step,
        "reserve_stock",
        "charge_payment",
        status="compensating",
        pending=pending,
        reason=reason,
    )


def moved(after_decision: Saga) -> Saga:
    """The saga as a decision that sends its step's command must store it: the step's
    deadline starts when the decision is made (``LATER``)."""
    return replace(after_decision, deadline_at=LATER + TIMEOUT)


CONFIRMING = saga("confirm_order", "reserve_stock", "charge_payment", "create_shipment")

# (the saga, what arrives, the saga as it must be stored next or None when it must not
# change, its step-log line, the commands sent)
DECISIONS = [
    # A step done: the next one.
    pytest.param(
        saga("reserve_stock"),
        STOCK_RESERVED,
        moved(saga("charge_payment", "reserve_stock")),
        "reserve_stock done; next: charge_payment",
        [CHARGE],
        id="stock reserved",
    ),
    pytest.param(
        saga("charge_payment", "reserve_stock"),
        PAID,
        moved(saga("create_shipment", "reserve_stock", "charge_payment")),
        "charge_payment done; next: create_shipment",
        [SHIP],
        id="paid",
    ),
    pytest.param(
        saga("create_shipment", "reserve_stock", "charge_payment"),
        SHIPPED,
        moved(CONFIRMING),
        "create_shipment done; next: confirm_order",
        [CONFIRM],
        id="shipped: the confirmation carries the payment and the tracking number",
    ),
    pytest.param(
        CONFIRMING,
        CONFIRMED,
        replace(CONFIRMING, status="confirmed", completed=domain.ACTIONS, deadline_at=None),
        "confirm_order done: confirmed",
        [],
        id="confirmed",
    ),
    # A step refused: what was done is undone, last first, then the order rejected.
    pytest.param(
        saga("reserve_stock"),
        OUT_OF_STOCK,
        moved(
            saga("reject_order", status="compensating", reason="out of stock: A"),
        ),
        "reserve_stock refused: out of stock: A; compensating: reject_order",
        [reject("out of stock: A")],
        id="out of stock",
    ),
    pytest.param(
        saga("charge_payment", "reserve_stock"),
        PAYMENT_REFUSED,
        moved(
            saga(
                "release_stock",
                "reserve_stock",
                status="compensating",
                pending=("reject_order",),
                reason="insufficient funds",
            )
        ),
        "charge_payment refused: insufficient funds; compensating: release_stock",
        [release("insufficient funds")],
        id="payment refused",
    ),
    pytest.param(
        saga("create_shipment", "reserve_stock", "charge_payment"),
        SHIPPING_REFUSED,
        moved(
            compensating("refund_payment", "release_stock", "reject_order", reason="blocked: XX")
        ),
        "create_shipment refused: blocked: XX; compensating: refund_payment",
        [refund("blocked: XX")],
        id="shipping refused",
    ),
    # A compensation done: the next one, then the rejection.
    pytest.param(
        compensating("refund_payment", "release_stock", "reject_order"),
        REFUNDED,
        moved(compensating("release_stock", "reject_order")),
        "refund_payment done; next: release_stock",
        [release("refused")],
        id="refunded",
    ),
    pytest.param(
        compensating("release_stock", "reject_order"),
        STOCK_RELEASED,
        moved(compensating("reject_order")),
        "release_stock done; next: reject_order",
        [reject("refused")],
        id="stock released",
    ),
    pytest.param(
        compensating("reject_order"),
        REJECTED,
        replace(compensating("reject_order"), status="rejected", deadline_at=None),
        "reject_order done: rejected",
        [],
        id="rejected",
    ),
    # A deadline passed: the step may have completed, so it is undone too, first, not
    # waited for; confirm_order and the compensations are sent again instead.
    pytest.param(
        saga("reserve_stock"),
        DEADLINE,
        moved(saga("reject_order", status="compensating", reason="reserve_stock timed out")),
        "reserve_stock timed out; compensating: reject_order",
        [release("reserve_stock timed out"), reject("reserve_stock timed out")],
        id="deadline at reserve_stock",
    ),
    pytest.param(
        saga("charge_payment", "reserve_stock"),
        DEADLINE,
        moved(
            saga(
                "release_stock",
                "reserve_stock",
                status="compensating",
                pending=("reject_order",),
                reason="charge_payment timed out",
            )
        ),
        "charge_payment timed out; compensating: release_stock",
        [refund("charge_payment timed out"), release("charge_payment timed out")],
        id="deadline at charge_payment",
    ),
    pytest.param(
        saga("create_shipment", "reserve_stock", "charge_payment"),
        DEADLINE,
        moved(
            compensating(
                "refund_payment",
                "release_stock",
                "reject_order",
                reason="create_shipment timed out",
            )
        ),
        "create_shipment timed out; compensating: refund_payment",
        [cancel("create_shipment timed out"), refund("create_shipment timed out")],
        id="deadline at create_shipment",
    ),
    pytest.param(
        CONFIRMING,
        DEADLINE,
        moved(CONFIRMING),
        "confirm_order timed out: sent again",
        [CONFIRM],
        id="deadline at the pivot",
    ),
    pytest.param(
        compensating("release_stock", "reject_order"),
        DEADLINE,
        moved(compensating("release_stock", "reject_order")),
        "release_stock timed out: sent again",
        [release("refused")],
        id="deadline at a compensation",
    ),
    pytest.param(
        compensating("reject_order"),
        DEADLINE,
        moved(compensating("reject_order")),
        "reject_order timed out: sent again",
        [reject("refused")],
        id="deadline at the rejection",
    ),
    pytest.param(
        saga("charge_payment", "reserve_stock", deadline_at=LATER + timedelta(seconds=1)),
        DEADLINE,
        None,
        "deadline not reached",
        [],
        id="deadline not reached",
    ),
    # An operator's retry: the current step again, its deadline restarted.
    pytest.param(
        saga("charge_payment", "reserve_stock"),
        RETRY,
        moved(saga("charge_payment", "reserve_stock")),
        f"{ASKED}: charge_payment sent again",
        [CHARGE],
        id="retry",
    ),
    pytest.param(
        CONFIRMING,
        RETRY,
        moved(CONFIRMING),
        f"{ASKED}: confirm_order sent again",
        [CONFIRM],
        id="retry at the pivot",
    ),
    pytest.param(
        compensating("release_stock", "reject_order"),
        RETRY,
        moved(compensating("release_stock", "reject_order")),
        f"{ASKED}: release_stock sent again",
        [release("refused")],
        id="retry of a compensation",
    ),
    pytest.param(
        replace(CONFIRMING, status="confirmed", completed=domain.ACTIONS, deadline_at=None),
        RETRY,
        None,
        f"{ASKED}: retry refused: the saga already ended confirmed",
        [],
        id="retry of an ended saga",
    ),
    # An operator's compensation: as a deadline does, with the operator's reason.
    pytest.param(
        saga("reserve_stock"),
        COMPENSATE,
        moved(saga("reject_order", status="compensating", reason="customer called")),
        f"{ASKED_TO_COMPENSATE}: compensation requested at reserve_stock: customer called;"
        " compensating: reject_order",
        [release("customer called"), reject("customer called")],
        id="compensate at reserve_stock",
    ),
    pytest.param(
        saga("charge_payment", "reserve_stock"),
        COMPENSATE,
        moved(
            saga(
                "release_stock",
                "reserve_stock",
                status="compensating",
                pending=("reject_order",),
                reason="customer called",
            )
        ),
        f"{ASKED_TO_COMPENSATE}: compensation requested at charge_payment: customer called;"
        " compensating: release_stock",
        [refund("customer called"), release("customer called")],
        id="compensate at charge_payment",
    ),
    pytest.param(
        saga("create_shipment", "reserve_stock", "charge_payment"),
        COMPENSATE,
        moved(
            compensating(
                "refund_payment", "release_stock", "reject_order", reason="customer called"
            )
        ),
        f"{ASKED_TO_COMPENSATE}: compensation requested at create_shipment: customer called;"
        " compensating: refund_payment",
        [cancel("customer called"), refund("customer called")],
        id="compensate at create_shipment",
    ),
    pytest.param(
        CONFIRMING,
        COMPENSATE,
        None,
        f"{ASKED_TO_COMPENSATE}: compensation refused: past the pivot (confirm_order):"
        " it only goes forward",
        [],
        id="compensate past the pivot",
    ),
    pytest.param(
        compensating("release_stock", "reject_order"),
        COMPENSATE,
        None,
        f"{ASKED_TO_COMPENSATE}: compensation refused: already compensating at release_stock",
        [],
        id="compensate while compensating",
    ),
    pytest.param(
        replace(compensating("reject_order"), status="rejected", deadline_at=None),
        COMPENSATE,
        None,
        f"{ASKED_TO_COMPENSATE}: compensation refused: the saga already ended rejected",
        [],
        id="compensate an ended saga",
    ),
    # Replies that do not match the step, or come after the end: only a step-log line.
    pytest.param(
        saga("charge_payment", "reserve_stock"),
        STOCK_RESERVED,
        None,
        "stock.reserved while waiting for charge_payment: ignored",
        [],
        id="a duplicate reply",
    ),
    pytest.param(
        compensating("release_stock", "reject_order"),
        PAYMENT_REFUSED,
        None,
        "payment.failed while waiting for release_stock: ignored",
        [],
        id="a refusal while compensating",
    ),
    pytest.param(
        compensating("release_stock", "reject_order"),
        CANCELLED,
        None,
        "shipment.cancelled while waiting for release_stock: ignored",
        [],
        id="the reply to a compensation not waited for",
    ),
    pytest.param(
        replace(compensating("reject_order"), status="rejected", deadline_at=None),
        CONFIRMED,
        None,
        "late order.confirmed after the saga ended rejected: ignored",
        [],
        id="a late reply",
    ),
]


@pytest.mark.parametrize(("before", "arrival", "stored", "entry", "commands"), DECISIONS)
def test_what_the_orchestrator_decides(
    before: Saga,
    arrival: Arrival,
    stored: Saga | None,
    entry: str,
    commands: list[Command],
) -> None:
    decision = decide(Sagas(LATER, {ORDER_ID: before}), arrival)
    # Replies are noted in the worker's log when they change nothing; the deadline
    # watcher's and the operators' decisions always.
    noted = stored is None or not isinstance(arrival, Reply)
    assert decision == Decision(
        changes=(Recorded(stored or before, entry, changed=stored is not None),),
        send=tuple(Send(command, correlation_id=ORDER_ID) for command in commands),
        note=f"saga {ORDER_ID}: {entry}" if noted else None,
    )


def test_order_placed_starts_the_saga_with_the_reservation_once() -> None:
    decision = domain.start_saga(Sagas(LATER), PLACED, settings=SETTINGS)
    started = Saga(FACTS, "running", "reserve_stock", (), (), None, LATER + TIMEOUT, version=0)
    assert decision == Decision(
        changes=(Recorded(started, "started: reserve_stock"),),
        send=(Send(RESERVE, correlation_id=ORDER_ID),),
    )
    # order.placed delivered again (under another id): the saga is there, nothing is done.
    again = domain.start_saga(after(Sagas(LATER), decision.changes), PLACED, settings=SETTINGS)
    assert again == Decision(note=f"saga {ORDER_ID}: already started; order.placed ignored")


@pytest.mark.parametrize("arrival", [STOCK_RESERVED, RETRY, COMPENSATE])
def test_a_reply_or_request_for_an_order_without_a_saga_is_only_noted(
    arrival: Reply | OperatorRequest,
) -> None:
    assert decide(Sagas(LATER), arrival) == Decision(
        note=f"{arrival.TYPE} for order {ORDER_ID}, which has no saga: ignored"
    )


def test_the_reply_contracts_are_the_replies_the_saga_understands() -> None:
    # The advance_saga queue is bound to the types of the Reply union.
    assert {model.TYPE for model in typing.get_args(Reply)} == set(domain.REPLY_TYPES)
    assert {reply.TYPE for reply in REPLIES} == set(domain.REPLY_TYPES)


def test_a_batch_decides_each_message_on_the_sagas_the_ones_before_it_left() -> None:
    sagas = after(Sagas(LATER), domain.start_saga(Sagas(LATER), PLACED, settings=SETTINGS).changes)
    sent: list[Command] = [RESERVE]
    for reply in (STOCK_RESERVED, PAID, SHIPPED, CONFIRMED):
        decision = decide(sagas, reply)
        sagas = after(sagas, decision.changes)
        sent += commands([decision])
    assert sent == [RESERVE, CHARGE, SHIP, CONFIRM]
    assert sagas.by_order[ORDER_ID].status == "confirmed"


# --- What write stores: each saga once, as it ends the batch; every line. --------------


def test_several_transitions_of_one_saga_write_its_last_state_once_and_every_line() -> None:
    start = Recorded(saga("reserve_stock"), "started")
    reserved = Recorded(saga("charge_payment", "reserve_stock"), "reserved")
    ignored = Recorded(saga("charge_payment", "reserve_stock"), "ignored", changed=False)
    other = replace(saga("reserve_stock"), facts=replace(FACTS, order_id="other"))
    only_noted = Recorded(other, "late", changed=False)
    rows = store.rows_of([start, only_noted, reserved, ignored])
    assert rows.sagas == [reserved.saga]  # at the version it was loaded at
    assert rows.log == [
        store.LogLine(ORDER_ID, "running", "reserve_stock", "started"),
        store.LogLine("other", "running", "reserve_stock", "late"),
        store.LogLine(ORDER_ID, "running", "charge_payment", "reserved"),
        store.LogLine(ORDER_ID, "running", "charge_payment", "ignored"),
    ]


# --- Properties of any sequence of replies, deadlines and operator requests. ----------

# The reply each step waits for: half of what arrives, so that sagas get far.
AWAITED: Literal["awaited"] = "awaited"
Drawn = Arrival | Literal["awaited"]
SUCCESS_OF: dict[Step, Reply] = {
    "reserve_stock": STOCK_RESERVED,
    "charge_payment": PAID,
    "create_shipment": SHIPPED,
    "confirm_order": CONFIRMED,
    "release_stock": STOCK_RELEASED,
    "refund_payment": REFUNDED,
    "cancel_shipment": CANCELLED,
    "reject_order": REJECTED,
}
arrivals = st.lists(
    st.one_of(st.just(AWAITED), st.sampled_from([*REPLIES, DEADLINE, RETRY, COMPENSATE])),
    max_size=40,
)
UNDO: dict[domain.Action, type[Command]] = {
    "reserve_stock": ReleaseStock,
    "charge_payment": RefundPayment,
    "create_shipment": CancelShipment,
}
COMPENSATIONS = {ReleaseStock, RefundPayment, CancelShipment, RejectOrder}


def answers(reply: Reply) -> Step:
    """The step ``reply`` answers."""
    return domain.SUCCESS.get(reply.TYPE) or domain.REFUSAL[reply.TYPE]


@dataclass(frozen=True)
class Run:
    sagas: list[Saga]  # before each arrival, and after the last
    arrived: list[Arrival]
    decisions: list[Decision[Recorded]]  # the start's, then one for each arrival


def run(arrivals: list[Drawn]) -> Run:
    """The saga started, then each arrival decided in turn on the sagas the decisions
    before it left, a little later each time (a deadline, once the step's passed)."""
    sagas = Sagas(NOW)
    start = domain.start_saga(sagas, PLACED, settings=SETTINGS)
    sagas = after(sagas, start.changes)
    done = Run([sagas.by_order[ORDER_ID]], [], [start])
    for arrival in arrivals:
        current = sagas.by_order[ORDER_ID]
        arrived = SUCCESS_OF[current.step] if arrival == AWAITED else arrival
        wait = 2 * TIMEOUT if arrived == DEADLINE else TIMEOUT / 10
        sagas = replace(sagas, now=sagas.now + wait)
        decision = decide(sagas, arrived)
        sagas = after(sagas, decision.changes)
        done.sagas.append(sagas.by_order[ORDER_ID])
        done.arrived.append(arrived)
        done.decisions.append(decision)
    return done


def commands(decisions: list[Decision[Recorded]]) -> list[Command]:
    """What ``decisions`` sent, in order; each in the saga's correlation."""
    sent: list[Command] = []
    for decision in decisions:
        for item in decision.send:
            assert isinstance(item, Send) and item.correlation_id == ORDER_ID
            assert isinstance(item.message, Command)
            sent.append(item.message)
    return sent


@given(arrivals)
def test_a_saga_never_both_confirms_and_compensates(arrivals: list[Drawn]) -> None:
    done = run(arrivals)
    sent = {type(command) for command in commands(done.decisions)}
    assert not (ConfirmOrder in sent and sent & COMPENSATIONS)
    statuses = [saga.status for saga in done.sagas]
    if "compensating" in statuses:
        assert "confirmed" not in statuses
    if statuses[-1] == "confirmed":
        assert done.sagas[-1].completed == domain.ACTIONS and done.sagas[-1].reason is None


@given(arrivals)
def test_a_rejected_saga_undoes_every_completed_action_last_first_then_rejects(
    arrivals: list[Drawn],
) -> None:
    done = run(arrivals)
    end = done.sagas[-1]
    if end.status != "rejected":
        return
    sent = [type(command) for command in commands(done.decisions)]
    assert sent[-1] is RejectOrder
    undos = [UNDO[action] for action in reversed(end.completed)]  # last done first
    assert set(undos) <= set(sent)
    first_sent = [sent.index(undo) for undo in undos]
    assert first_sent == sorted(first_sent)
    assert all(at < sent.index(RejectOrder) for at in first_sent)


@given(arrivals)
def test_a_final_saga_changes_nothing_and_sends_nothing(arrivals: list[Drawn]) -> None:
    done = run(arrivals)
    for before, decision in zip(done.sagas[:-1], done.decisions[1:], strict=True):
        if before.final:
            assert decision.send == ()
            assert all(not change.changed and change.saga == before for change in decision.changes)


@given(arrivals)
def test_a_reply_that_does_not_match_the_step_changes_nothing(arrivals: list[Drawn]) -> None:
    done = run(arrivals)
    steps = zip(done.sagas[:-1], done.arrived, done.decisions[1:], strict=True)
    for before, arrival, decision in steps:
        if isinstance(arrival, str | RetryStep | CompensateSaga):
            continue
        matches = (
            not before.final
            and answers(arrival) == before.step
            and (arrival.TYPE not in domain.REFUSAL or before.status == "running")
        )
        (change,) = decision.changes
        if matches:
            assert change.changed and change.saga != before
        else:
            assert decision.send == () and not change.changed and change.saga == before


# --- A step whose service is out of reach (its breaker tripped) is not given up on. -----


@pytest.mark.parametrize(
    ("step", "out"),
    [
        (saga("reserve_stock"), "inventory"),
        (saga("charge_payment", "reserve_stock"), "payment"),
        (saga("create_shipment", "reserve_stock", "charge_payment"), "shipping"),
        (compensating("release_stock", "release_stock"), "inventory"),
    ],
)
def test_a_deadline_of_a_service_out_of_reach_is_extended_not_fired(step: Saga, out: str) -> None:
    why = "paused (auto: database unreachable since 12:00)"
    sagas = Sagas(LATER, {ORDER_ID: step})
    decision = domain.deadline_passed(sagas, ORDER_ID, settings=SETTINGS, out_of_reach={out: why})
    assert decision.send == ()
    [change] = decision.changes
    assert change.saga == replace(step, deadline_at=LATER + TIMEOUT)
    assert f"deadline extended: {out} {why}" in change.entry
    # Another service out of reach changes nothing for this step: the deadline fires.
    others = {name: why for name in ("inventory", "payment", "shipping", "order") if name != out}
    fired = domain.deadline_passed(sagas, ORDER_ID, settings=SETTINGS, out_of_reach=others)
    assert fired.send, "a silent service's deadline still fires"
