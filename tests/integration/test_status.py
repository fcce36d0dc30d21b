"""``fleet status`` as operators run it: a real process against the real servers, on a
namespace of this module's own (a quiet fleet is one nobody else's tests write to)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import signal
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from db import outbox
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.support import (
    Fleet,
    FleetProcess,
    new_id,
    outgoing,
    reserve_command,
    wait_for,
)
from workers.operations import dead_letters
from workers.runtime import catalog, connections, topology

pytestmark = pytest.mark.integration

# Nothing listens here: a server that cannot be reached.
CLOSED_PORT = 1


@pytest.fixture(scope="module")
async def quiet(server_urls: tuple[str, str]) -> AsyncIterator[Fleet]:
    """A fleet of this module's own; each test leaves it as quiet as it found it."""
    async with namespaced_fleet(namespace_settings(server_urls)) as fleet:
        yield fleet


@contextlib.asynccontextmanager
async def workers(fleet: Fleet, services: Iterable[str]) -> AsyncIterator[None]:
    """A worker (consumers and relay) for each of ``services``, in this process."""
    async with contextlib.AsyncExitStack() as stack:
        for name in services:
            await stack.enter_async_context(fleet.worker(catalog.load(name)))
        yield


def handler_queues(fleet: Fleet, service: str) -> list[str]:
    return [spec.name for spec in catalog.load(service).queue_specs(fleet.ns)]


def row_of(output: str, name: str) -> str:
    """The table row of a queue or a service (the word ``name``, above the list of what
    needs action)."""
    tables = output.split("needs action", 1)[0]
    rows = [line for line in tables.splitlines() if name in line.split()]
    assert len(rows) == 1, f"no single row for {name}:\n{output}"
    return rows[0]


def marked(row: str) -> bool:
    return row.strip().startswith("!")


def problems_listed(output: str) -> list[str]:
    """The lines under "needs action (N):"."""
    lines = output.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("needs action (")]
    if not heads:
        return []
    return [line for line in lines[heads[-1] + 1 :] if line.startswith("! ")]


async def status_json(fleet: Fleet, *args: str, **env: Any) -> tuple[int, dict[str, Any]]:
    code, output = await fleet.cli("status", "--json", *args, **env)
    document: dict[str, Any] = json.loads(output)
    return code, document


async def test_with_every_worker_up_and_nothing_pending_it_exits_0(quiet: Fleet) -> None:
    async with workers(quiet, catalog.SERVICES):
        code, output = await quiet.cli("status")
    assert code == 0, output
    assert "nothing needs action" in output
    for service in catalog.SERVICES:
        for queue in handler_queues(quiet, service):
            row = row_of(output, queue)
            assert not marked(row), row
    assert problems_listed(output) == []


async def test_a_stopped_worker_leaves_its_queues_without_consumers_marked(quiet: Fleet) -> None:
    stopped = "payment"
    async with workers(quiet, [name for name in catalog.SERVICES if name != stopped]):
        code, output = await quiet.cli("status")
    assert code == 1, output
    problems = problems_listed(output)
    for queue in handler_queues(quiet, stopped):
        row = row_of(output, queue)
        assert marked(row), row
        assert row.split()[1:4] == [queue, "0", "0"], row  # nothing waiting, nobody consuming
        assert f"! {queue}: no consumer (0 message(s) waiting)" in problems, problems
    for queue in handler_queues(quiet, "inventory"):
        assert not marked(row_of(output, queue))
    # The worker's relay went with it, but its outbox is empty: that alone needs nothing.
    assert all(stopped in problem for problem in problems), problems


