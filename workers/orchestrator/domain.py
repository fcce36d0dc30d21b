"""The orchestrated order saga as a pure state machine: no I/O, no clock of its own.

    reserve_stock -> charge_payment -> create_shipment -> confirm_order

Every transition takes the saga as it is stored and returns the saga as it must be stored
next, the commands to send, and a line for the step log. The handlers' decisions
(``start_saga``, ``advance_saga``, ``operator_request``) and the deadline watcher's
(``deadline_passed``) are those transitions on the sagas a batch loaded (``Sagas``, with
the time of now): a ``Recorded`` change that ``store.write_sagas`` stores (optimistic
concurrency on ``version``), and the commands to send, in the saga's correlation.

On a refusal the completed steps are compensated in reverse order, each waiting for its
reply, then the order is rejected. When a step's deadline passes, the step *may* have
completed, so its compensation is sent too, first, but not waited for: its service may be
the one that is down, and the command waits durably in its queue (every compensation is
idempotent, and one that arrives before its action leaves a tombstone, so the late action
is refused). Two steps are never compensated but sent again when their deadline
passes: ``confirm_order``, the pivot (once shipping has created the shipment the saga can
only go forward), and every compensation (an undo must eventually happen). A reply that
does not match the step the saga waits for, or that arrives after the saga ended, changes
nothing (but its step-log line).

An operator may ask for a stuck saga's current step to be sent again (``on_retry``) or for
its compensation to start now (``on_compensate``, refused past the pivot); the orchestrator
decides, as for a reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from contracts import (
    CancelShipment,
    ChargePayment,
    Command,
    CompensateSaga,
    ConfirmOrder,
    CreateShipment,
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
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime.decision import Decision

Status = Literal["running", "compensating", "confirmed", "rejected"]
Action = Literal["reserve_stock", "charge_payment", "create_shipment", "confirm_order"]
Compensation = Literal["cancel_shipment", "refund_payment", "release_stock", "reject_order"]
Step = Action | Compensation

ACTIONS: tuple[Action, ...] = (
    "reserve_stock",
    "charge_payment",
    "create_shipment",
    "confirm_order",
)
COMPENSATION_OF: dict[Action, Compensation] = {
    "reserve_stock": "release_stock",
    "charge_payment": "refund_payment",
    "create_shipment": "cancel_shipment",
}
FINAL: frozenset[Status] = frozenset({"confirmed", "rejected"})
# The service whose handler answers each step's command.
SERVICE_OF: dict[Step, str] = {
    "reserve_stock": "inventory",
    "release_stock": "inventory",
    "charge_payment": "payment",
    "refund_payment": "payment",
    "create_shipment": "shipping",
    "cancel_shipment": "shipping",
    "confirm_order": "order",
    "reject_order": "order",
}

# Which reply event answers which step, and whether it is a success.
SUCCESS: dict[str, Step] = {
    "stock.reserved": "reserve_stock",
    "payment.completed": "charge_payment",
    "shipment.created": "create_shipment",
    "order.confirmed": "confirm_order",
    "stock.released": "release_stock",
    "payment.refunded": "refund_payment",
    "shipment.cancelled": "cancel_shipment",
    "order.rejected": "reject_order",
}
REFUSAL: dict[str, Action] = {
    "stock.reservation_failed": "reserve_stock",
    "payment.failed": "charge_payment",
    "shipment.failed": "create_shipment",
}
REPLY_TYPES: tuple[str, ...] = (*SUCCESS, *REFUSAL)

# The replies as contracts: every answer of a step or a compensation (their types are
# REPLY_TYPES), and the refusals among them.
Reply = (
    StockReserved
    | StockReservationFailed
    | PaymentCompleted
    | PaymentFailed
    | ShipmentCreated
    | ShipmentFailed
    | OrderConfirmed
    | StockReleased
    | PaymentRefunded
    | ShipmentCancelled
    | OrderRejected
)
Refusal = StockReservationFailed | PaymentFailed | ShipmentFailed
OperatorRequest = RetryStep | CompensateSaga


@dataclass(frozen=True)
class OrderFacts:
    """What the saga needs to know of the order to send every command."""

    order_id: str
    customer_id: str
    items: tuple[OrderLine, ...]
    total: Money
    country: str


@dataclass(frozen=True)
class Saga:
    facts: OrderFacts
    status: Status
    step: Step  # the step whose reply the saga waits for (its last one once final)
    completed: tuple[Action, ...]  # actions that succeeded, in order
    pending: tuple[Compensation, ...]  # compensations still to run after ``step``
    reason: str | None
    deadline_at: datetime | None
    version: int  # 0 until first stored
    # What the steps produced, sent on with confirm_order so the order's own stream holds
    # them (a read model rebuilt from that stream shows the order's references).
    payment_id: str | None = None
    tracking_number: str | None = None

    @property
    def order_id(self) -> str:
        return self.facts.order_id

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class Transition:
    saga: Saga
    commands: tuple[Command, ...]
    log: str  # what happened, for the step log
    changed: bool = True  # False: the saga stays as it is (a late or stray reply, a refusal)


def command_for(step: Step, saga: Saga) -> Command:
    facts, reason = saga.facts, saga.reason or "saga compensation"
    items = list(facts.items)
    match step:
        case "reserve_stock":
            return ReserveStock(
                order_id=facts.order_id,
                items=items,
                saga="orchestration",
                customer_id=facts.customer_id,
                total=facts.total,
                country=facts.country,
            )
        case "charge_payment":
            return ChargePayment(
                order_id=facts.order_id,
                customer_id=facts.customer_id,
                amount=facts.total,
                saga="orchestration",
                country=facts.country,
                items=items,
            )
        case "create_shipment":
            return CreateShipment(
                order_id=facts.order_id, country=facts.country, items=items, saga="orchestration"
            )
        case "confirm_order":
            return ConfirmOrder(
                order_id=facts.order_id,
                payment_id=saga.payment_id,
                tracking_number=saga.tracking_number,
            )
        case "release_stock":
            return ReleaseStock(order_id=facts.order_id, reason=reason, saga="orchestration")
        case "refund_payment":
            return RefundPayment(order_id=facts.order_id, reason=reason, saga="orchestration")
        case "cancel_shipment":
            return CancelShipment(order_id=facts.order_id, reason=reason, saga="orchestration")
        case "reject_order":
            return RejectOrder(order_id=facts.order_id, reason=reason)
    raise ValueError(f"unknown step {step}")


def _action(step: Step) -> Action:
    """``step`` while running, which is always one of the actions."""
    if step not in ACTIONS:
        raise ValueError(f"{step} is not an action step")
    return step


def start(facts: OrderFacts, now: datetime, timeout: timedelta) -> Transition:
    saga = Saga(facts, "running", "reserve_stock", (), (), None, now + timeout, 0)
    return Transition(saga, (command_for("reserve_stock", saga),), "started: reserve_stock")


def _go_to(saga: Saga, step: Step, now: datetime, timeout: timedelta, log: str) -> Transition:
    moved = replace(saga, step=step, deadline_at=now + timeout)
    return Transition(moved, (command_for(step, moved),), log)


def _compensate(
    saga: Saga,
    undo: tuple[Action, ...],
    reason: str,
    now: datetime,
    timeout: timedelta,
    log: str,
    without_waiting: tuple[Compensation, ...] = (),
) -> Transition:
    """Undo ``undo`` in reverse order, then reject the order; first send
    ``without_waiting``, whose replies the saga does not wait for."""
    steps: list[Compensation] = [
        COMPENSATION_OF[action] for action in reversed(undo) if action in COMPENSATION_OF
    ]
    steps.append("reject_order")
    compensating = replace(saga, status="compensating", pending=tuple(steps[1:]), reason=reason)
    moved = _go_to(compensating, steps[0], now, timeout, f"{log}; compensating: {steps[0]}")
    sent_now = tuple(command_for(step, compensating) for step in without_waiting)
    return replace(moved, commands=(*sent_now, *moved.commands))


def _unchanged(saga: Saga, log: str) -> Transition:
    return Transition(saga, (), log, changed=False)


def on_reply(
    saga: Saga,
    reply_type: str,
    reason: str | None,
    now: datetime,
    timeout: timedelta,
    *,
    payment_id: str | None = None,
    tracking_number: str | None = None,
) -> Transition:
    """A service answered; ``reason`` is the refusal's reason for a refusal event, and
    ``payment_id`` / ``tracking_number`` what payment.completed / shipment.created report."""
    if saga.final:
        return _unchanged(saga, f"late {reply_type} after the saga ended {saga.status}: ignored")
    if reply_type in REFUSAL:
        step: Step = REFUSAL[reply_type]
        if saga.status != "running" or saga.step != step:
            return _unchanged(saga, f"{reply_type} while waiting for {saga.step}: ignored")
        return _compensate(
            saga, saga.completed, reason or reply_type, now, timeout, f"{step} refused: {reason}"
        )
    step = SUCCESS[reply_type]
    if step != saga.step:
        return _unchanged(saga, f"{reply_type} while waiting for {saga.step}: ignored")
    if saga.status == "running":
        done = replace(saga, completed=(*saga.completed, _action(step)))
        if step == "charge_payment":
            done = replace(done, payment_id=payment_id)
        elif step == "create_shipment":
            done = replace(done, tracking_number=tracking_number)
        if step == "confirm_order":
            return Transition(
                replace(done, status="confirmed", deadline_at=None),
                (),
                "confirm_order done: confirmed",
            )
        following = ACTIONS[ACTIONS.index(_action(step)) + 1]
        return _go_to(done, following, now, timeout, f"{step} done; next: {following}")
    # compensating
    if step == "reject_order":
        return Transition(
            replace(saga, status="rejected", deadline_at=None), (), "reject_order done: rejected"
        )
    following_compensation = saga.pending[0]
    moved = replace(saga, pending=saga.pending[1:])
    return _go_to(
        moved, following_compensation, now, timeout, f"{step} done; next: {following_compensation}"
    )


def on_deadline(
    saga: Saga, now: datetime, timeout: timedelta, out_of_reach: Mapping[str, str] | None = None
) -> Transition:
    """The step's deadline passed with no reply. ``out_of_reach``: the services whose
    breaker is tripped (or that cannot be told apart from one: the broker is away), each
    with why; a step of one of them is not given up on because of that outage, but its
    deadline moves a whole step's timeout on."""
    if saga.final or saga.deadline_at is None or saga.deadline_at > now:
        return _unchanged(saga, "deadline not reached")
    service = SERVICE_OF[saga.step]
    if out_of_reach and service in out_of_reach:
        extended = replace(saga, deadline_at=now + timeout)
        return Transition(
            extended, (), f"{saga.step} deadline extended: {service} {out_of_reach[service]}"
        )
    if saga.status == "compensating" or saga.step == "confirm_order":
        return _go_to(saga, saga.step, now, timeout, f"{saga.step} timed out: sent again")
    # The step may have completed: undo it too, without waiting on its (silent) service.
    timed_out = _action(saga.step)
    reason = f"{timed_out} timed out"
    return _compensate(
        saga, saga.completed, reason, now, timeout, reason, (COMPENSATION_OF[timed_out],)
    )


