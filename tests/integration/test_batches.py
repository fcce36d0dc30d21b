"""Deliveries that share one transaction (``FLEET_BATCH_SIZE``), on the real servers: a
message that fails in a batch takes its own path, its neighbours are applied exactly once;
a duplicate inside a batch has one effect; a batch in flight when its worker is SIGKILLed is
redelivered and applied once; a batch applies one stream's messages in their order.

The messages of a test are queued before its worker starts, with a batch as large as them
and a long wait for it to fill, so that they meet in one batch; the consumer's counters say
that they did (a fallback when one of them failed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence

import pytest

from contracts import (
    Message,
    Money,
    OrderConfirmed,
    OrderLine,
    OrderPlacedV2,
    PaymentCompleted,
    StockReserved,
)
from db import inbox
from tests.integration import probes
from tests.integration.support import Fleet, new_id, outgoing, reserve_command, scalar, wait_for
from workers.inventory import store as inventory_store
from workers.runtime import catalog
from workers.runtime.consumer import Outcome
from workers.runtime.settings import Settings
from workers.runtime.worker import Worker

pytestmark = pytest.mark.integration

BATCH = 10


def batched(fleet: Fleet) -> Settings:
    """Settings under which a test's queued messages meet in one batch."""
    return fleet.settings.model_copy(
        update={"batch_size": BATCH, "batch_wait_ms": 500.0, "prefetch": 2 * BATCH}
    )


def probe_queue(fleet: Fleet) -> str:
    return f"{fleet.ns}.inventory.probe_effects"


@pytest.fixture(scope="module", autouse=True)
async def declared(fleet: Fleet) -> None:
    """The probe's queues exist before a test queues messages in them (a worker declares
    its queues when it starts)."""
    async with fleet.worker(probes.probe, with_relay=False):
        pass


async def queue_all(fleet: Fleet, queue: str, messages: Sequence[Message]) -> list[str]:
    """``messages`` in ``queue`` (default exchange), their message ids in order."""
    sent = [outgoing(message, queue=queue) for message in messages]
    async with fleet.publisher() as publisher:
        await publisher.publish_many(sent)
    return [message.message_id for message in sent if message.message_id]


async def effects(fleet: Fleet, order_id: str) -> tuple[int, int]:
    """(units the probe seeded for the order, order.rejected rows it emitted for it)."""
    engine = fleet.engine("inventory")
    seeded = await scalar(
        engine,
        "SELECT coalesce(sum(available), 0) FROM stock WHERE sku = :sku",
        sku=probes.probe_sku(order_id),
    )
    emitted = await scalar(
        engine,
        "SELECT count(*) FROM outbox WHERE type = 'order.rejected'"
        " AND convert_from(body, 'UTF8')::jsonb->>'order_id' = :id",
        id=order_id,
    )
    return int(seeded), int(emitted)


async def test_a_poison_message_in_a_batch_is_dead_lettered_and_its_neighbours_applied_once(
    fleet: Fleet,
) -> None:
    before, poison, after = new_id(), new_id(), new_id()
    probes.script.permanent.add(poison)
    await queue_all(
        fleet, probe_queue(fleet), [OrderConfirmed(order_id=o) for o in (before, poison, after)]
    )
    async with fleet.worker(probes.probe, with_relay=False, settings=batched(fleet)) as worker:
        await wait_for(lambda: fleet.dead_letter(probe_queue(fleet), poison))
        await wait_for(lambda: _applied(fleet, before, after))
        assert worker.consumer is not None
        assert worker.consumer.fallbacks >= 1  # they met in a batch, which fell back
    assert await effects(fleet, before) == (1, 1)
    assert await effects(fleet, after) == (1, 1)
    assert await effects(fleet, poison) == (0, 0)
    letter = await fleet.dead_letter(probe_queue(fleet), poison)
    assert letter is not None and letter.headers["x-error-type"] == "PermanentError"
    assert letter.headers["x-attempts"] == 1  # failing in a batch is one attempt, not two
    assert probes.script.calls[poison] == 1


async def _applied(fleet: Fleet, *order_ids: str) -> bool:
    for order_id in order_ids:
        if (await effects(fleet, order_id))[0] != 1:
            return False
    return True


async def test_a_transient_failure_in_a_batch_retries_that_message_alone(fleet: Fleet) -> None:
    before, shaky, after = new_id(), new_id(), new_id()
    probes.script.transient_failures[shaky] = 1
    await queue_all(
        fleet, probe_queue(fleet), [OrderConfirmed(order_id=o) for o in (before, shaky, after)]
    )
    async with fleet.worker(probes.probe, with_relay=False, settings=batched(fleet)) as worker:
        await wait_for(lambda: _applied(fleet, before, shaky, after), timeout=30)
        assert worker.consumer is not None
        assert worker.consumer.fallbacks >= 1
        # Tried again at once, alone (the batch may have been the cause): no delayed retry.
        assert worker.consumer.outcomes["probe_effects", Outcome.RETRY] == 0
    for order_id in (before, shaky, after):
        assert await effects(fleet, order_id) == (1, 1), order_id
    assert probes.script.calls[shaky] == 2  # the failed try in the batch, and the one alone
    assert await fleet.dead_letter(probe_queue(fleet), shaky) is None


