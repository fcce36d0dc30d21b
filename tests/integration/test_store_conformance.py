"""One test case for the store port, run against every engine (``db.store``): PostgreSQL and
MariaDB must keep the same promises, on the real servers.

Each test gets the payment service's database of a namespace of its engine: the session's
namespace for PostgreSQL, one with ``FLEET_ENGINES={"payment": "mariadb"}`` for MariaDB.
Only what the port offers is used, except where a test must age rows or kill a session,
which each engine does in its own words (``Engine``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from contracts import Send, StockReleased
from contracts.outgoing import OutgoingMessage
from contracts.routing import events_exchange
from db.adapters import open_relay_session
from db.mariadb import MariaConnection
from db.store import RelaySession, Store
from db.unit_of_work import outgoing
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.support import Fleet, new_id, wait_for
from workers.runtime.errors import is_transient
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.relay import Relay

pytestmark = pytest.mark.integration

SERVICE = "payment"  # its migrations make the messaging tables on either engine


@pytest.fixture(scope="module")
async def mariadb_fleet(server_urls: tuple[str, str]) -> AsyncIterator[Fleet]:
    settings = namespace_settings(server_urls, engines={SERVICE: "mariadb"})
    async with namespaced_fleet(settings) as fleet:
        yield fleet


@dataclass
class Engine:
    """A service's database on one engine, and the few things only its own SQL can do."""

    name: str
    fleet: Fleet
    store: Store

    @property
    def url(self) -> str:
        return self.fleet.settings.database_url(SERVICE)

    async def execute(self, postgresql: str, mariadb: str, *args: Any) -> Any:
        async with self.store.connection() as conn:
            if isinstance(conn, MariaConnection):
                return await conn.fetch(mariadb, args)
            return await conn.fetch(postgresql, *args)

    async def count(self, table: str, where: str = "TRUE") -> int:
        rows = await self.execute(
            f"SELECT count(*) AS n FROM {table} WHERE {where}",
            f"SELECT count(*) AS n FROM {table} WHERE {where}",
        )
        return int(rows[0]["n"])

    async def age(self, table: str, column: str, message_id: str, seconds: int) -> None:
        """Move a row's ``column`` ``seconds`` into the past."""
        await self.execute(
            f"UPDATE {table} SET {column} = now() - make_interval(secs => $2)"
            " WHERE message_id = $1",
            f"UPDATE {table} SET {column} = NOW(6) - INTERVAL %s SECOND WHERE message_id = %s",
            *((message_id, seconds) if self.name == "postgresql" else (seconds, message_id)),
        )

    def message(self, order_id: str, note: int = 0) -> OutgoingMessage:
        return message(self.fleet.ns, order_id, note)


@pytest.fixture(params=["postgresql", "mariadb"])
async def engine(request: pytest.FixtureRequest, fleet: Fleet, mariadb_fleet: Fleet) -> Engine:
    owner = mariadb_fleet if request.param == "mariadb" else fleet
    store = await owner.store(SERVICE)
    assert store.engine == request.param
    return Engine(request.param, owner, store)


def message(namespace: str, order_id: str, note: int = 0) -> OutgoingMessage:
    """A message for the outbox, about ``order_id``, as a handler would send it."""
    sent = Send(StockReleased(order_id=order_id, saga="orchestration"))
    made = outgoing(sent, producer="conformance", namespace=namespace, cause=None)
    return OutgoingMessage(
        exchange=made.exchange,
        routing_key=made.routing_key,
        body=made.body,
        message_id=made.message_id,
        type=made.type,
        correlation_id=made.correlation_id,
        timestamp=made.timestamp,
        app_id=made.app_id,
        headers={**made.headers, "x-note": note},
    )


@asynccontextmanager
async def relay_running(fleet: Fleet) -> AsyncIterator[Relay]:
    """A relay of the service's database in this process, as a worker runs it."""
    publisher = await ConfirmedPublisher.connect(fleet.settings.amqp_url)
    stop = asyncio.Event()
    relay = Relay(fleet.settings, SERVICE, publisher)
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await task
        await publisher.close()


async def retried(work: Callable[[], Awaitable[Any]]) -> Any:
    """``work`` tried again after a transient error, as the runtime's retries would."""
    for _ in range(20):
        try:
            return await work()
        except Exception as error:
            if not is_transient(error):
                raise
            await asyncio.sleep(random.uniform(0.01, 0.05))
    raise AssertionError("still failing after 20 tries")