# --- What an operator may ask of a stuck saga (contracts/orchestrator.py). ---------------


def on_retry(saga: Saga, now: datetime, timeout: timedelta) -> Transition:
    """Send the current step's command again and restart its deadline: for a step whose
    command was lost, or whose service was down past what its retries cover. Every step
    is idempotent per order, so a step that did complete only answers again."""
    if saga.final:
        return _unchanged(saga, f"retry refused: the saga already ended {saga.status}")
    return _go_to(saga, saga.step, now, timeout, f"{saga.step} sent again")


def on_compensate(saga: Saga, reason: str, now: datetime, timeout: timedelta) -> Transition:
    """Give up on the order now: compensate as a passed deadline does, the current step's
    own compensation first and not waited for (the step may have completed, or may still
    arrive: the compensation's tombstone then refuses it). Refused once the saga ended,
    while it compensates already, and at the pivot."""
    if saga.final:
        return _unchanged(saga, f"compensation refused: the saga already ended {saga.status}")
    if saga.status == "compensating":
        return _unchanged(saga, f"compensation refused: already compensating at {saga.step}")
    if saga.step == "confirm_order":
        return _unchanged(
            saga, "compensation refused: past the pivot (confirm_order): it only goes forward"
        )
    current = _action(saga.step)
    return _compensate(
        saga,
        saga.completed,
        reason,
        now,
        timeout,
        f"compensation requested at {current}: {reason}",
        (COMPENSATION_OF[current],),
    )