async def test_a_dead_letter_makes_it_exit_1_and_names_the_dlq(quiet: Fleet) -> None:
    queue = f"{quiet.ns}.inventory.reserve_stock"
    dlq = topology.dead_letter_queue(queue)
    bad = dataclasses.replace(
        outgoing(reserve_command(new_id(), ("sku-a", 1)), queue=queue), body=b"not json"
    )
    try:
        async with workers(quiet, catalog.SERVICES):
            async with quiet.publisher() as publisher:
                await publisher.publish(bad)
            await wait_for(lambda: depth_is(quiet, dlq, 1))
            code, output = await quiet.cli("status")
            json_code, document = await status_json(quiet)
    finally:
        await dead_letters.purge(quiet.settings, dlq, None, operator="tests")
    assert code == 1, output
    assert f"! {dlq}: 1 dead letter(s)" in problems_listed(output), output
    row = row_of(output, queue)
    assert marked(row) and row.split()[-1] == "1", row  # consumed, but one dead letter
    assert json_code == 1 and document["needs_action"] is True
    assert document["problems"] == [f"{dlq}: 1 dead letter(s)"]
    inventory = next(s for s in document["services"] if s["service"] == "inventory")
    reserve = next(q for q in inventory["queues"] if q["queue"] == queue)
    assert reserve["dead_letter_queue"] == {
        "queue": dlq,
        "declared": True,
        "messages": 1,
        "consumers": 0,
    }


async def depth_is(fleet: Fleet, queue: str, depth: int) -> bool:
    return await fleet.queue_depth(queue) == depth


async def test_json_carries_the_same_verdict_as_the_exit_code(quiet: Fleet) -> None:
    async with workers(quiet, catalog.SERVICES):
        # The relays take their locks just after the workers start.
        await wait_for(lambda: every_relay_active(quiet))
        quiet_code, quiet_document = await status_json(quiet)
    idle_code, idle_document = await status_json(quiet)  # no worker at all now

    assert quiet_code == 0 and quiet_document["needs_action"] is False, quiet_document
    assert quiet_document["problems"] == []
    assert quiet_document["namespace"] == quiet.ns
    assert [s["service"] for s in quiet_document["services"]] == list(catalog.SERVICES)
    for service in quiet_document["services"]:
        assert service["database"] == {"reachable": True, "error": None}
        assert service["outbox"] == {
            "unpublished": 0,
            "oldest_age_seconds": None,
            "relay_active": True,
        }
        assert service["queues"] and all(q["consumers"] >= 1 for q in service["queues"])
    assert quiet_document["sagas"] == {"by_status": {}, "overdue": 0}
    assert quiet_document["view"]["messages_waiting"] == 0
    assert quiet_document["unrouted"]["messages"] == 0

    assert idle_code == 1 and idle_document["needs_action"] is True
    expected = [
        f"{queue}: no consumer (0 message(s) waiting)"
        for service in catalog.SERVICES
        for queue in handler_queues(quiet, service)
    ]
    assert idle_document["problems"] == expected


async def every_relay_active(fleet: Fleet) -> bool:
    _, document = await status_json(fleet)
    return all(s["outbox"]["relay_active"] for s in document["services"])


async def test_an_old_unpublished_outbox_row_with_no_relay_needs_action(quiet: Fleet) -> None:
    # Two minutes old, in payment's outbox, and no worker (so no relay) running.
    row = dataclasses.replace(
        outgoing(reserve_command(new_id(), ("sku-a", 1)), queue=f"{quiet.ns}.unused"),
        timestamp=datetime.now(UTC) - timedelta(seconds=120),
    )
    try:
        async with quiet.transaction("payment") as conn:
            await outbox.append(conn, [row])
        code, output = await quiet.cli("status")
        patient_code, patient = await status_json(quiet, "--outbox-age", "300")
    finally:
        async with quiet.transaction("payment") as conn:
            await conn.execute("DELETE FROM outbox WHERE message_id = $1", row.message_id)
    assert code == 1, output
    problems = problems_listed(output)
    assert "! payment outbox: 1 unpublished row(s), no relay active" in problems, output
    assert any(
        p.startswith("! payment outbox: oldest unpublished row is 12") and "(more than 60 s)" in p
        for p in problems
    ), output
    mark, service, database, unpublished, oldest, relay = row_of(output, "payment").split()
    assert (mark, service, database, unpublished, relay) == ("!", "payment", "ok", "1", "none")
    assert oldest.startswith("2m"), oldest  # 2 minutes and the command's start-up
    assert not marked(row_of(output, "inventory"))

    assert patient_code == 1
    payment = next(s for s in patient["services"] if s["service"] == "payment")
    assert payment["outbox"]["unpublished"] == 1 and payment["outbox"]["relay_active"] is False
    assert 120 <= payment["outbox"]["oldest_age_seconds"] < 300
    outbox_problems = [p for p in patient["problems"] if "outbox" in p]
    assert outbox_problems == ["payment outbox: 1 unpublished row(s), no relay active"]


