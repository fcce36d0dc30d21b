"""``fleet saga list / retry / compensate``: find the sagas that are stuck, and unstick them.

The listing covers both saga styles: orchestrated sagas as the orchestrator keeps them (state,
step, last change), choreographed ones as the read model has their order (no coordinator
keeps their state: PENDING reads as running, and their last change is the order's own last
event). A saga is *stuck for D* when it has not ended and nothing changed it for D.

Retry and compensate act only through messages: they check through the orchestrator's public
module that the request makes sense (an orchestrated saga, not ended, not past the pivot for
a compensation), send ``orchestrator.retry_step`` or ``orchestrator.compensate_saga``
confirmed, and record it in the audit log. The orchestrator decides, under the order's lock,
and answers in the saga's step log, naming the request's message id; with ``wait`` the tools
follow the saga until it ends (or, for a retry, moves past the step) and say where it stands.

    rows = await list_sagas(settings, stuck_for=timedelta(minutes=10))
    sent = await retry(settings, rows[0].order_id, wait=30)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pydantic
from aiormq.exceptions import PublishError

from contracts import CompensateSaga, Message, OutgoingMessage, RetryStep
from contracts.base import OrderId
from workers.operations import InvalidRequest, OperatorError, ops_db
from workers.orchestrator import public as orchestrator
from workers.order_view import public as view
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.settings import Settings

STATES = orchestrator.STATUSES  # running, compensating, confirmed, rejected
STYLES = ("orchestration", "choreography")
UNFINISHED = ("running", "compensating")
# A choreographed saga's state, from its order's status in the read model (whether it is
# compensating nobody records: it reads as running until the order is rejected).
VIEW_STATUS_OF_STATE = {"running": "PENDING", "confirmed": "CONFIRMED", "rejected": "REJECTED"}
STATE_OF_VIEW_STATUS = {status: state for state, status in VIEW_STATUS_OF_STATE.items()}
PRODUCER = "fleet-cli"
POLL_SECONDS = 0.25

# Asks the operator a yes/no question (the CLI's typer.confirm); False: do nothing.
Confirm = Callable[[str], bool]
M = TypeVar("M", bound=Message)
_ORDER_ID: pydantic.TypeAdapter[str] = pydantic.TypeAdapter(OrderId)


@dataclass(frozen=True)
class SagaRow:
    """One saga, of either style, as operators list it."""

    order_id: str
    style: str  # orchestration or choreography
    state: str  # running, compensating, confirmed or rejected
    step: str | None  # the step an orchestrated saga waits for (None: choreography)
    reason: str | None  # why it compensates or was rejected
    order_status: str | None  # the read model's PENDING / CONFIRMED / REJECTED (choreography)
    updated_at: datetime | None  # its last change
    idle_seconds: float | None  # how long before the listing that was
    deadline_at: datetime | None = None  # orchestration: when its step times out
    version: int | None = None  # orchestration: the saga's stored version

    @property
    def final(self) -> bool:
        return self.state not in UNFINISHED

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SagaAction:
    """An operator request sent to the orchestrator, and (after a wait) what came of it."""

    action: str  # retry or compensate
    order_id: str
    message_id: str  # the command's, as the audit log records it
    operator: str
    before: SagaRow  # the saga when the request was sent
    after: SagaRow | None = None  # the saga after the wait (None: not waited for)
    answer: str | None = None  # the orchestrator's step-log line for the request, once handled
    settled: bool | None = None  # after a wait: it ended (a retry: moved on) within it

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "before": self.before.as_dict(),
            "after": None if self.after is None else self.after.as_dict(),
        }


def _idle(updated_at: datetime | None, now: datetime) -> float | None:
    return None if updated_at is None else max(0.0, (now - updated_at).total_seconds())


def _orchestrated(saga: orchestrator.SagaSummary, now: datetime) -> SagaRow:
    return SagaRow(
        order_id=saga.order_id,
        style="orchestration",
        state=saga.status,
        step=saga.step,
        reason=saga.reason,
        order_status=None,
        updated_at=saga.updated_at,
        idle_seconds=_idle(saga.updated_at, now),
        deadline_at=saga.deadline_at,
        version=saga.version,
    )


def _choreographed(order: view.Summary, now: datetime) -> SagaRow:
    return SagaRow(
        order_id=order.order_id,
        style="choreography",
        state=STATE_OF_VIEW_STATUS.get(order.status or "", "running"),
        step=None,
        reason=order.rejection_reason,
        order_status=order.status,
        updated_at=order.updated_at,
        idle_seconds=_idle(order.updated_at, now),
    )


async def list_sagas(
    settings: Settings,
    *,
    state: str | None = None,
    style: str | None = None,
    stuck_for: timedelta | None = None,
    limit: int = 50,
) -> list[SagaRow]:
    """Sagas of both styles (or ``style``), in ``state`` (or any), most recently changed
    first; with ``stuck_for``, only those not ended that nothing changed for that long,
    the longest stuck first."""
    if state is not None and state not in STATES:
        raise InvalidRequest(f"--state must be one of {', '.join(STATES)}, not {state!r}")
    if style is not None and style not in STYLES:
        raise InvalidRequest(f"--style must be one of {', '.join(STYLES)}, not {style!r}")
    if limit < 1:
        raise InvalidRequest(f"--limit must be at least 1, not {limit}")
    if stuck_for is not None and stuck_for < timedelta(0):
        raise InvalidRequest("--stuck-for must not be negative")
    states = [state] if state is not None else list(STATES)
    if stuck_for is not None:
        states = [s for s in states if s in UNFINISHED]  # an ended saga is not stuck
    if not states:
        return []
    now = datetime.now(UTC)
    cutoff = None if stuck_for is None else now - stuck_for
    oldest_first = stuck_for is not None
    rows: list[SagaRow] = []
    if style in (None, "orchestration"):
        sagas = await orchestrator.list_sagas(
            settings,
            statuses=states,
            updated_before=cutoff,
            limit=limit,
            oldest_first=oldest_first,
        )
        rows.extend(_orchestrated(saga, now) for saga in sagas)
    view_statuses = [VIEW_STATUS_OF_STATE[s] for s in states if s in VIEW_STATUS_OF_STATE]
    if style in (None, "choreography") and view_statuses:
        orders = await view.saga_orders(
            settings,
            saga="choreography",
            statuses=view_statuses,
            updated_before=cutoff,
            limit=limit,
            oldest_first=oldest_first,
        )
        rows.extend(_choreographed(order, now) for order in orders)
    never = datetime.min.replace(tzinfo=UTC)
    rows.sort(key=lambda row: (row.updated_at or never, row.order_id), reverse=not oldest_first)
    return rows[:limit]


# --- Operator requests. -----------------------------------------------------------------


async def retry(
    settings: Settings,
    order_id: str,
    *,
    operator: str,
    wait: float | None = None,
    confirm: Confirm | None = None,
) -> SagaAction:
    """Ask the orchestrator to send the saga's current step's command again (a lost
    command, a service that was down past its retries). ``confirm`` is asked first, once
    the request is known to make sense; ``wait``: follow the saga that many seconds."""
    command = _valid(RetryStep, order_id=_order_id(order_id), requested_by=operator)
    saga = await _orchestrated_saga(settings, command.order_id)
    _check_retry(saga)
    question = (
        f"Send {saga.step} again for order {saga.order_id} (saga {saga.state} at {saga.step},"
        f" unchanged for {duration_text(saga.idle_seconds)})?"
    )
    return await _send(settings, "retry", command, operator, question, _check_retry, wait, confirm)


async def compensate(
    settings: Settings,
    order_id: str,
    *,
    reason: str | None = None,
    operator: str,
    wait: float | None = None,
    confirm: Confirm | None = None,
) -> SagaAction:
    """Ask the orchestrator to give up on the order now: undo what the saga did and reject
    the order with ``reason``. Refused once the saga ended, while it compensates already,
    and past the pivot (``confirm_order``). ``confirm`` and ``wait`` as for ``retry``."""
    because = reason if reason is not None else f"compensated by operator {operator}"
    if not because.strip():
        raise InvalidRequest("--reason must not be empty")
    command = _valid(
        CompensateSaga, order_id=_order_id(order_id), reason=because, requested_by=operator
    )
    saga = await _orchestrated_saga(settings, command.order_id)
    _check_compensate(saga)
    question = (
        f"Compensate order {saga.order_id} now (saga {saga.state} at {saga.step}) and reject"
        f" it with reason {because!r}?"
    )
    return await _send(
        settings, "compensate", command, operator, question, _check_compensate, wait, confirm
    )


async def wait_for_change(settings: Settings, sent: SagaAction, seconds: float) -> SagaAction:
    """Follow the saga up to ``seconds``: until it ends, or (for a retry) moves past the
    step it was stuck at, or the orchestrator answered the request by changing nothing.
    Returns ``sent`` with where the saga stands, the orchestrator's answer and whether it
    settled."""
    deadline = time.monotonic() + seconds
    while True:
        answer = await orchestrator.request_answer(settings, sent.order_id, sent.message_id)
        found = await orchestrator.saga_summary(settings, sent.order_id)
        now = None if found is None else _orchestrated(found, datetime.now(UTC))
        settled = now is not None and answer is not None and _settled(sent, now)
        refused = now is not None and answer is not None and now.version == sent.before.version
        if settled or refused or time.monotonic() >= deadline:
            return replace(sent, after=now, answer=answer, settled=settled)
        await asyncio.sleep(POLL_SECONDS)


def _settled(sent: SagaAction, now: SagaRow) -> bool:
    if now.final:
        return True
    moved = (now.state, now.step) != (sent.before.state, sent.before.step)
    return sent.action == "retry" and moved


def _order_id(text: str) -> str:
    try:
        return _ORDER_ID.validate_python(text.strip())
    except pydantic.ValidationError:
        raise InvalidRequest(f"{text!r} is not an order id (a UUID)") from None


def _valid(model: type[M], **fields: str) -> M:
    try:
        return model(**fields)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"invalid {model.TYPE}: {where}: {first['msg']}") from None


async def _orchestrated_saga(settings: Settings, order_id: str) -> SagaRow:
    """The order's orchestrated saga; OperatorError saying why there is none to ask about."""
    found = await orchestrator.saga_summary(settings, order_id)
    if found is not None:
        return _orchestrated(found, datetime.now(UTC))
    order = await view.find_order(settings, order_id)
    if order is not None and order.saga == "choreography":
        raise OperatorError(
            f"order {order_id} is choreographed: there is no coordinator to ask (its services"
            f" react to each other's events; 'fleet saga show {order_id}' lists them)"
        )
    if order is not None:
        raise OperatorError(f"the orchestrator has no saga for order {order_id} yet")
    raise OperatorError(f"no order {order_id}: neither the orchestrator nor the view knows it")