async def test_the_same_message_id_from_eight_concurrent_tasks_is_applied_once(
    engine: Engine,
) -> None:
    store, message_id, consumer = engine.store, new_id(), f"conformance.{new_id()}"
    applied: list[int] = []

    async def deliver(task: int) -> None:
        async def once() -> None:
            async with store.transaction() as conn:
                fresh = await store.record_locked(conn, consumer, {message_id: "t"}, [])
                if message_id in fresh:
                    await store.append(conn, [engine.message(new_id(), note=task)])
                    applied.append(task)

        await retried(once)

    await asyncio.gather(*(deliver(task) for task in range(8)))
    assert len(applied) == 1
    assert await engine.count("inbox", f"consumer = '{consumer}'") == 1


async def test_the_inbox_tells_which_ids_it_holds_per_consumer(engine: Engine) -> None:
    store, held, other = engine.store, new_id(), new_id()
    async with store.transaction() as conn:
        assert await store.record_locked(conn, "conformance.a", {held: "t"}, []) == {held}
    async with store.connection() as conn:
        assert await store.inbox_holds(conn, "conformance.a", [held, other]) == {held}
        assert await store.inbox_holds(conn, "conformance.b", [held]) == set()
        assert await store.inbox_holds(conn, "conformance.a", []) == set()


async def test_an_order_lock_makes_a_second_transaction_on_the_order_wait_for_the_first(
    engine: Engine,
) -> None:
    store, order_id = engine.store, new_id()
    events: list[str] = []
    first_holds = asyncio.Event()

    async def first() -> None:
        async with store.transaction() as conn:
            await store.record_locked(conn, "conformance.first", {new_id(): "t"}, [order_id])
            first_holds.set()
            await asyncio.sleep(0.5)
            events.append("first commits")

    async def second() -> None:
        await first_holds.wait()
        async with store.transaction() as conn:
            await store.lock_order(conn, order_id)
            events.append("second has the lock")

    await asyncio.gather(first(), second())
    assert events == ["first commits", "second has the lock"]


async def test_batches_locking_overlapping_orders_in_any_order_never_deadlock(
    engine: Engine,
) -> None:
    store, orders = engine.store, [new_id() for _ in range(5)]
    done: list[int] = []

    async def batch(task: int) -> None:
        for _ in range(10):
            keys = random.sample(orders, 3)  # given in any order; the store sorts them
            async with store.transaction() as conn:
                await store.record_locked(conn, f"conformance.{task}", {new_id(): "t"}, keys)
                await asyncio.sleep(0.005)
        done.append(task)

    # No retry: a deadlock would raise here and fail the test.
    await asyncio.wait_for(asyncio.gather(*(batch(task) for task in range(6))), timeout=60)
    assert sorted(done) == list(range(6))


async def test_a_rolled_back_transaction_leaves_no_inbox_and_no_outbox_row(
    engine: Engine,
) -> None:
    store, message_id, sent = engine.store, new_id(), engine.message(new_id())

    class Refused(Exception):
        pass

    with pytest.raises(Refused):
        async with store.transaction() as conn:
            fresh = await store.record_locked(conn, "conformance.rollback", {message_id: "t"}, [])
            assert fresh == {message_id}
            await store.append(conn, [sent])
            raise Refused
    assert await engine.count("inbox", f"message_id = '{message_id}'") == 0
    assert await engine.count("outbox", f"message_id = '{sent.message_id}'") == 0


async def test_retention_deletes_only_what_it_should(engine: Engine) -> None:
    store = engine.store
    old_published, new_published, old_unpublished = (engine.message(new_id()) for _ in range(3))
    old_entry, new_entry = new_id(), new_id()
    async with store.transaction() as conn:
        await store.append(conn, [old_published, new_published, old_unpublished])
        await store.record_locked(
            conn, "conformance.retention", {old_entry: "t", new_entry: "t"}, []
        )
    for sent in (old_published, new_published):
        await engine.age("outbox", "published_at", str(sent.message_id), 0)
    await engine.age("outbox", "published_at", str(old_published.message_id), 7200)
    await engine.age("outbox", "occurred_at", str(old_unpublished.message_id), 7200)
    await engine.age("inbox", "received_at", old_entry, 7200)

    session = await open_relay_session(engine.url)
    try:
        await session.housekeeping(outbox_seconds=3600, inbox_seconds=3600)
    finally:
        await session.close()

    def where(message_id: str | None) -> str:
        return f"message_id = '{message_id}'"

    assert await engine.count("outbox", where(old_published.message_id)) == 0
    assert await engine.count("outbox", where(new_published.message_id)) == 1
    assert await engine.count("outbox", where(old_unpublished.message_id)) == 1
    assert await engine.count("inbox", where(old_entry)) == 0
    assert await engine.count("inbox", where(new_entry)) == 1


