"""The outbox relay on the real servers: delivery, crashes between publish and mark,
one active relay per service with take-over, and transactions committing out of id order."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from contracts import StockReleased
from contracts.routing import commands_exchange, events_exchange
from db.unit_of_work import UnitOfWork
from tests.integration.support import Fleet, Seen, new_id, reserve_command, scalar, wait_for
from workers.inventory import store
from workers.runtime import catalog
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.relay import Relay

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stocked(fleet: Fleet) -> Fleet:
    async with fleet.unit_of_work("inventory") as uow:
        await store.seed(uow.conn, "relay-sku", 100_000)
    return fleet


async def emit(fleet: Fleet, *messages: object) -> list[str]:
    """Commit messages to the inventory's outbox as a CLI command would; their ids."""
    async with fleet.unit_of_work("inventory") as uow:
        envelopes = uow.send(messages)  # type: ignore[arg-type]
    return [envelope.message_id for envelope in envelopes]


async def unpublished(fleet: Fleet, message_id: str) -> bool:
    sql = "SELECT published_at IS NULL FROM outbox WHERE message_id = :id"
    return bool(await scalar(fleet.engine("inventory"), sql, id=message_id))


async def copies(seen: Seen, message_id: str, n: int) -> bool:
    return sum(message.message_id == message_id for message in seen) >= n


async def test_a_committed_message_reaches_its_consumer(stocked: Fleet) -> None:
    fleet = stocked
    order_id = new_id()
    async with fleet.tap(events_exchange(fleet.ns), "stock.reserved") as seen:
        async with fleet.worker(catalog.load("inventory")):
            [message_id] = await emit(fleet, reserve_command(order_id, ("relay-sku", 2)))
            # The command goes out through the relay, the handler reserves and emits
            # stock.reserved, which the relay publishes in turn.
            await wait_for(lambda: _any_for(seen, order_id))
    assert not await unpublished(fleet, message_id)
    taken = "SELECT -sum(delta) FROM stock_ledger WHERE order_id = :id"
    assert await scalar(fleet.engine("inventory"), taken, id=order_id) == 2


async def _any_for(seen: Seen, order_id: str) -> bool:
    return any(order_id in message.body.decode() for message in seen)


async def test_a_relay_killed_between_publish_and_mark_publishes_again_and_it_applies_once(
    stocked: Fleet,
) -> None:
    fleet = stocked
    order_id = new_id()
    async with (
        fleet.tap(commands_exchange(fleet.ns), "inventory.reserve_stock") as seen,
        fleet.worker(catalog.load("inventory"), with_relay=False),
    ):
        relay = await fleet.spawn("relay", "inventory", relay_fault_pause_after_publish=60)
        await relay.wait_for_line("relay: active")
        [message_id] = await emit(fleet, reserve_command(order_id, ("relay-sku", 3)))
        await relay.wait_for_line("pausing before mark")
        await wait_for(lambda: copies(seen, message_id, 1))
        await relay.kill()
        assert await unpublished(fleet, message_id)  # published, never marked

        again = await fleet.spawn("relay", "inventory")
        await wait_for(lambda: copies(seen, message_id, 2))
        await wait_for(lambda: _published(fleet, message_id))
        inbox = "SELECT count(*) FROM inbox WHERE message_id = :id"
        await wait_for(lambda: _no_ready(fleet, f"{fleet.ns}.inventory.reserve_stock"))
        assert await again.terminate() == 0
    engine = fleet.engine("inventory")
    assert await scalar(engine, inbox, id=message_id) == 1
    taken = "SELECT -sum(delta) FROM stock_ledger WHERE order_id = :id"
    assert await scalar(engine, taken, id=order_id) == 3  # applied once, not twice
    answers = (
        "SELECT count(*) FROM outbox WHERE type = 'stock.reserved'"
        " AND convert_from(body, 'UTF8') LIKE '%' || :id || '%'"
    )
    assert await scalar(engine, answers, id=order_id) == 1


async def _published(fleet: Fleet, message_id: str) -> bool:
    return not await unpublished(fleet, message_id)


async def _no_ready(fleet: Fleet, queue: str) -> bool:
    return await fleet.queue_depth(queue) == 0