def _check_retry(saga: SagaRow) -> None:
    if saga.final:
        raise OperatorError(
            f"saga {saga.order_id} already ended {saga.state}: there is no step to retry"
        )


def _check_compensate(saga: SagaRow) -> None:
    if saga.final:
        raise OperatorError(
            f"saga {saga.order_id} already ended {saga.state}: there is nothing to compensate"
        )
    if saga.state == "compensating":
        raise OperatorError(f"saga {saga.order_id} is already compensating (at {saga.step})")
    if saga.step == orchestrator.PIVOT:
        raise OperatorError(
            f"saga {saga.order_id} is past the pivot ({orchestrator.PIVOT}): shipping has"
            " created the shipment, so it can only go forward ('fleet saga retry' sends"
            f" {orchestrator.PIVOT} again)"
        )


async def _send(
    settings: Settings,
    action: str,
    command: RetryStep | CompensateSaga,
    operator: str,
    question: str,
    check: Callable[[SagaRow], None],
    wait: float | None,
    confirm: Confirm | None,
) -> SagaAction:
    if confirm is not None and not confirm(question):
        raise OperatorError("not confirmed: nothing sent")
    order_id = command.order_id
    outgoing = OutgoingMessage.for_message(
        command, producer=PRODUCER, namespace=settings.namespace, correlation_id=order_id
    )
    assert outgoing.message_id is not None  # Envelope.new always gives one
    async with ops_db.connect(settings, transaction=True) as conn:
        # One operator request per saga at a time; checked again under the lock, since the
        # saga (or another operator) may have moved while the question was asked.
        await ops_db.lock(conn, f"saga:{order_id}")
        saga = await _orchestrated_saga(settings, order_id)
        check(saga)
        detail: dict[str, Any] = {"state": saga.state, "step": saga.step}
        if isinstance(command, CompensateSaga):
            detail["reason"] = command.reason
        # Recorded, then sent: a failed send rolls the record back with the transaction.
        await ops_db.record(
            conn,
            action=f"saga.{action}",
            target=order_id,
            message_ids=[outgoing.message_id],
            operator=operator,
            detail=detail,
        )
        await _publish(settings, outgoing)
    sent = SagaAction(action, order_id, outgoing.message_id, operator, before=saga)
    return sent if wait is None else await wait_for_change(settings, sent, wait)


async def _publish(settings: Settings, outgoing: OutgoingMessage) -> None:
    """Persistent, confirmed, with its message id; a command no queue takes is an error."""
    publisher = await ConfirmedPublisher.connect(settings.broker_urls)
    try:
        await publisher.publish(outgoing)
    except PublishError:
        raise OperatorError(
            f"no queue is bound for {outgoing.type} on {outgoing.exchange}: run"
            " 'fleet topology' or start the orchestrator (a version that takes operator requests)"
        ) from None
    finally:
        await publisher.close()


def duration_text(seconds: float | None) -> str:
    """``42s``, ``15m``, ``3.5h``: how long, for people."""
    if seconds is None:
        return "an unknown time"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
