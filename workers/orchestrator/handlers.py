"""The orchestrator's wiring: start a saga on order.placed, advance it on every reply, act
on an operator's retry or compensation, each a decision of ``domain`` on the sagas
``store.load_sagas`` reads, written back by ``store.write_sagas``; and watch deadlines in
the background (they live in the database, so they survive restarts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import asyncpg
from aio_pika.abc import AbstractConnection

from contracts import not_choreography
from db.store import Store
from db.unit_of_work import unit_of_work
from workers.orchestrator import domain, store
from workers.orchestrator.domain import Recorded
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime import metrics, tracing
from workers.runtime.outages import OutOfReach
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

service.handler(
    domain.start_saga, load=store.load_sagas, write=store.write_sagas, when=not_choreography
)
service.handler(
    domain.advance_saga, load=store.load_sagas, write=store.write_sagas, when=not_choreography
)
service.handler(
    domain.operator_request, load=store.load_sagas, write=store.write_sagas, when=not_choreography
)


async def watch_deadlines(
    settings: Settings,
    section: OrchestratorSettings,
    database: Store,
    stop: asyncio.Event,
    out_of_reach: OutOfReach,
) -> None:
    """Every ``deadline_poll_seconds``, act on the sagas whose step deadline passed; a
    step of a service out of reach (its breaker tripped: the worker's ``out_of_reach``
    reads the trip markers on the broker) has its deadline extended instead."""
    grace = timedelta(seconds=section.step_timeout_seconds)
    while not stop.is_set():
        try:
            outages = await out_of_reach.services(set(domain.SERVICE_OF.values()), grace=grace)
            await fire_due_deadlines(settings, section, database, out_of_reach=outages)
        except Exception as error:  # the database is down: try again on the next round
            log.warning("deadline watcher: %s: %s", type(error).__name__, error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=section.deadline_poll_seconds)


async def fire_due_deadlines(
    settings: Settings,
    section: OrchestratorSettings,
    database: Store,
    limit: int = 100,
    *,
    out_of_reach: Mapping[str, str] | None = None,
) -> int:
    """Decide about the sagas past their deadline, in one transaction: load them, decide
    each, write, and the commands to the outbox. Their row locks serialise the watcher with
    the handlers, whose load locks the same rows (after the order's lock): a handler waits
    for the watcher there, and the watcher, skipping locked rows, never waits for a handler.
    (Taking the order's lock too could deadlock: a handler holding it waits for the row.)"""
    async with unit_of_work(database, producer=service.name, namespace=settings.namespace) as uow:
        sagas = await store.load_due(uow.conn, datetime.now(UTC), limit)
        changes: list[Recorded] = []
        extended: Counter[str] = Counter()  # by the service out of reach
        for order_id in sagas.by_order:
            with tracing.span(
                f"deadline {order_id}",
                attributes={
                    "fleet.order_id": order_id,
                    "messaging.message.conversation_id": order_id,
                },
            ):
                decision = domain.deadline_passed(
                    sagas, order_id, settings=section, out_of_reach=out_of_reach
                )
                if decision.send:
                    log.warning("%s", decision.note)
                else:  # extended: the step's service is out of reach; said once below
                    log.debug("%s", decision.note)
                    extended[domain.SERVICE_OF[sagas.by_order[order_id].step]] += 1
                changes += decision.changes
                uow.send(decision.send)  # in the span: the commands continue its trace
        if changes:
            await store.write_sagas(uow.conn, changes)
    for name, count in extended.items():
        why = out_of_reach[name] if out_of_reach else "out of reach"
        log.info("%d saga deadline(s) extended: %s %s", count, name, why)
    return len(sagas.by_order)


service.background.append(watch_deadlines)


async def sample(settings: Settings, conn: asyncpg.Connection, broker: AbstractConnection) -> None:
    """The metrics sampler's gauges of the orchestrator: its sagas by state, and those
    still waiting past their deadline."""
    counts = await store.counts_by_status(conn)
    for status in typing.get_args(domain.Status):
        metrics.SAGAS.labels("orchestration", status).set(counts.get(status, 0))
    metrics.DEADLINES_OVERDUE.set(await store.overdue_count(conn, datetime.now(UTC)))


service.samplers.append(sample)
