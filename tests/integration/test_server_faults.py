"""Whole servers failing under load: PostgreSQL crashed and restarted, the broker restarted,
the broker frozen, and broker connections cut mid-publish and mid-consume.

Every test runs every service as a real process (its consumers and its outbox relay) while
orders are placed continuously, before, during and after the fault, in both saga styles
and with refusals (so compensations run too). Each ends the same way: every order placed
is CONFIRMED or REJECTED, ``fleet verify`` passes (stock and money balance, nothing charged
twice, every outbox row published, every queue drained), no message was dead-lettered, and
every worker stops cleanly. A server that is stopped or frozen is a private one the test
starts itself (``pg_server``, ``rabbit_nodes``): the machine's shared servers are never
touched; connections are cut by a proxy of the test's own (``tcp_proxy``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.pg_server import PrivateServer, needs_postgresql_binaries
from tests.integration.rabbit_nodes import RabbitNode, needs_rabbitmq_server, private_nodes
from tests.integration.support import Fleet, wait_for
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.under_fire import (
    FAULT_TOLERANT,
    OrderStream,
    every_order_ended,
    forget_namespace,
    nothing_lost,
    running_workers,
    seed,
)
from workers.order import public as orders
from workers.runtime import catalog
from workers.runtime.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# AMQP heartbeat for the frozen broker: aiormq gives up on a silent server after
# (heartbeat + 1) * 3 seconds, 9 s here; the broker stays frozen longer than that.
HEARTBEAT = 2
FROZEN_FOR = 3 * (HEARTBEAT + 1) + 4.0
# Orders placed at a steady pace, and in bursts right before a fault (so that many are in
# flight when it strikes).
PLACE_EVERY = 0.2
BURST = 20
# Seconds for one publish: longer than a lost heartbeat takes to notice (FROZEN_FOR).
PUBLISH_TIMEOUT = 30


def order_stream(settings: Settings) -> OrderStream:
    """This module's steady stream of orders (under_fire.OrderStream)."""
    return OrderStream(settings, every=PLACE_EVERY, publish_timeout=PUBLISH_TIMEOUT)


async def in_flight(settings: Settings, order_ids: list[str]) -> int:
    """Of ``order_ids``, how many have not ended yet."""
    return len(order_ids) - len(await orders.ended_orders(settings, order_ids))


async def under_load(
    stream: OrderStream, settings: Settings, fault: Callable[[], Awaitable[None]]
) -> int:
    """Orders flowing, a burst, the fault at once; orders keep coming until BURST more were
    placed after it. Returns how many of the burst were in flight when the fault struck."""
    await stream.wait_placed(15)
    burst = await stream.burst(BURST)
    caught = await in_flight(settings, burst)
    await fault()
    await stream.wait_placed(len(stream.placed) + BURST, timeout=120)
    return caught


@needs_postgresql_binaries
async def test_postgresql_crashed_and_restarted_under_load_loses_nothing(
    server_urls: tuple[str, str],
) -> None:
    """``pg_ctl -m immediate`` kills every backend without a checkpoint: transactions in
    flight are lost, committed ones come back by WAL replay. Handlers fail, retry with delay
    and apply once; relays and listeners reconnect; nothing is published twice."""
    amqp_url, _ = server_urls
    async with PrivateServer() as server:
        settings = namespace_settings((amqp_url, server.admin_url), **FAULT_TOLERANT)
        try:
            async with namespaced_fleet(settings) as fleet:
                await seed(settings)
                async with running_workers(fleet), order_stream(settings) as stream:
                    caught = await under_load(stream, settings, server.restart)
                    await every_order_ended(settings, stream.placed, timeout=180)
                    await nothing_lost(settings)
                assert caught > 0, "the fault struck no order in flight"
                felt = sum(process.count("retrying") for process in fleet.processes)
                assert felt > 0, "no handler saw the database go away"
                # Each relay waited the database out saying so once, and once that it was
                # back: not a line per try.
                relays = [process for process in fleet.processes if process.count("relay: ")]
                assert len(relays) == len(catalog.SERVICES)
                for process in relays:
                    said = [line for line in process.lines if "relay: " in line]
                    assert process.count("relay: waiting for the database") == 1, said
                    assert process.count("relay: the database works again") == 1, said
        finally:
            await forget_namespace(settings)


