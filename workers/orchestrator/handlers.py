"""The orchestrator's wiring: start a saga on order.placed, advance it on every reply, act
on an operator's retry or compensation, and watch deadlines in the background (they live in
the database, so they survive restarts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
from aio_pika.abc import AbstractConnection

from contracts import (
    CompensateSaga,
    OrderConfirmed,
    OrderPlacedV2,
    OrderRejected,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    RetryStep,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentFailed,
    StockReleased,
    StockReservationFailed,
    StockReserved,
    not_choreography,
)
from db.unit_of_work import UnitOfWork, unit_of_work
from workers.orchestrator import domain, store
from workers.orchestrator.domain import OrderFacts, Transition
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime import metrics, tracing
from workers.runtime.service import Service
from workers.runtime.settings import Settings

log = logging.getLogger("fleet.orchestrator")

service = Service(
    "orchestrator",
    settings=OrchestratorSettings,
    emits=(  # the commands of domain.command_for
        "inventory.reserve_stock",
        "payment.charge_payment",
        "shipping.create_shipment",
        "order.confirm_order",
        "inventory.release_stock",
        "payment.refund_payment",
        "shipping.cancel_shipment",
        "order.reject_order",
    ),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _timeout(settings: OrchestratorSettings) -> timedelta:
    return timedelta(seconds=settings.step_timeout_seconds)


# Every answer of a step or a compensation (domain.SUCCESS and domain.REFUSAL).
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


async def _apply(uow: UnitOfWork, transition: Transition) -> None:
    if not transition.changed:
        log.info("saga %s: %s", transition.saga.order_id, transition.log)
        await store.log(uow.conn, transition.saga, transition.log)
        return
    await store.save(uow.conn, transition.saga)
    await store.log(uow.conn, transition.saga, transition.log)
    for command in transition.commands:
        # The saga's correlation id is its order id, whatever caused this step.
        uow.emit(command, correlation_id=transition.saga.order_id)


@service.legacy_handler(when=not_choreography)
async def start_saga(uow: UnitOfWork, event: OrderPlacedV2, settings: OrchestratorSettings) -> None:
    await uow.lock(event.order_id)
    if await store.load(uow.conn, event.order_id) is not None:
        return  # already started: order.placed delivered again under another id
    facts = OrderFacts(
        order_id=event.order_id,
        customer_id=event.customer_id,
        items=tuple(event.items),
        total=event.total,
        country=event.country,
    )
    await _apply(uow, domain.start(facts, _now(), _timeout(settings)))


@service.legacy_handler(when=not_choreography)
async def advance_saga(uow: UnitOfWork, event: Reply, settings: OrchestratorSettings) -> None:
    await uow.lock(event.order_id)
    saga = await store.load(uow.conn, event.order_id)
    if saga is None:
        log.info("%s for order %s, which has no saga: ignored", event.TYPE, event.order_id)
        return
    reason = getattr(event, "reason", None) if event.TYPE in domain.REFUSAL else None
    transition = domain.on_reply(
        saga,
        event.TYPE,
        reason,
        _now(),
        _timeout(settings),
        payment_id=getattr(event, "payment_id", None),
        tracking_number=getattr(event, "tracking_number", None),
    )
    await _apply(uow, transition)


@service.legacy_handler(when=not_choreography)
async def operator_request(
    uow: UnitOfWork, command: RetryStep | CompensateSaga, settings: OrchestratorSettings
) -> None:
    """An operator's retry or compensation (``fleet saga retry / compensate``): decided by
    the domain like a reply, under the order's lock; a refusal changes nothing and is
    logged, in the saga's step log too."""
    await uow.lock(command.order_id)
    saga = await store.load(uow.conn, command.order_id)
    if saga is None:
        log.info("%s for order %s, which has no saga: ignored", command.TYPE, command.order_id)
        return
    if isinstance(command, RetryStep):
        transition = domain.on_retry(saga, _now(), _timeout(settings))
        asked = f"operator retry by {command.requested_by}"
    else:
        transition = domain.on_compensate(saga, command.reason, _now(), _timeout(settings))
        asked = f"operator compensation by {command.requested_by}"
    # The request's message id in the line: the operator's tool finds its answer by it.
    request = uow.received.envelope.message_id if uow.received is not None else None
    entry = f"{asked} {store.request_tag(request)}: {transition.log}"
    if transition.changed:  # (_apply logs a refusal itself)
        log.warning("saga %s: %s", saga.order_id, entry)
    await _apply(uow, replace(transition, log=entry))


async def watch_deadlines(
    settings: Settings, section: OrchestratorSettings, pool: asyncpg.Pool, stop: asyncio.Event
) -> None:
    """Every ``deadline_poll_seconds``, act on the sagas whose step deadline passed."""
    while not stop.is_set():
        try:
            await fire_due_deadlines(settings, section, pool)
        except Exception as error:  # the database is down: try again on the next round
            log.warning("deadline watcher: %s: %s", type(error).__name__, error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=section.deadline_poll_seconds)


async def fire_due_deadlines(
    settings: Settings, section: OrchestratorSettings, pool: asyncpg.Pool, limit: int = 100
) -> int:
    async with unit_of_work(pool, producer=service.name, namespace=settings.namespace) as uow:
        now = _now()
        due = await store.due(uow.conn, now, limit)
        for order_id in due:
            with tracing.span(
                f"deadline {order_id}",
                attributes={
                    "fleet.order_id": order_id,
                    "messaging.message.conversation_id": order_id,
                },
            ):
                await uow.lock(order_id)
                saga = await store.load(uow.conn, order_id)
                if saga is not None:
                    transition = domain.on_deadline(saga, now, _timeout(section))
                    log.warning("saga %s: %s", order_id, transition.log)
                    await _apply(uow, transition)
    return len(due)


service.background.append(watch_deadlines)


async def sample(settings: Settings, conn: asyncpg.Connection, broker: AbstractConnection) -> None:
    """The metrics sampler's gauges of the orchestrator: its sagas by state, and those
    still waiting past their deadline."""
    counts = await store.counts_by_status(conn)
    for status in typing.get_args(domain.Status):
        metrics.SAGAS.labels("orchestration", status).set(counts.get(status, 0))
    metrics.DEADLINES_OVERDUE.set(await store.overdue_count(conn, _now()))


service.samplers.append(sample)

# The union says which types the queue is bound to; the domain says which it understands.
if {model.TYPE for model in typing.get_args(Reply)} != set(domain.REPLY_TYPES):
    raise TypeError("Reply and domain.REPLY_TYPES name different types")