async def test_each_outbox_row_is_published_once_in_order_per_aggregate(engine: Engine) -> None:
    store, fleet = engine.store, engine.fleet
    orders = [new_id() for _ in range(3)]
    sent: dict[str, list[str]] = {order_id: [] for order_id in orders}

    async def writer(order_id: str) -> None:
        for note in range(20):
            one = engine.message(order_id, note)
            async with store.transaction() as conn:
                await store.lock_order(conn, order_id)
                await store.append(conn, [one])
            sent[order_id].append(str(one.message_id))

    async with relay_running(fleet), fleet.tap(events_exchange(fleet.ns), "stock.released") as seen:
        await asyncio.gather(*(writer(order_id) for order_id in orders))
        everything = {message_id for ids in sent.values() for message_id in ids}

        async def all_seen() -> bool:
            return everything <= {m.message_id for m in seen}

        await wait_for(all_seen, timeout=30)
        await asyncio.sleep(1)  # time for a second copy, if the relay sent one
    received = [m.message_id for m in seen if m.message_id in everything]
    assert len(received) == len(everything)  # once each
    for order_id, ids in sent.items():
        assert [m for m in received if m in set(ids)] == ids, order_id


async def test_a_row_committed_after_a_higher_id_was_published_is_not_skipped(
    engine: Engine,
) -> None:
    store, fleet = engine.store, engine.fleet
    slow, fast = engine.message(new_id()), engine.message(new_id())
    async with relay_running(fleet), fleet.tap(events_exchange(fleet.ns), "stock.released") as seen:

        def seen_ids() -> set[str | None]:
            return {m.message_id for m in seen}

        async def seen_fast() -> bool:
            return fast.message_id in seen_ids()

        async def seen_slow() -> bool:
            return slow.message_id in seen_ids()

        async with store.transaction() as slow_conn:
            await store.append(slow_conn, [slow])  # the lower id, committed last
            async with store.transaction() as conn:
                await store.append(conn, [fast])
            await wait_for(seen_fast, timeout=30)
            # The relay went past the uncommitted lower id without waiting for it...
            assert slow.message_id not in seen_ids()
        # ...and publishes it once it commits.
        await wait_for(seen_slow, timeout=30)


async def test_a_relay_whose_lock_connection_is_killed_is_replaced(engine: Engine) -> None:
    first = await open_relay_session(engine.url)
    second = await open_relay_session(engine.url)
    try:
        assert await first.try_lead()
        assert await first.still_leading()
        assert not await second.try_lead()
        async with engine.store.connection() as conn:
            assert await engine.store.relay_active(conn)

        await kill_session_of(engine, first)

        async def second_leads() -> bool:
            return await second.try_lead()

        await wait_for(second_leads, timeout=10)
        assert not await leads(first)
        assert await second.still_leading()
    finally:
        for session in (first, second):
            await close_quietly(session)


async def leads(session: RelaySession) -> bool:
    """Whether ``session`` may still publish: a connection that was killed may not."""
    try:
        return await session.still_leading()
    except Exception:
        return False


async def kill_session_of(engine: Engine, session: RelaySession) -> None:
    """End ``session``'s connection from the server's side, as an operator or a proxy
    would: its lock goes with it."""
    own_id = await session_id(session)
    async with engine.store.connection() as conn:
        if isinstance(conn, MariaConnection):
            await conn.execute("KILL CONNECTION %s", [own_id])
        else:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", own_id)


async def session_id(session: RelaySession) -> int:
    conn: Any = session.conn  # type: ignore[attr-defined]
    if isinstance(conn, MariaConnection):
        return int(await conn.fetchval("SELECT CONNECTION_ID()"))
    return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def close_quietly(session: RelaySession) -> None:
    try:
        await session.close()
    except Exception:  # killed already
        pass