async def test_broker_connections_cut_mid_publish_and_mid_consume_lose_nothing(
    server_urls: tuple[str, str], databases: PrivateServer
) -> None:
    """Every worker talks to the (shared) broker through a proxy that resets all their
    connections three times: right after a burst (consumers hold unacked deliveries,
    relays publish); with what goes to the workers held (the broker has the relays'
    messages, the relays never get the confirms: they publish them again); and with what
    goes to the broker held (handlers applied and committed, their acks never arrive: the
    broker delivers again). The inboxes make every second copy a duplicate."""
    amqp_url, _ = server_urls
    settings = namespace_settings((amqp_url, databases.admin_url), **FAULT_TOLERANT)
    broker = urlsplit(amqp_url)
    proxy = TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672)
    await proxy.start()
    try:
        async with namespaced_fleet(settings) as fleet:
            await seed(settings)
            async with running_workers(fleet, proxy.url_for(settings.amqp_url)):
                connected = proxy.live
                # Orders go straight to the broker: only the workers' connections are cut.
                async with order_stream(settings) as stream:

                    async def cut() -> None:
                        assert proxy.cut() > 0
                        proxy.resume()

                    async def cut_holding(*, to_server: bool, to_client: bool) -> None:
                        await wait_for(lambda: _at_least(proxy, connected), timeout=60)
                        await stream.wait_placed(len(stream.placed) + 10)  # busy again
                        proxy.pause(to_server=to_server, to_client=to_client)
                        await stream.burst(BURST)
                        await asyncio.sleep(0.5)
                        await cut()

                    caught = await under_load(stream, settings, cut)
                    await cut_holding(to_server=False, to_client=True)
                    await cut_holding(to_server=True, to_client=False)
                    await stream.wait_placed(len(stream.placed) + BURST)
                await every_order_ended(settings, stream.placed, timeout=180)
                await nothing_lost(settings)
                assert caught > 0, "the fault struck no order in flight"
                assert proxy.counts.cut >= 3 * len(catalog.SERVICES)
                assert proxy.counts.connections > connected  # they came back
                duplicates = sum(process.count("duplicate ") for process in fleet.processes)
                assert duplicates > 0, "nothing was delivered twice: no cut struck mid-flight"
    finally:
        await proxy.close()
        await forget_namespace(settings)


@dataclass
class BrokerFleet:
    node: RabbitNode
    fleet: Fleet


@pytest.fixture(scope="module")
async def databases() -> AsyncIterator[PrivateServer]:
    """A PostgreSQL server of this module's own for the broker faults: a fleet's workers
    hold tens of connections, and the shared server's 100 are shared with every other
    test running meanwhile."""
    async with PrivateServer() as server:
        yield server


@pytest.fixture(scope="module")
async def private_broker(
    databases: PrivateServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BrokerFleet]:
    """A RabbitMQ node of this module's own, a namespace on it, every service running on it
    with a short heartbeat."""
    base: Path = tmp_path_factory.mktemp("rabbit")
    async with private_nodes(base) as nodes:
        node = await nodes.start("faults")
        amqp_url = f"{node.amqp_url}?heartbeat={HEARTBEAT}"
        settings = namespace_settings((amqp_url, databases.admin_url), **FAULT_TOLERANT)
        try:
            async with namespaced_fleet(settings) as fleet:
                await seed(settings)
                async with running_workers(fleet):
                    yield BrokerFleet(node, fleet)
        finally:
            await forget_namespace(settings, broker=node)


@needs_rabbitmq_server
async def test_the_broker_restarted_under_load_loses_nothing(private_broker: BrokerFleet) -> None:
    """``rabbitmqctl stop_app``/``start_app``: every connection is closed by the broker,
    nothing answers for a while, then the durable queues are back. Robust connections
    reconnect and consume again; unconfirmed publishes are sent again; unacked deliveries
    come back and the inboxes make them duplicates."""
    node, fleet = private_broker.node, private_broker.fleet
    settings = fleet.settings

    async def restart() -> None:
        await node.stop_app()
        await asyncio.sleep(2)  # orders keep being tried meanwhile
        await node.start_app()

    async with order_stream(settings) as stream:
        caught = await under_load(stream, settings, restart)
    await every_order_ended(settings, stream.placed, timeout=180)
    await nothing_lost(settings)
    assert caught > 0, "the fault struck no order in flight"
    assert stream.failed_publishes > 0, "no order was placed while the broker was down"


@needs_rabbitmq_server
async def test_the_broker_frozen_past_its_heartbeat_loses_nothing(
    private_broker: BrokerFleet,
) -> None:
    """SIGSTOP of the broker's VM for longer than the heartbeat: its sockets stay open but
    nothing answers, so only the heartbeat tells the clients; they drop the connection and
    reconnect once the broker runs again (SIGCONT)."""
    node, fleet = private_broker.node, private_broker.fleet
    settings = fleet.settings

    async def freeze() -> None:
        node.freeze()
        try:
            await asyncio.sleep(FROZEN_FOR)
        finally:
            node.thaw()

    async with order_stream(settings) as stream:
        caught = await under_load(stream, settings, freeze)
    await every_order_ended(settings, stream.placed, timeout=180)
    await nothing_lost(settings)
    assert caught > 0, "the fault struck no order in flight"
    assert stream.failed_publishes > 0, "no order was tried while the broker was frozen"


async def _at_least(proxy: TcpProxy, connections: int) -> bool:
    return proxy.live >= connections
