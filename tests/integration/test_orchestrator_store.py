"""The orchestrator's saga rows on the real database: a batch's load and write, optimistic
concurrency, and the deadline watcher beside the handlers."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from contracts import (
    Money,
    OrderLine,
    OrderPlacedV2,
    PaymentCompleted,
    StockReservationFailed,
    StockReserved,
)
from tests.integration.support import Fleet, new_id
from workers.orchestrator import domain, handlers, store
from workers.orchestrator.domain import Recorded, Reply
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime.decision import after

pytestmark = pytest.mark.integration

SETTINGS = OrchestratorSettings(step_timeout_seconds=30.0, deadline_poll_seconds=1.0)
LINE = OrderLine(sku="A", quantity=1, unit_price=Money.of("1.00", "EUR"))
TOTAL = Money.of("1.00", "EUR")


def placed(order_id: str) -> OrderPlacedV2:
    return OrderPlacedV2(
        order_id=order_id,
        customer_id="c",
        items=[LINE],
        total=TOTAL,
        country="DE",
        saga="orchestration",
    )


def reserved(order_id: str) -> StockReserved:
    return StockReserved(
        order_id=order_id,
        items=[LINE],
        saga="orchestration",
        customer_id="c",
        total=TOTAL,
        country="DE",
    )


def paid(order_id: str) -> PaymentCompleted:
    return PaymentCompleted(
        order_id=order_id,
        payment_id=new_id(),
        amount=TOTAL,
        saga="orchestration",
        country="DE",
        items=[LINE],
    )


async def started(fleet: Fleet, order_id: str, *, ago: timedelta = timedelta()) -> Recorded:
    """The order's saga started (``ago`` in the past) and written; its change."""
    async with fleet.unit_of_work("orchestrator") as uow:
        sagas = await store.load_sagas(uow.conn, [placed(order_id)])
        assert sagas.by_order == {}
        decision = domain.start_saga(
            replace(sagas, now=sagas.now - ago), placed(order_id), settings=SETTINGS
        )
        await store.write_sagas(uow.conn, decision.changes)
    (change,) = decision.changes
    return change


async def step_log(fleet: Fleet, order_id: str) -> list[tuple[str, str, str]]:
    async with fleet.connection("orchestrator") as conn:
        return [(e["status"], e["step"], e["entry"]) for e in await store.step_log(conn, order_id)]


async def test_a_saga_written_from_a_stale_version_is_a_retryable_conflict(fleet: Fleet) -> None:
    order_id = new_id()
    start = await started(fleet, order_id)
    async with fleet.unit_of_work("orchestrator") as uow:
        loaded = await store.load_sagas(uow.conn, [reserved(order_id)])
        assert loaded.by_order == {order_id: replace(start.saga, version=1)}
        advanced = domain.advance_saga(loaded, reserved(order_id), settings=SETTINGS)
        await store.write_sagas(uow.conn, advanced.changes)
    # Decided on version 1, which is no longer what is stored: nothing of it is written.
    refused = StockReservationFailed(
        order_id=order_id, reason="late", saga="orchestration", customer_id="c"
    )
    stale = domain.advance_saga(loaded, refused, settings=SETTINGS)
    with pytest.raises(store.SagaConflict, match=order_id):
        async with fleet.unit_of_work("orchestrator") as uow:
            await store.write_sagas(uow.conn, stale.changes)
    async with fleet.connection("orchestrator") as conn:
        assert await store.find_saga(conn, order_id) == replace(advanced.changes[0].saga, version=2)
    assert [entry for _, _, entry in await step_log(fleet, order_id)] == [
        "started: reserve_stock",
        "reserve_stock done; next: charge_payment",
    ]


async def test_a_batch_writes_each_saga_once_as_it_ends_and_every_step_log_line(
    fleet: Fleet,
) -> None:
    order_id, other = new_id(), new_id()
    await started(fleet, order_id)
    await started(fleet, other)
    replies: list[Reply] = [reserved(order_id), reserved(other), reserved(order_id), paid(order_id)]
    async with fleet.unit_of_work("orchestrator") as uow:
        sagas = await store.load_sagas(uow.conn, replies)
        changes: list[Recorded] = []
        for reply in replies:  # as the runtime decides a batch: each sees those before it
            decision = domain.advance_saga(sagas, reply, settings=SETTINGS)
            sagas = after(sagas, decision.changes)
            changes += decision.changes
        await store.write_sagas(uow.conn, changes)
    async with fleet.connection("orchestrator") as conn:
        ended = await store.find_saga(conn, order_id)
        before = await store.summary(conn, other)
    assert ended == replace(sagas.by_order[order_id], version=2)  # two steps, one write
    assert ended.step == "create_shipment"
    assert await step_log(fleet, order_id) == [
        ("running", "reserve_stock", "started: reserve_stock"),
        ("running", "charge_payment", "reserve_stock done; next: charge_payment"),
        ("running", "charge_payment", "stock.reserved while waiting for charge_payment: ignored"),
        ("running", "create_shipment", "charge_payment done; next: create_shipment"),
    ]
    # A batch that changes nothing of a saga writes its step-log line and leaves its row.
    async with fleet.unit_of_work("orchestrator") as uow:
        sagas = await store.load_sagas(uow.conn, [reserved(other)])
        ignored = domain.advance_saga(sagas, reserved(other), settings=SETTINGS)
        await store.write_sagas(uow.conn, ignored.changes)
    async with fleet.connection("orchestrator") as conn:
        assert await store.summary(conn, other) == before
    assert (await step_log(fleet, other))[-1][2].endswith("ignored")


async def test_the_deadline_watcher_leaves_a_saga_a_batch_holds_then_compensates_it(
    fleet: Fleet,
) -> None:
    order_id = new_id()
    await started(fleet, order_id, ago=2 * timedelta(seconds=SETTINGS.step_timeout_seconds))
    pool = await fleet.store("orchestrator")
    async with fleet.transaction("orchestrator") as batch:
        held = await store.load_sagas(batch, [reserved(order_id)])
        await handlers.fire_due_deadlines(fleet.settings, SETTINGS, pool)
        async with fleet.connection("orchestrator") as conn:
            assert await store.find_saga(conn, order_id) == held.by_order[order_id]
    await handlers.fire_due_deadlines(fleet.settings, SETTINGS, pool)
    async with fleet.connection("orchestrator") as conn:
        saga = await store.find_saga(conn, order_id)
        sent = await conn.fetch(
            "SELECT type, correlation_id FROM outbox WHERE correlation_id = $1 ORDER BY id",
            order_id,
        )
    assert saga is not None and (saga.status, saga.step) == ("compensating", "reject_order")
    assert saga.reason == "reserve_stock timed out" and saga.version == 2
    # The timed-out step's undo, not waited for, then the rejection it waits for.
    assert [(row["type"], row["correlation_id"]) for row in sent] == [
        ("inventory.release_stock", order_id),
        ("order.reject_order", order_id),
    ]
    assert (await step_log(fleet, order_id))[-1] == (
        "compensating",
        "reject_order",
        "reserve_stock timed out; compensating: reject_order",
    )