async def test_unreachable_servers_are_shown_as_such_not_as_a_traceback(quiet: Fleet) -> None:
    closed = f"127.0.0.1:{CLOSED_PORT}"
    code, output = await quiet.cli(
        "status",
        amqp_url=f"amqp://guest:guest@{closed}/",
        db_urls={"payment": f"postgresql://nobody@{closed}/nothing"},
    )
    assert code == 1, output
    assert "Traceback" not in output
    problems = problems_listed(output)
    assert any(p.startswith("! RabbitMQ unreachable: ") for p in problems), output
    assert any(p.startswith("! payment database unreachable: ") for p in problems), output
    assert not any(p.startswith("! inventory database") for p in problems), output
    assert row_of(output, "payment").split()[:3] == ["!", "payment", "unreachable"]


async def test_a_namespace_never_set_up_has_every_queue_missing(quiet: Fleet) -> None:
    never_set_up = f"t{secrets.token_hex(4)}"  # nothing is made for it: passive reads only
    code, document = await status_json(quiet, namespace=never_set_up)
    assert code == 1
    for service in document["services"]:
        assert service["database"]["reachable"] is False
        for queue in service["queues"]:
            assert queue["declared"] is False and queue["dead_letter_queue"]["declared"] is False
            assert f"{queue['queue']} and its DLQ: not declared" in " ".join(service["problems"])


class TcpProxy:
    """Forwards a local port to a server; ``cut`` refuses and drops every connection until
    ``restore``, which is what a server restart looks like to its clients."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.streams: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _forward(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        try:
            upstream, to_upstream = await asyncio.open_connection(*self.target)
        except OSError:
            to_client.close()
            return
        self.streams.update((to_client, to_upstream))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(client, to_upstream), pipe(upstream, to_client))
        self.streams.difference_update((to_client, to_upstream))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for stream in self.streams:
            stream.transport.abort()
        await self.server.wait_closed()

    async def restore(self) -> None:
        await self.start()


async def test_watch_survives_a_broker_outage_and_exits_as_the_last_screen_says(
    quiet: Fleet,
) -> None:
    broker = urlsplit(quiet.settings.amqp_url)
    proxy = TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672)
    await proxy.start()
    credentials = broker.netloc.rpartition("@")[0]
    through_proxy = urlunsplit(broker._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))
    async with workers(quiet, catalog.SERVICES):
        watch = await quiet.spawn("status", "--watch", "--interval", "0.2", amqp_url=through_proxy)
        try:
            await watch.wait_for_line("nothing needs action", timeout=30)
            await proxy.cut()
            await watch.wait_for_line("RabbitMQ unreachable: ", timeout=30)
            healthy_before = watch.count("nothing needs action")
            await proxy.restore()
            await wait_for(lambda: healthy_screens_since(watch, healthy_before), timeout=30)
            watch.process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(watch.process.wait(), 30)
        finally:
            await watch.kill()
            await proxy.cut()
    output = "\n".join(watch.lines)
    assert code == 0, output  # the last screen's verdict, not the outage's
    assert "Traceback" not in output
    assert watch.count("fleet status: namespace") >= 3


async def healthy_screens_since(watch: FleetProcess, healthy_before: int) -> bool:
    return bool(watch.count("nothing needs action") > healthy_before)


async def test_reading_a_missing_queue_on_a_workers_robust_connection_leaves_no_channel_open(
    fleet: Fleet,
) -> None:
    """A worker's sampler reads its queues' depths every few seconds over its long-lived
    robust connection; a queue that is not there once left a channel open per reading (the
    robust channel reopened itself after the broker closed it), until the broker refused
    the connection at 2,047 channels."""
    connection = await connections.connect_robust(fleet.settings.broker_urls)
    try:
        missing = f"{fleet.ns}.no.such.queue"
        for _ in range(20):
            assert await topology.depths(connection, [missing]) == {missing: None}
        assert connection.transport is not None
        underlying = connection.transport.connection  # aiormq's, which counts open channels
        assert len(underlying.channels) == 0
    finally:
        await connection.close()
