"""The orchestrated saga's state machine, with no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    CancelShipment,
    ChargePayment,
    ConfirmOrder,
    CreateShipment,
    Money,
    OrderLine,
    RefundPayment,
    RejectOrder,
    ReleaseStock,
    ReserveStock,
)
from workers.orchestrator import domain
from workers.orchestrator.domain import OrderFacts, Saga, Transition

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ORDER_ID = "6f1c1a3e-9a1c-4a43-9a49-7b0c5a9e1f10"
PAYMENT_ID = "0d4b7c2e-51f3-4c8e-9a1d-2b3c4d5e6f70"
TIMEOUT = timedelta(seconds=30)
FACTS = OrderFacts(
    order_id=ORDER_ID,
    customer_id="c-1",
    items=(OrderLine(sku="A", quantity=2, unit_price=Money.of("5.00", "EUR")),),
    total=Money.of("10.00", "EUR"),
    country="DE",
)


def reply(saga: Saga, type_: str, reason: str | None = None) -> Transition:
    return domain.on_reply(saga, type_, reason, NOW, TIMEOUT)


def run(*replies: str) -> tuple[Saga, list[object]]:
    transition = domain.start(FACTS, NOW, TIMEOUT)
    sent: list[object] = list(transition.commands)
    saga = transition.saga
    for type_ in replies:
        transition = reply(saga, type_, "refused" if type_ in domain.REFUSAL else None)
        saga = transition.saga
        sent.extend(transition.commands)
    return saga, sent


def test_the_happy_path_runs_the_four_steps_in_order() -> None:
    saga, sent = run("stock.reserved", "payment.completed", "shipment.created", "order.confirmed")
    assert [type(c).__name__ for c in sent] == [
        "ReserveStock",
        "ChargePayment",
        "CreateShipment",
        ConfirmOrder.__name__,
    ]
    assert saga.status == "confirmed" and saga.deadline_at is None
    assert saga.completed == domain.ACTIONS


def test_confirm_order_carries_the_payment_and_tracking_the_steps_reported() -> None:
    saga = domain.start(FACTS, NOW, TIMEOUT).saga
    saga = reply(saga, "stock.reserved").saga
    paid = domain.on_reply(saga, "payment.completed", None, NOW, TIMEOUT, payment_id=PAYMENT_ID)
    shipped = domain.on_reply(
        paid.saga, "shipment.created", None, NOW, TIMEOUT, tracking_number="TRK-0000000001"
    )
    assert shipped.commands == (
        ConfirmOrder(order_id=ORDER_ID, payment_id=PAYMENT_ID, tracking_number="TRK-0000000001"),
    )
    # Sent again on its deadline, the confirmation still carries them (they are saga state).
    again = domain.on_deadline(shipped.saga, NOW + 2 * TIMEOUT, TIMEOUT)
    assert again.commands == shipped.commands


def test_a_refusal_compensates_completed_steps_in_reverse_then_rejects() -> None:
    saga, sent = run(
        "stock.reserved",
        "payment.completed",
        "shipment.failed",
        "payment.refunded",
        "stock.released",
        "order.rejected",
    )
    assert [type(c) for c in sent] == [
        ReserveStock,
        ChargePayment,
        CreateShipment,
        RefundPayment,
        ReleaseStock,
        RejectOrder,
    ]
    assert saga.status == "rejected" and saga.reason == "refused"
    assert isinstance(sent[-1], RejectOrder) and sent[-1].reason == "refused"


def test_out_of_stock_rejects_with_nothing_to_undo() -> None:
    saga, sent = run("stock.reservation_failed", "order.rejected")
    assert [type(c) for c in sent] == [ReserveStock, RejectOrder]
    assert saga.status == "rejected"


def test_a_timed_out_step_is_compensated_too_because_it_may_have_completed() -> None:
    saga, _ = run("stock.reserved", "payment.completed")
    late = NOW + TIMEOUT + timedelta(seconds=1)
    transition = domain.on_deadline(saga, late, TIMEOUT)
    # The silent service's undo is sent without waiting for it; then the chain, one by one.
    assert [type(c) for c in transition.commands] == [CancelShipment, RefundPayment]
    assert transition.saga.step == "refund_payment"
    assert transition.saga.pending == ("release_stock", "reject_order")
    assert transition.saga.reason == "create_shipment timed out"
    assert transition.saga.deadline_at == late + TIMEOUT


def test_the_deadline_is_durable_data_not_a_timer() -> None:
    saga, _ = run("stock.reserved")
    assert saga.deadline_at == NOW + TIMEOUT
    assert not domain.on_deadline(saga, NOW + TIMEOUT - timedelta(seconds=1), TIMEOUT).changed


def test_confirm_and_compensations_are_sent_again_on_their_deadline_never_undone() -> None:
    saga, _ = run("stock.reserved", "payment.completed", "shipment.created")
    assert saga.step == "confirm_order"
    late = NOW + 2 * TIMEOUT
    again = domain.on_deadline(saga, late, TIMEOUT)
    assert [type(c) for c in again.commands] == [ConfirmOrder] and again.saga.status == "running"
    saga, _ = run("stock.reserved", "payment.failed")
    again = domain.on_deadline(saga, late, TIMEOUT)
    assert [type(c) for c in again.commands] == [ReleaseStock]
    assert again.saga.status == "compensating"


def test_late_and_stray_replies_change_nothing() -> None:
    saga, _ = run("stock.reservation_failed", "order.rejected")
    for type_ in ("stock.reserved", "payment.completed", "order.confirmed", "shipment.failed"):
        transition = reply(saga, type_)
        assert not transition.changed and transition.commands == () and transition.saga == saga
    running, _ = run("stock.reserved")
    duplicate = reply(running, "stock.reserved")
    assert not duplicate.changed and "ignored" in duplicate.log


replies = st.sampled_from([*domain.REPLY_TYPES, "deadline"])


@given(st.lists(replies, max_size=40))
def test_whatever_arrives_the_saga_keeps_its_promises(arrivals: list[str]) -> None:
    transition = domain.start(FACTS, NOW, TIMEOUT)
    saga, sent = transition.saga, list(transition.commands)
    clock = NOW
    for arrival in arrivals:
        if arrival == "deadline":
            clock += 2 * TIMEOUT
            transition = domain.on_deadline(saga, clock, TIMEOUT)
        else:
            transition = domain.on_reply(saga, arrival, "no", clock, TIMEOUT)
        if saga.final:
            assert not transition.commands  # an ended saga never acts again
        saga = transition.saga
        sent.extend(transition.commands)
    kinds = [type(command).__name__ for command in sent]
    if saga.status == "confirmed":
        assert saga.completed == domain.ACTIONS and saga.reason is None
        assert not {"RejectOrder", "ReleaseStock", "RefundPayment", "CancelShipment"} & set(kinds)
    if saga.status == "rejected":
        assert ConfirmOrder.__name__ not in kinds and kinds[-1] == "RejectOrder"
        # Every action that completed is undone, and undos run last-done-first.
        undo = {
            "ReserveStock": "ReleaseStock",
            "ChargePayment": "RefundPayment",
            "CreateShipment": "CancelShipment",
        }
        started = [undo[k] for k in dict.fromkeys(kinds) if k in undo]
        compensations = [k for k in dict.fromkeys(kinds) if k in undo.values()]
        assert compensations == [c for c in reversed(started) if c in compensations]
        completed = {type(domain.command_for(a, saga)).__name__ for a in saga.completed}
        assert {undo[k] for k in completed if k in undo} <= set(compensations)


# --- Operator requests: retry the current step, compensate now. -------------------------

HAPPY_PATH = ("stock.reserved", "payment.completed", "shipment.created", "order.confirmed")


def test_a_retry_sends_the_current_step_again_and_restarts_its_deadline() -> None:
    saga, sent = run("stock.reserved")
    later = NOW + timedelta(hours=2)  # long stuck: the deadline may have passed or not
    transition = domain.on_retry(saga, later, TIMEOUT)
    assert transition.changed
    assert transition.commands == (sent[-1],)  # the same ChargePayment, whose reply is awaited
    assert isinstance(transition.commands[0], ChargePayment)
    assert transition.saga.step == "charge_payment" and transition.saga.status == "running"
    assert transition.saga.completed == saga.completed
    assert transition.saga.deadline_at == later + TIMEOUT
    assert "charge_payment sent again" in transition.log


def test_a_retry_while_compensating_sends_the_compensation_again() -> None:
    saga, _ = run("stock.reserved", "payment.failed")
    transition = domain.on_retry(saga, NOW, TIMEOUT)
    assert [type(c) for c in transition.commands] == [ReleaseStock]
    assert transition.saga.status == "compensating" and transition.saga.pending == saga.pending


def test_a_retry_at_the_pivot_sends_the_confirmation_again() -> None:
    saga, _ = run("stock.reserved", "payment.completed", "shipment.created")
    transition = domain.on_retry(saga, NOW, TIMEOUT)
    assert [type(c) for c in transition.commands] == [ConfirmOrder]


def test_a_retry_or_a_compensation_of_an_ended_saga_changes_nothing() -> None:
    for saga, _ in (run("stock.reservation_failed", "order.rejected"), run(*HAPPY_PATH)):
        for transition in (
            domain.on_retry(saga, NOW, TIMEOUT),
            domain.on_compensate(saga, "operator", NOW, TIMEOUT),
        ):
            assert not transition.changed and transition.commands == ()
            assert transition.saga == saga
            assert f"already ended {saga.status}" in transition.log


def test_a_compensation_undoes_what_was_done_and_the_current_step_without_waiting() -> None:
    saga, _ = run("stock.reserved")
    later = NOW + timedelta(minutes=5)
    transition = domain.on_compensate(saga, "customer called", later, TIMEOUT)
    # The charge may have happened (or may still arrive): its refund goes first, not
    # waited for; then the completed reservation is released, then the order rejected.
    assert [type(c) for c in transition.commands] == [RefundPayment, ReleaseStock]
    assert transition.saga.status == "compensating"
    assert transition.saga.step == "release_stock"
    assert transition.saga.pending == ("reject_order",)
    assert transition.saga.reason == "customer called"
    assert transition.saga.deadline_at == later + TIMEOUT
    saga = transition.saga
    for type_ in ("payment.refunded", "stock.released", "order.rejected"):
        saga = reply(saga, type_).saga  # the refund's reply is not awaited: ignored
    assert saga.status == "rejected"


def test_a_compensation_at_the_first_step_releases_and_rejects() -> None:
    saga = domain.start(FACTS, NOW, TIMEOUT).saga
    transition = domain.on_compensate(saga, "operator", NOW, TIMEOUT)
    assert [type(c) for c in transition.commands] == [ReleaseStock, RejectOrder]
    assert transition.saga.step == "reject_order" and transition.saga.pending == ()


def test_a_compensation_is_refused_past_the_pivot_and_while_compensating() -> None:
    at_pivot, _ = run("stock.reserved", "payment.completed", "shipment.created")
    refused = domain.on_compensate(at_pivot, "operator", NOW, TIMEOUT)
    assert not refused.changed and refused.commands == () and refused.saga == at_pivot
    assert "past the pivot" in refused.log
    compensating, _ = run("stock.reserved", "payment.failed")
    refused = domain.on_compensate(compensating, "operator", NOW, TIMEOUT)
    assert not refused.changed and refused.commands == ()
    assert "already compensating" in refused.log


arrivals_with_operators = st.sampled_from([*domain.REPLY_TYPES, "deadline", "retry", "compensate"])


@given(st.lists(arrivals_with_operators, max_size=40))
def test_operator_requests_amid_replies_keep_the_sagas_promises(arrivals: list[str]) -> None:
    transition = domain.start(FACTS, NOW, TIMEOUT)
    saga, sent = transition.saga, list(transition.commands)
    clock = NOW
    for arrival in arrivals:
        clock += timedelta(seconds=1)
        if arrival == "retry":
            transition = domain.on_retry(saga, clock, TIMEOUT)
        elif arrival == "compensate":
            transition = domain.on_compensate(saga, "operator", clock, TIMEOUT)
        elif arrival == "deadline":
            clock += 2 * TIMEOUT
            transition = domain.on_deadline(saga, clock, TIMEOUT)
        else:
            transition = domain.on_reply(saga, arrival, "no", clock, TIMEOUT)
        if saga.final:
            assert not transition.changed and not transition.commands
        if saga.step == "confirm_order" and arrival == "compensate":
            assert transition.saga.status == saga.status  # never undone past the pivot
        saga = transition.saga
        sent.extend(transition.commands)
    kinds = [type(command).__name__ for command in sent]
    if saga.status == "confirmed":
        assert not {"RejectOrder", "ReleaseStock", "RefundPayment", "CancelShipment"} & set(kinds)
    if saga.status == "rejected":
        assert ConfirmOrder.__name__ not in kinds and kinds[-1] == "RejectOrder"