async def test_a_duplicate_inside_one_batch_has_one_effect(fleet: Fleet) -> None:
    order_id, other = new_id(), new_id()
    message = outgoing(OrderConfirmed(order_id=order_id), queue=probe_queue(fleet))
    async with fleet.publisher() as publisher:
        await publisher.publish_many([message, message, message])
    await queue_all(fleet, probe_queue(fleet), [OrderConfirmed(order_id=other)])
    async with fleet.worker(probes.probe, with_relay=False, settings=batched(fleet)) as worker:
        await wait_for(lambda: _applied(fleet, order_id, other))
        await wait_for(lambda: fleet.queue_empty(probe_queue(fleet)))
        assert worker.consumer is not None
        assert worker.consumer.batched >= 4  # all four in one transaction
        assert worker.consumer.outcomes["probe_effects", Outcome.DUPLICATE] == 2
    assert await effects(fleet, order_id) == (1, 1)
    assert await effects(fleet, other) == (1, 1)


async def test_a_batch_in_flight_when_its_worker_is_killed_is_redelivered_and_applied_once(
    fleet: Fleet,
) -> None:
    async with fleet.unit_of_work("inventory") as uow:
        await inventory_store.seed(uow.conn, "batch-sku", 10_000)
    queue = f"{fleet.ns}.inventory.reserve_stock"
    orders = [new_id() for _ in range(300)]
    await queue_all(
        fleet, queue, [reserve_command(order_id, ("batch-sku", 1)) for order_id in orders]
    )
    engine = fleet.engine("inventory")
    applied = "SELECT count(*) FROM reservations WHERE order_id = ANY(:ids)"

    worker = await fleet.spawn(
        "worker", "inventory", "--no-relay", prefetch=50, batch_size=25, batch_wait_ms=20
    )
    await wait_for(lambda: _at_least(scalar(engine, applied, ids=orders), 25), interval=0.01)
    await worker.kill()
    done = int(await scalar(engine, applied, ids=orders))
    assert done < len(orders), "the worker finished before it could be killed"

    restarted = await fleet.spawn("worker", "inventory", "--no-relay", batch_size=25)
    await wait_for(lambda: _at_least(scalar(engine, applied, ids=orders), len(orders)), timeout=60)
    await wait_for(lambda: fleet.queue_empty(queue))
    assert await restarted.terminate() == 0
    moved = "SELECT count(*) FROM stock_ledger WHERE order_id = ANY(:ids)"
    assert await scalar(engine, moved, ids=orders) == len(orders)
    twice = await scalar(
        engine,
        "SELECT count(*) FROM (SELECT order_id FROM stock_ledger WHERE order_id = ANY(:ids)"
        " GROUP BY order_id HAVING count(*) > 1) AS twice",
        ids=orders,
    )
    assert twice == 0


async def _at_least(value: Awaitable[object], n: int) -> bool:
    return int(str(await value)) >= n


@pytest.fixture
async def orchestrator(fleet: Fleet) -> AsyncIterator[Worker]:
    """An orchestrator with nothing left in its queues from earlier tests."""
    await fleet.drain(catalog.load("orchestrator"))
    settings = batched(fleet)
    async with fleet.worker(catalog.load("orchestrator"), with_relay=False, settings=settings) as w:
        yield w


async def test_a_batch_applies_one_sagas_replies_in_their_order(
    fleet: Fleet, orchestrator: Worker
) -> None:
    order_id = new_id()
    line = OrderLine(sku="S", quantity=1, unit_price=Money.of("3.00", "EUR"))
    total = Money.of("3.00", "EUR")
    placed = OrderPlacedV2(
        order_id=order_id,
        customer_id="c",
        items=[line],
        total=total,
        country="DE",
        saga="orchestration",
    )
    await queue_all(fleet, f"{fleet.ns}.orchestrator.start_saga", [placed])
    step = "SELECT step FROM sagas WHERE order_id = :id"
    await wait_for(
        lambda: _equals(scalar(fleet.engine("orchestrator"), step, id=order_id), "reserve_stock")
    )
    replies = [
        StockReserved(
            order_id=order_id,
            items=[line],
            saga="orchestration",
            customer_id="c",
            total=total,
            country="DE",
        ),
        PaymentCompleted(
            order_id=order_id,
            payment_id=new_id(),
            amount=total,
            saga="orchestration",
            country="DE",
            items=[line],
        ),
    ]
    await queue_all(fleet, f"{fleet.ns}.orchestrator.advance_saga", replies)
    # In order, the second reply finds the saga waiting for it: two steps done.
    await wait_for(
        lambda: _equals(scalar(fleet.engine("orchestrator"), step, id=order_id), "create_shipment")
    )
    assert orchestrator.consumer is not None
    assert orchestrator.consumer.outcomes["advance_saga", Outcome.APPLIED] == 2


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_the_locks_a_batch_takes_first_hold_off_a_handler_of_the_same_order(
    fleet: Fleet,
) -> None:
    """A batch locks its messages' orders in its inbox statement, before any decision; a
    handler deciding about one of those orders elsewhere waits until the batch commits."""
    first, second = new_id(), new_id()
    message_id = new_id()
    async with fleet.connection("inventory") as batch_conn, fleet.unit_of_work("inventory") as uow:
        batch = batch_conn.transaction()
        await batch.start()
        try:
            fresh = await inbox.record_locked(
                batch_conn, "test.locks", {message_id: "test.type"}, {first, second}
            )
            assert fresh == {message_id}
            waiting = asyncio.create_task(uow.lock(second))
            done, _ = await asyncio.wait({waiting}, timeout=0.5)
            assert not done, "the handler's lock went through while the batch held it"
        finally:
            await batch.commit()
        await asyncio.wait_for(waiting, timeout=10)