# --- What the handlers and the deadline watcher decide, on the sagas a batch loaded. ----


@dataclass(frozen=True)
class Recorded:
    """What one transition stores: the saga as it must be stored (only when ``changed``),
    and its line in the step log (always)."""

    saga: Saga
    entry: str
    changed: bool = True


@dataclass(frozen=True)
class Sagas:
    """What a batch decides on: the sagas of its orders (absent: none yet), each at the
    version it was loaded at, and the time of now (read by load, not by the decisions)."""

    now: datetime
    by_order: Mapping[str, Saga] = field(default_factory=dict)

    def apply(self, change: Recorded) -> Sagas:
        return replace(self, by_order={**self.by_order, change.saga.order_id: change.saga})


def request_tag(message_id: str) -> str:
    """How an operator request's step-log line names it, so its answer can be found."""
    return f"(request {message_id})"


def _timeout(settings: OrchestratorSettings) -> timedelta:
    return timedelta(seconds=settings.step_timeout_seconds)


def _decided(transition: Transition, note: str | None = None) -> Decision[Recorded]:
    """``transition`` as a decision: its saga and step-log line to store, its commands in
    the saga's correlation (its order id, whatever caused this step). What changed nothing
    is noted in the worker's log, unless ``note`` says otherwise."""
    saga = transition.saga
    if note is None and not transition.changed:
        note = f"saga {saga.order_id}: {transition.log}"
    return Decision(
        changes=(Recorded(saga, transition.log, transition.changed),),
        send=tuple(Send(command, correlation_id=saga.order_id) for command in transition.commands),
        note=note,
    )