async def test_only_one_of_two_relays_publishes_and_the_other_takes_over_when_it_dies(
    fleet: Fleet,
) -> None:
    async with fleet.tap(events_exchange(fleet.ns), "stock.released") as seen:
        first = await fleet.spawn("relay", "inventory")
        await first.wait_for_line("relay: active")
        second = await fleet.spawn("relay", "inventory")
        await second.wait_for_line("relay: standby")

        before = await emit(
            fleet, *(StockReleased(order_id=new_id(), saga="orchestration") for _ in range(50))
        )
        await wait_for(lambda: _all_published(fleet, before))
        await wait_for(lambda: _all_seen(seen, before))
        assert second.count("relay: active") == 0

        await first.kill()
        await second.wait_for_line("relay: active", timeout=15)
        after = await emit(
            fleet, *(StockReleased(order_id=new_id(), saga="orchestration") for _ in range(50))
        )
        await wait_for(lambda: _all_seen(seen, after))
        assert await second.terminate() == 0
    ids = [message.message_id for message in seen if message.message_id in set(before + after)]
    assert sorted(ids) == sorted(before + after)  # each exactly once


async def _all_published(fleet: Fleet, ids: list[str]) -> bool:
    sql = "SELECT count(*) FROM outbox WHERE message_id = ANY(:ids) AND published_at IS NOT NULL"
    return bool(await scalar(fleet.engine("inventory"), sql, ids=ids) == len(ids))


async def _all_seen(seen: Seen, ids: list[str]) -> bool:
    return {message.message_id for message in seen} >= set(ids)


async def test_transactions_that_commit_out_of_id_order_skip_no_row(fleet: Fleet) -> None:
    publisher = await ConfirmedPublisher.connect(fleet.settings.amqp_url)
    stop = asyncio.Event()
    relay = Relay(fleet.settings, "inventory", publisher)
    relay_task = asyncio.create_task(relay.run(stop))
    try:
        async with fleet.tap(events_exchange(fleet.ns), "stock.released") as seen:
            await wait_for(lambda: _true(relay.active))
            # The slow transaction takes the lower id and commits last.
            async with fleet.connection("inventory") as slow_conn:
                slow_tx = slow_conn.transaction()
                await slow_tx.start()
                store = await fleet.store("inventory")
                slow = UnitOfWork(store, slow_conn, producer="tests", namespace=fleet.ns)
                [slow_id] = slow.send([StockReleased(order_id=new_id(), saga="orchestration")])
                await slow.flush()
                [fast_id] = await emit(
                    fleet, StockReleased(order_id=new_id(), saga="orchestration")
                )
                await wait_for(lambda: _all_seen(seen, [fast_id]))
                # The relay went past the uncommitted lower id without waiting for it...
                assert slow_id.message_id not in {message.message_id for message in seen}
                await slow_tx.commit()
            # ...and still publishes it once it commits.
            await wait_for(lambda: _all_seen(seen, [slow_id.message_id]))
        ids = await _outbox_ids(fleet, [slow_id.message_id, fast_id])
        assert ids[slow_id.message_id] < ids[fast_id]
    finally:
        stop.set()
        await relay_task
        await publisher.close()


async def _true(value: bool) -> bool:
    return value


async def _outbox_ids(fleet: Fleet, message_ids: list[str]) -> dict[str, int]:
    async with fleet.engine("inventory").connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT message_id, id FROM outbox WHERE message_id = ANY(:ids)"),
            {"ids": message_ids},
        )
        return {message_id: id_ for message_id, id_ in rows}


async def test_housekeeping_deletes_published_rows_and_expired_inbox_entries(fleet: Fleet) -> None:
    engine = fleet.engine("inventory")
    [published_id] = await emit(fleet, StockReleased(order_id=new_id(), saga="orchestration"))
    old_inbox, fresh_inbox = new_id(), new_id()
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO inbox (consumer, message_id, type, received_at) VALUES"
                " ('tests.housekeeping', :old, 'x', now() - interval '2 days'),"
                " ('tests.housekeeping', :fresh, 'x', now())"
            ),
            {"old": old_inbox, "fresh": fresh_inbox},
        )
    settings = fleet.settings.model_copy(
        update={"outbox_retention_seconds": 0.0, "inbox_retention_seconds": 86_400.0}
    )
    publisher = await ConfirmedPublisher.connect(settings.amqp_url)
    stop = asyncio.Event()
    relay_task = asyncio.create_task(Relay(settings, "inventory", publisher).run(stop))
    try:
        # The relay publishes the row, then its first housekeeping round deletes it.
        await wait_for(lambda: _gone(fleet, "outbox", published_id))
        await wait_for(lambda: _gone(fleet, "inbox", old_inbox))
    finally:
        stop.set()
        await relay_task
        await publisher.close()
    assert not await _gone(fleet, "inbox", fresh_inbox)


async def _gone(fleet: Fleet, table: str, message_id: str) -> bool:
    sql = f"SELECT count(*) FROM {table} WHERE message_id = :id"
    return bool(await scalar(fleet.engine("inventory"), sql, id=message_id) == 0)
