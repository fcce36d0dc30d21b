"""``fleet pause`` and ``fleet resume`` as operators run them: real worker processes, the
real broker, the audit log in the operations database; a namespace of this module's own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from contracts import ReleaseStock
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.faults import cut_broker_connections, needs_rabbitmqctl
from tests.integration.support import (
    Fleet,
    FleetProcess,
    new_id,
    outgoing,
    reserve_command,
    scalar,
    wait_for,
)
from workers.runtime import control, topology

pytestmark = pytest.mark.integration

RESERVE = "inventory.reserve_stock"
RELEASE = "inventory.release_stock"
WAITING = 5  # reservations published while paused


@pytest.fixture(scope="module")
async def fleet(server_urls: tuple[str, str]) -> AsyncIterator[Fleet]:
    async with namespaced_fleet(namespace_settings(server_urls)) as fleet:
        yield fleet


async def cli(fleet: Fleet, *args: str) -> tuple[int, str]:
    return await fleet.cli(*args)


def queue_of(fleet: Fleet, handler: str) -> str:
    return f"{fleet.ns}.{handler}"


async def state(fleet: Fleet, queue: str) -> topology.QueueState | None:
    connection = await aio_pika.connect(fleet.settings.amqp_url)
    try:
        return (await topology.queue_states(connection, [queue]))[queue]
    finally:
        await connection.close()


async def consumers(fleet: Fleet, queue: str) -> int:
    found = await state(fleet, queue)
    assert found is not None, f"{queue} not declared"
    return found.consumers


async def applied(fleet: Fleet, handler: str, message_ids: list[str]) -> int:
    """How many of ``message_ids`` the handler has applied (its inbox rows)."""
    count: int = await scalar(
        fleet.engine("inventory"),
        "SELECT count(*) FROM inbox WHERE consumer = :consumer AND message_id = ANY(:ids)",
        consumer=handler,
        ids=message_ids,
    )
    return count


async def cli_json(fleet: Fleet, *args: str) -> tuple[int, Any]:
    code, output = await cli(fleet, *args, "--json")
    assert code in (0, 1), output
    return code, json.loads(output)


async def start_worker(fleet: Fleet) -> FleetProcess:
    worker = await fleet.spawn("worker", "inventory", "--no-relay")
    await worker.wait_for_line("inventory worker consuming 2 queue(s)", timeout=60)
    return worker


async def publish_reservations(fleet: Fleet, count: int) -> list[str]:
    ids = []
    async with fleet.publisher() as publisher:
        for _ in range(count):
            message = outgoing(
                reserve_command(new_id(), ("SKU-PAUSE", 1)), queue=queue_of(fleet, RESERVE)
            )
            await publisher.publish(message)
            assert message.message_id is not None
            ids.append(message.message_id)
    return ids


async def release_applied(fleet: Fleet) -> None:
    """A release sent to the worker's other handler, and applied: the worker is connected
    and consuming there."""
    message = outgoing(
        ReleaseStock(order_id=new_id(), reason="test", saga="orchestration"),
        queue=queue_of(fleet, RELEASE),
    )
    assert message.message_id is not None
    message_id = message.message_id
    async with fleet.publisher() as publisher:
        await publisher.publish(message)

    async def done() -> bool:
        return await applied(fleet, RELEASE, [message_id]) == 1

    await wait_for(done, timeout=30)


async def test_a_paused_handler_stops_taking_messages_until_resumed(fleet: Fleet) -> None:
    reserve_queue, release_queue = queue_of(fleet, RESERVE), queue_of(fleet, RELEASE)
    first = await start_worker(fleet)
    assert await consumers(fleet, reserve_queue) == 1

    code, paused = await cli_json(fleet, "pause", RESERVE)
    assert code == 0
    assert paused["changed"] == [RESERVE] and paused["paused"] == [RESERVE], paused
    assert await state(fleet, control.pause_marker(reserve_queue)) is not None

    async def reserve_has_no_consumer() -> bool:
        return await consumers(fleet, reserve_queue) == 0

    await wait_for(reserve_has_no_consumer)
    await first.wait_for_line(f"{reserve_queue}: paused by an operator")

    # Messages wait in the queue; the worker's other handler still consumes.
    ids = await publish_reservations(fleet, WAITING)
    await release_applied(fleet)
    assert await fleet.queue_depth(reserve_queue) == WAITING
    assert await applied(fleet, RESERVE, ids) == 0
    assert await consumers(fleet, release_queue) == 1
    assert first.process.returncode is None
    assert first.count("control connection lost") == 0

    # A worker started now starts paused.
    second = await start_worker(fleet)
    await second.wait_for_line(f"{reserve_queue}: paused by an operator")
    assert await consumers(fleet, release_queue) == 2
    assert await consumers(fleet, reserve_queue) == 0
    assert await fleet.queue_depth(reserve_queue) == WAITING

    # fleet status shows it paused, and its queue waiting, and that alone needs nothing.
    _, status = await cli_json(fleet, "status")
    assert status["paused"] == [reserve_queue], status["paused"]
    inventory = next(s for s in status["services"] if s["service"] == "inventory")
    rows = {row["queue"]: row for row in inventory["queues"]}
    assert rows[reserve_queue]["paused"] is True
    assert rows[reserve_queue]["messages"] == WAITING
    assert rows[reserve_queue]["consumers"] == 0
    assert rows[reserve_queue]["problems"] == []
    assert rows[release_queue]["paused"] is False
    assert not any(reserve_queue in problem for problem in status["problems"])
    _, screen = await cli(fleet, "status")
    row = next(line for line in screen.splitlines() if reserve_queue in line.split())
    assert row.split()[:4] == [reserve_queue, str(WAITING), "0", "paused"], row
    assert f"{reserve_queue} ({WAITING} waiting)" in screen

    # Pausing again changes nothing, and is no error.
    code, output = await cli(fleet, "pause", RESERVE)
    assert code == 0, output
    assert f"already paused, nothing changed: {RESERVE}" in output

    # Resuming the service resumes what was paused and leaves the other as it was.
    code, resumed = await cli_json(fleet, "resume", "inventory")
    assert code == 0
    assert resumed["changed"] == [RESERVE] and resumed["unchanged"] == [RELEASE], resumed
    assert resumed["paused"] == []
    assert await state(fleet, control.pause_marker(reserve_queue)) is None

    async def all_applied() -> bool:
        return await applied(fleet, RESERVE, ids) == WAITING

    await wait_for(all_applied, timeout=30)
    assert await fleet.queue_depth(reserve_queue) == 0
    assert await consumers(fleet, reserve_queue) == 2  # both workers took it up again

    code, output = await cli(fleet, "resume", RESERVE)
    assert code == 0, output
    assert f"not paused, nothing changed: {RESERVE}" in output

    # The audit log has the pause and the resume, once each (what changed nothing is not
    # an action).
    _, history = await cli_json(fleet, "history")
    entries = [(e["action"], e["target"], e["count"]) for e in history]
    assert entries == [("resume", "inventory", 1), ("pause", RESERVE, 1)], history
    assert history[1]["detail"] == {"handlers": [RESERVE], "paused": [RESERVE]}

    assert await second.terminate() == 0
    assert await first.terminate() == 0


async def test_a_whole_service_pauses_and_a_worker_stops_cleanly_while_paused(
    fleet: Fleet,
) -> None:
    worker = await start_worker(fleet)
    code, paused = await cli_json(fleet, "pause", "inventory")
    assert code == 0
    assert paused["changed"] == [RESERVE, RELEASE]
    for handler in (RESERVE, RELEASE):
        await worker.wait_for_line(f"{queue_of(fleet, handler)}: paused by an operator")
        assert await consumers(fleet, queue_of(fleet, handler)) == 0
    assert await worker.terminate() == 0
    code, resumed = await cli_json(fleet, "resume", "inventory")
    assert code == 0 and resumed["changed"] == [RESERVE, RELEASE] and resumed["paused"] == []


@needs_rabbitmqctl
async def test_pauses_hold_through_a_cut_connection(fleet: Fleet) -> None:
    reserve_queue, release_queue = queue_of(fleet, RESERVE), queue_of(fleet, RELEASE)
    worker = await start_worker(fleet)
    code, _ = await cli_json(fleet, "pause", RESERVE)
    assert code == 0
    await worker.wait_for_line(f"{reserve_queue}: paused by an operator")

    # Cut while paused: the consumers come back, the paused one does not.
    assert (
        await cut_broker_connections(worker.process.pid, "cut by test_pausing") == 3
    )  # publishing, consuming, control
    await worker.wait_for_line("inventory: control connection reopened", timeout=30)

    async def release_consumed_again() -> bool:
        return await consumers(fleet, release_queue) == 1

    await wait_for(release_consumed_again, timeout=30)
    await release_applied(fleet)
    assert await consumers(fleet, reserve_queue) == 0

    # Resumed after the reconnect, and cut again: it consumes again.
    ids = await publish_reservations(fleet, 2)
    code, _ = await cli_json(fleet, "resume", RESERVE)
    assert code == 0

    async def reserve_applied() -> bool:
        return await applied(fleet, RESERVE, ids) == 2

    await wait_for(reserve_applied, timeout=30)
    assert await cut_broker_connections(worker.process.pid, "cut by test_pausing") == 3

    async def both_consumed_again() -> bool:
        return [await consumers(fleet, q) for q in (reserve_queue, release_queue)] == [1, 1]

    await wait_for(both_consumed_again, timeout=30)
    ids = await publish_reservations(fleet, 2)
    await wait_for(reserve_applied, timeout=30)
    assert await worker.terminate() == 0


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("inventory.reserve", "inventory has no handler 'reserve'; its handlers are"),
        ("warehouse", "unknown service 'warehouse'; services are order, inventory"),
    ],
)
async def test_an_unknown_target_is_bad_usage_naming_what_exists(
    fleet: Fleet, target: str, named: str
) -> None:
    for command in ("pause", "resume"):
        code, output = await cli(fleet, command, target)
        assert code == 2, output
        assert named in output, output
        assert len(output.splitlines()) == 1, output