def start_saga(
    sagas: Sagas, event: OrderPlacedV2, *, settings: OrchestratorSettings
) -> Decision[Recorded]:
    """order.placed starts the order's saga, once (delivered again under another id, it
    finds the saga started)."""
    if event.order_id in sagas.by_order:
        return Decision(note=f"saga {event.order_id}: already started; order.placed ignored")
    facts = OrderFacts(
        order_id=event.order_id,
        customer_id=event.customer_id,
        items=tuple(event.items),
        total=event.total,
        country=event.country,
    )
    return _decided(start(facts, sagas.now, _timeout(settings)))


def advance_saga(
    sagas: Sagas, reply: Reply, *, settings: OrchestratorSettings
) -> Decision[Recorded]:
    """A service answered a step or a compensation of the order's saga."""
    saga = sagas.by_order.get(reply.order_id)
    if saga is None:
        return Decision(note=f"{reply.TYPE} for order {reply.order_id}, which has no saga: ignored")
    transition = on_reply(
        saga,
        reply.TYPE,
        reply.reason if isinstance(reply, Refusal) else None,
        sagas.now,
        _timeout(settings),
        payment_id=reply.payment_id if isinstance(reply, PaymentCompleted) else None,
        tracking_number=reply.tracking_number if isinstance(reply, ShipmentCreated) else None,
    )
    return _decided(transition)


def operator_request(
    sagas: Sagas,
    request: OperatorRequest,
    *,
    settings: OrchestratorSettings,
    received: Received,
) -> Decision[Recorded]:
    """An operator's retry or compensation (``fleet saga retry / compensate``), decided
    like a reply; its step-log line names the request's message id, by which the
    operator's tool finds the answer (a refusal's too: it changes nothing else)."""
    saga = sagas.by_order.get(request.order_id)
    if saga is None:
        return Decision(
            note=f"{request.TYPE} for order {request.order_id}, which has no saga: ignored"
        )
    if isinstance(request, RetryStep):
        transition = on_retry(saga, sagas.now, _timeout(settings))
        asked = f"operator retry by {request.requested_by}"
    else:
        transition = on_compensate(saga, request.reason, sagas.now, _timeout(settings))
        asked = f"operator compensation by {request.requested_by}"
    entry = f"{asked} {request_tag(received.envelope.message_id)}: {transition.log}"
    return _decided(replace(transition, log=entry), note=f"saga {saga.order_id}: {entry}")


def deadline_passed(
    sagas: Sagas,
    order_id: str,
    *,
    settings: OrchestratorSettings,
    out_of_reach: Mapping[str, str] | None = None,
) -> Decision[Recorded]:
    """The deadline watcher found the saga of ``order_id`` past its step's deadline (the
    watcher logs the note as a warning); ``out_of_reach`` as ``on_deadline`` takes it."""
    transition = on_deadline(sagas.by_order[order_id], sagas.now, _timeout(settings), out_of_reach)
    return _decided(transition, note=f"saga {order_id}: {transition.log}")
