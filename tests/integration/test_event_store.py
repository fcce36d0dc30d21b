"""The event store on the real PostgreSQL (the order's database): appends, optimistic
concurrency between real transactions, upcasting on load, snapshots."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from contracts import (
    Money,
    OrderConfirmed,
    OrderPlacedV2,
    OrderRejected,
    UnknownContractVersion,
)
from db import event_store
from db.event_store import ConcurrencyConflict
from tests.integration.support import Fleet, new_id, wait_for
from workers.runtime.errors import is_transient

pytestmark = pytest.mark.integration


ORDER = "order"  # the service whose database holds an event store


def confirmed(n: int) -> list[OrderConfirmed]:
    """Any registered events do for the store; it knows nothing of orders."""
    return [OrderConfirmed(order_id=new_id()) for _ in range(n)]


async def versions(fleet: Fleet, stream_id: str) -> list[int]:
    async with fleet.connection(ORDER) as conn:
        rows = await conn.fetch(
            "SELECT version FROM events WHERE stream_id = $1 ORDER BY version", stream_id
        )
        return [row["version"] for row in rows]


async def test_appended_events_load_back_in_order_with_their_metadata(fleet: Fleet) -> None:
    stream = new_id()
    first, second = confirmed(2)
    third = OrderRejected(order_id=new_id(), reason="why not")
    meta = {"correlation_id": "c-1", "causation_id": "m-0", "message_id": "m-1"}
    async with fleet.transaction(ORDER) as conn:
        assert await event_store.current_version(conn, stream) == 0
        assert not await event_store.stream_exists(conn, stream)
        assert await event_store.append(conn, stream, 0, [first, second], meta) == 2
        assert await event_store.append(conn, stream, 2, [third], [{"message_id": "m-3"}]) == 3
    async with fleet.connection(ORDER) as conn:
        loaded = await event_store.load(conn, stream)
        assert await event_store.current_version(conn, stream) == 3
        assert await event_store.stream_exists(conn, stream)
        assert [e.version for e in await event_store.load(conn, stream, after_version=2)] == [3]
    assert [e.version for e in loaded] == [1, 2, 3]
    assert [e.message for e in loaded] == [first, second, third]
    assert [(e.type, e.contract_version) for e in loaded] == [
        ("order.confirmed", OrderConfirmed.VERSION),
        ("order.confirmed", OrderConfirmed.VERSION),
        ("order.rejected", OrderRejected.VERSION),
    ]
    assert loaded[0].metadata == meta == loaded[1].metadata
    assert loaded[2].metadata == {"message_id": "m-3"}
    assert loaded[0].recorded_at.tzinfo is not None
    positions = [e.global_position for e in loaded]
    assert positions == sorted(positions) and len(set(positions)) == 3


async def test_appending_after_a_version_that_moved_on_is_a_conflict(fleet: Fleet) -> None:
    stream = new_id()
    async with fleet.transaction(ORDER) as conn:
        await event_store.append(conn, stream, 0, confirmed(2))
    with pytest.raises(ConcurrencyConflict) as raised:
        async with fleet.transaction(ORDER) as conn:
            await event_store.append(conn, stream, 1, confirmed(1))
    assert raised.value.stream_id == stream and raised.value.expected_version == 1
    assert is_transient(raised.value)
    assert await versions(fleet, stream) == [1, 2]


async def _waiting_for_a_lock(fleet: Fleet, n: int) -> bool:
    """At least ``n`` sessions in the order database wait for a lock (a row's transaction)."""
    async with fleet.connection(ORDER) as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    return int(count or 0) >= n


async def test_two_transactions_appending_at_the_same_version_one_commits_one_conflicts(
    fleet: Fleet,
) -> None:
    stream = new_id()
    async with fleet.transaction(ORDER) as conn:
        await event_store.append(conn, stream, 0, confirmed(1))
    winner_events, loser_events = confirmed(2), confirmed(1)

    async with fleet.connection(ORDER) as first, fleet.connection(ORDER) as second:
        first_tx, second_tx = first.transaction(), second.transaction()
        await first_tx.start()
        await second_tx.start()
        # Both decided on version 1.
        assert await event_store.append(first, stream, 1, winner_events) == 3

        async def append_second(conn: asyncpg.Connection) -> int:
            return await event_store.append(conn, stream, 1, loser_events)

        racing = asyncio.create_task(append_second(second))
        # The second insert waits on the first's uncommitted row for version 2 ...
        await wait_for(lambda: _waiting_for_a_lock(fleet, 1))
        assert not racing.done()
        await first_tx.commit()
        # ... and loses as soon as the first commits.
        with pytest.raises(ConcurrencyConflict):
            await racing
        await second_tx.rollback()

    async with fleet.connection(ORDER) as conn:
        stored = await event_store.load(conn, stream)
    assert [e.version for e in stored] == [1, 2, 3]
    assert [e.message for e in stored][1:] == winner_events


async def test_when_the_first_writer_rolls_back_the_waiting_one_takes_the_version(
    fleet: Fleet,
) -> None:
    stream = new_id()
    events = confirmed(1)
    async with fleet.connection(ORDER) as first, fleet.connection(ORDER) as second:
        first_tx, second_tx = first.transaction(), second.transaction()
        await first_tx.start()
        await event_store.append(first, stream, 0, confirmed(1))
        await second_tx.start()
        racing = asyncio.create_task(event_store.append(second, stream, 0, events))
        await wait_for(lambda: _waiting_for_a_lock(fleet, 1))
        await first_tx.rollback()
        assert await racing == 1
        await second_tx.commit()
    async with fleet.connection(ORDER) as conn:
        assert [e.message for e in await event_store.load(conn, stream)] == events


async def insert_raw(
    fleet: Fleet, stream: str, version: int, type_: str, contract_version: int, data: Any
) -> None:
    async with fleet.transaction(ORDER) as conn:
        await conn.execute(
            "INSERT INTO events (stream_id, version, type, contract_version, data)"
            " VALUES ($1, $2, $3, $4, $5::text::jsonb)",
            stream,
            version,
            type_,
            contract_version,
            json.dumps(data),
        )


async def test_a_stored_old_contract_version_is_upcast_on_load(fleet: Fleet) -> None:
    stream = order_id = new_id()
    v1 = {
        "order_id": order_id,
        "customer_id": "customer-old",
        "items": [{"sku": "sku-a", "quantity": 3, "unit_price": 4.1}],
        "total": 12.3,
        "country": "FR",
    }
    await insert_raw(fleet, stream, 1, "order.placed", 1, v1)
    async with fleet.connection(ORDER) as conn:
        (event,) = await event_store.load(conn, stream)
    assert (event.type, event.contract_version) == ("order.placed", 1)
    assert isinstance(event.message, OrderPlacedV2)
    assert event.message.total == Money.of("12.30", "EUR")
    assert event.message.items[0].unit_price == Money.of("4.10", "EUR")
    assert event.message.saga == "orchestration"


async def test_a_stored_version_nobody_knows_fails_loudly(fleet: Fleet) -> None:
    stream = new_id()
    await insert_raw(fleet, stream, 1, "order.confirmed", 9, {"order_id": stream})
    async with fleet.connection(ORDER) as conn:
        with pytest.raises(UnknownContractVersion):
            await event_store.load(conn, stream)


async def test_all_events_reads_every_stream_in_position_order(fleet: Fleet) -> None:
    a, b = new_id(), new_id()
    async with fleet.connection(ORDER) as conn:
        start = await event_store.last_position(conn)
    for stream in (a, b, a):
        async with fleet.transaction(ORDER) as conn:
            version = await event_store.current_version(conn, stream)
            await event_store.append(conn, stream, version, confirmed(1))
    async with fleet.connection(ORDER) as conn:
        read = await event_store.all_events(conn, after_position=start, limit=10_000)
        limited = await event_store.all_events(conn, after_position=start, limit=1)
    ours = [(e.stream_id, e.version) for e in read if e.stream_id in (a, b)]
    assert ours == [(a, 1), (b, 1), (a, 2)]
    assert len(limited) == 1 and limited[0].global_position == read[0].global_position


def count_state(state: dict[str, Any] | None) -> dict[str, Any]:
    return dict(state or {"seen": 0})


async def test_a_long_stream_loads_from_its_snapshot_and_reads_only_the_rest(
    fleet: Fleet,
) -> None:
    stream = new_id()
    every, total = 20, 47
    version = 0
    for _ in range(total):  # one event per transaction, as handlers append
        async with fleet.transaction(ORDER) as conn:
            state = await _fold_count(conn, stream)
            new_version = await event_store.append(conn, stream, version, confirmed(1))
            if event_store.crossed_snapshot_boundary(version, new_version, every):
                state = {"seen": state["seen"] + 1}
                await event_store.save_snapshot(conn, stream, new_version, 1, state)
            version = new_version
    async with fleet.connection(ORDER) as conn:
        assert await event_store.load_snapshot(conn, stream, 1) == (40, {"seen": 40})
        rest = await event_store.load(conn, stream, after_version=40)
        assert await _fold_count(conn, stream) == {"seen": total}
    assert [e.version for e in rest] == list(range(41, total + 1))  # 7 read instead of 47


async def _fold_count(conn: asyncpg.Connection, stream: str) -> dict[str, Any]:
    snapshot = await event_store.load_snapshot(conn, stream, 1)
    after, state = snapshot if snapshot else (0, {"seen": 0})
    return {"seen": state["seen"] + len(await event_store.load(conn, stream, after))}


async def test_a_snapshot_of_another_schema_version_is_ignored(fleet: Fleet) -> None:
    stream = new_id()
    async with fleet.transaction(ORDER) as conn:
        await event_store.append(conn, stream, 0, confirmed(3))
        await event_store.save_snapshot(conn, stream, 3, 1, {"shape": "old"})
    async with fleet.connection(ORDER) as conn:
        assert await event_store.load_snapshot(conn, stream, 1) == (3, {"shape": "old"})
        assert await event_store.load_snapshot(conn, stream, 2) is None
    # A newer schema replaces the old snapshot even at the same version; the old is then gone.
    async with fleet.transaction(ORDER) as conn:
        await event_store.save_snapshot(conn, stream, 3, 2, {"shape": "new"})
    async with fleet.connection(ORDER) as conn:
        assert await event_store.load_snapshot(conn, stream, 2) == (3, {"shape": "new"})
        assert await event_store.load_snapshot(conn, stream, 1) is None


async def test_a_snapshot_never_moves_backwards(fleet: Fleet) -> None:
    stream = new_id()
    async with fleet.transaction(ORDER) as conn:
        await event_store.append(conn, stream, 0, confirmed(5))
        await event_store.save_snapshot(conn, stream, 4, 1, {"at": 4})
        await event_store.save_snapshot(conn, stream, 2, 1, {"at": 2})
    async with fleet.connection(ORDER) as conn:
        assert await event_store.load_snapshot(conn, stream, 1) == (4, {"at": 4})
    async with fleet.transaction(ORDER) as conn:
        await event_store.save_snapshot(conn, stream, 5, 1, {"at": 5})
    async with fleet.connection(ORDER) as conn:
        assert await event_store.load_snapshot(conn, stream, 1) == (5, {"at": 5})


# --- A batch's statements: several streams at once. -------------------------------------


async def test_several_streams_load_from_their_snapshots_in_one_statement(fleet: Fleet) -> None:
    snapshotted, plain, missing = new_id(), new_id(), new_id()
    async with fleet.transaction(ORDER) as conn:
        await event_store.append(conn, snapshotted, 0, confirmed(3))
        await event_store.save_snapshot(conn, snapshotted, 2, 1, {"at": 2})
        await event_store.append(conn, plain, 0, confirmed(2))
    async with fleet.connection(ORDER) as conn:
        tails = await event_store.load_streams(conn, [snapshotted, plain, missing], 1)
        whole = await event_store.load_streams(conn, [snapshotted], None)
        other_schema = await event_store.load_streams(conn, [snapshotted], 2)
    assert tails[snapshotted].snapshot == (2, {"at": 2})
    assert [e.version for e in tails[snapshotted].events] == [3]
    assert tails[plain].snapshot is None
    assert [e.version for e in tails[plain].events] == [1, 2]
    assert tails[missing] == event_store.StreamTail(None, [])
    for tail in (whole[snapshotted], other_schema[snapshotted]):
        assert tail.snapshot is None
        assert [e.version for e in tail.events] == [1, 2, 3]


async def test_several_streams_append_in_one_statement_in_the_order_given(fleet: Fleet) -> None:
    a, b = new_id(), new_id()
    async with fleet.transaction(ORDER) as conn:
        await event_store.append(conn, a, 0, confirmed(1))
    first, second, third = confirmed(3)
    async with fleet.transaction(ORDER) as conn:
        await event_store.append_events(
            conn,
            [
                event_store.NewEvent(b, 1, first, {"message_id": "m-1"}),
                event_store.NewEvent(a, 2, second, {"message_id": "m-2"}),
                event_store.NewEvent(b, 2, third, {}),
            ],
        )
    async with fleet.connection(ORDER) as conn:
        stored_a, stored_b = await event_store.load(conn, a), await event_store.load(conn, b)
    assert [e.message for e in stored_b] == [first, third]
    assert [e.metadata for e in stored_b] == [{"message_id": "m-1"}, {}]
    assert stored_a[1].message == second
    assert stored_b[0].global_position < stored_a[1].global_position < stored_b[1].global_position


async def test_a_batch_appending_where_another_writer_was_first_is_a_conflict(fleet: Fleet) -> None:
    moved, untouched = new_id(), new_id()
    async with fleet.connection(ORDER) as first, fleet.connection(ORDER) as second:
        first_tx, second_tx = first.transaction(), second.transaction()
        await first_tx.start()
        await second_tx.start()
        await event_store.append(first, moved, 0, confirmed(1))
        racing = asyncio.create_task(
            event_store.append_events(
                second,
                [
                    event_store.NewEvent(untouched, 1, confirmed(1)[0], {}),
                    event_store.NewEvent(moved, 1, confirmed(1)[0], {}),
                    event_store.NewEvent(moved, 2, confirmed(1)[0], {}),
                ],
            )
        )
        # The batch waits on the first writer's row for version 1 of ``moved`` ...
        await wait_for(lambda: _waiting_for_a_lock(fleet, 1))
        assert not racing.done()
        await first_tx.commit()
        # ... and names that stream, at the version it decided on, once the first commits.
        with pytest.raises(ConcurrencyConflict) as raised:
            await racing
        await second_tx.rollback()
    assert (raised.value.stream_id, raised.value.expected_version) == (moved, 0)
    assert await versions(fleet, moved) == [1]
    assert await versions(fleet, untouched) == []


async def test_several_snapshots_save_in_one_statement_never_moving_backwards(
    fleet: Fleet,
) -> None:
    ahead, behind, new = new_id(), new_id(), new_id()
    async with fleet.transaction(ORDER) as conn:
        await event_store.save_snapshot(conn, ahead, 5, 1, {"at": 5})
        await event_store.save_snapshot(conn, behind, 1, 1, {"at": 1})
        await event_store.save_snapshots(
            conn,
            [
                event_store.Snapshot(ahead, 3, 1, {"at": 3}),
                event_store.Snapshot(behind, 2, 1, {"at": 2}),
                event_store.Snapshot(new, 4, 1, {"at": 4}),
            ],
        )
    async with fleet.connection(ORDER) as conn:
        assert await event_store.load_snapshot(conn, ahead, 1) == (5, {"at": 5})
        assert await event_store.load_snapshot(conn, behind, 1) == (2, {"at": 2})
        assert await event_store.load_snapshot(conn, new, 1) == (4, {"at": 4})


async def test_pages_of_the_store_read_in_one_statement(fleet: Fleet) -> None:
    stream = new_id()
    async with fleet.transaction(ORDER) as conn:
        await event_store.append(conn, stream, 0, confirmed(5))
    async with fleet.connection(ORDER) as conn:
        ours = await event_store.load(conn, stream)
        start = ours[0].global_position - 1
        end = await event_store.last_position(conn)
        first, middle, past_the_end, to_now = await event_store.read_pages(
            conn,
            [
                event_store.PageRequest(start, ours[3].global_position, count=True),
                event_store.PageRequest(ours[1].global_position, ours[3].global_position),
                event_store.PageRequest(ours[4].global_position, ours[4].global_position),
                event_store.PageRequest(start, None),
            ],
            limit=2,
        )
        counted = await event_store.count_events(conn, ours[3].global_position)
        assert await event_store.read_pages(conn, [], limit=2) == []
    assert [e.version for e in first.events] == [1, 2]
    assert (first.up_to_position, first.count) == (ours[3].global_position, counted)
    assert [e.version for e in middle.events] == [3, 4]
    assert middle.count is None
    assert past_the_end.events == []
    assert past_the_end.up_to_position == ours[4].global_position
    assert to_now.up_to_position >= end and [e.version for e in to_now.events] == [1, 2]
