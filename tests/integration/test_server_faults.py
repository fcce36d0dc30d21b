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
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from contracts import Money, OrderLine, PlaceOrder
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.leftovers import created_namespaces, leftovers
from tests.integration.pg_server import PrivateServer, needs_postgresql_binaries
from tests.integration.rabbit_nodes import RabbitNode, needs_rabbitmq_server, private_nodes
from tests.integration.support import Fleet, FleetProcess, wait_for
from tests.integration.tcp_proxy import TcpProxy
from workers.inventory import public as inventory
from workers.operations import dead_letters
from workers.operations.verify import verify
from workers.order import public as orders
from workers.payment import public as payment
from workers.runtime import catalog
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# Retries patient enough to outlast a restart (about 12 s of delays before a dead letter),
# as the defaults are (36 s), and the broker's default delivery limit: a fault must not
# turn into dead letters.
FAULT_TOLERANT = {"retry_delays_ms": [500, 1000, 2000], "max_attempts": 8, "delivery_limit": 10}
# AMQP heartbeat for the frozen broker: aiormq gives up on a silent server after
# (heartbeat + 1) * 3 seconds, 9 s here; the broker stays frozen longer than that.
HEARTBEAT = 2
FROZEN_FOR = 3 * (HEARTBEAT + 1) + 4.0
STYLES = ("orchestration", "choreography")
# Orders placed at a steady pace, and in bursts right before a fault (so that many are in
# flight when it strikes).
PLACE_EVERY = 0.2
BURST = 20


def order_command(n: int) -> PlaceOrder:
    """The n-th order of a run: mostly confirmed; every tenth is refused by shipping (after
    stock and payment: both compensated), another by payment (stock released)."""
    customer, country = "rich", "DE"
    if n % 10 == 3:
        country = "XX"
    elif n % 10 == 7:
        customer = "poor"
    return PlaceOrder(
        idempotency_key=str(uuid.uuid4()),
        customer_id=customer,
        items=[
            OrderLine(sku="WIDGET", quantity=1 + n % 3, unit_price=Money.of("2.00", "EUR")),
        ],
        country=country,
        saga=STYLES[n % 2],
    )


@dataclass
class OrderStream:
    """Places orders one after another, every PLACE_EVERY seconds, until stopped; an order
    whose publish fails (the broker is down) is sent again with its idempotency key, as a
    client would, so it is the same order."""

    settings: Settings
    placed: list[str] = field(default_factory=list)
    failed_publishes: int = 0
    _publisher: ConfirmedPublisher | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OrderStream:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._task is not None
        try:
            await self._task
        finally:
            await self._close_publisher()

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.placed.append(await self.place(order_command(len(self.placed))))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PLACE_EVERY)

    async def burst(self, count: int = BURST) -> list[str]:
        """``count`` orders at once."""
        first = len(self.placed) + 10_000  # its own run of the mix
        ids = await asyncio.gather(*(self.place(order_command(first + n)) for n in range(count)))
        self.placed.extend(ids)
        return list(ids)

    async def place(self, command: PlaceOrder) -> str:
        while True:
            try:
                if self._publisher is None:
                    self._publisher = await asyncio.wait_for(
                        ConfirmedPublisher.connect(self.settings.amqp_url), 10
                    )
                # Longer than a lost heartbeat takes to notice (FROZEN_FOR).
                return await asyncio.wait_for(
                    orders.send_place_order(
                        self._publisher, self.settings.namespace, command, producer="tests"
                    ),
                    30,
                )
            except Exception:  # the broker is down, restarting or frozen: try again
                self.failed_publishes += 1
                await self._close_publisher()
                await asyncio.sleep(0.5)

    async def _close_publisher(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(publisher.close(), 5)

    async def wait_placed(self, count: int, timeout: float = 60) -> None:
        async def enough() -> bool:
            return len(self.placed) >= count

        await wait_for(enough, timeout=timeout)


async def seed(settings: Settings) -> None:
    await inventory.add_stock(settings, {"WIDGET": 100_000})
    await payment.add_funds(
        settings, {"rich": Decimal("1000000.00"), "poor": Decimal("1.00")}, "EUR"
    )


@contextlib.asynccontextmanager
async def running_workers(fleet: Fleet, amqp_url: str | None = None) -> AsyncIterator[None]:
    """Every service as its own process (consumers and relay), on ``amqp_url`` if given;
    each must stop cleanly (exit 0) at the end: a worker that never recovered fails here."""
    env: dict[str, Any] = {} if amqp_url is None else {"amqp_url": amqp_url}

    async def start(service: str) -> FleetProcess:
        process = await fleet.spawn("worker", service, **env)
        await process.wait_for_line("consuming", timeout=60)
        return process

    processes = await asyncio.gather(*(start(service) for service in catalog.SERVICES))
    yield
    for service, process in zip(catalog.SERVICES, processes, strict=True):
        code = await process.terminate(timeout=60)
        assert code == 0, f"{service} exited {code}:\n" + "\n".join(process.lines[-30:])


async def in_flight(settings: Settings, order_ids: list[str]) -> int:
    """Of ``order_ids``, how many have not ended yet."""
    return len(order_ids) - len(await orders.ended_orders(settings, order_ids))


async def every_order_ended(settings: Settings, order_ids: list[str], timeout: float) -> None:
    left: list[str] = []

    async def ended() -> bool:
        finished = await orders.ended_orders(settings, order_ids)
        left[:] = [order_id for order_id in order_ids if order_id not in finished]
        return not left

    try:
        await wait_for(ended, timeout=timeout, interval=0.5)
    except AssertionError:
        raise AssertionError(
            f"{len(left)} of {len(order_ids)} orders never ended: {left[:5]}"
        ) from None


async def nothing_lost(settings: Settings, timeout: float = 90) -> None:
    """At a quiet point every invariant of ``fleet verify`` holds, and no message was
    dead-lettered: a fault within the retry budget must not make a single one."""
    problems: list[str] = []

    async def passes() -> bool:
        checks = await verify(settings)
        problems[:] = [f"{check.name}: {check.problems}" for check in checks if not check.passed]
        return not problems

    try:
        await wait_for(passes, timeout=timeout, interval=0.5)
    except AssertionError:
        raise AssertionError("\n".join(problems)) from None
    queues = dead_letters.dead_letter_queues(settings, catalog.load_all())
    letters = {
        queue: [letter.reason for letter in await dead_letters.browse(settings, queue, 5)]
        for queue, depth in (await dead_letters.depths(settings, queues)).items()
        if depth
    }
    assert not letters, f"dead letters: {letters}"


async def under_load(
    stream: OrderStream, settings: Settings, fault: Callable[[], Awaitable[None]]
) -> int:
    """Orders flowing, a burst, the fault at once; orders keep coming until BURST more were
    placed after it. Returns how many of the burst were in flight when the fault struck."""
    await stream.wait_placed(15)
    burst = await stream.burst()
    caught = await in_flight(settings, burst)
    await fault()
    await stream.wait_placed(len(stream.placed) + BURST, timeout=120)
    return caught


async def forget_namespace(settings: Settings, broker: RabbitNode | None = None) -> None:
    """A namespace on a private server is checked here, while its server runs (its queues
    listed on ``broker``, a private node, if given); the session's check of every namespace
    (conftest) could not reach the server once it is gone."""
    try:
        left = await leftovers([settings])
        if broker is not None:
            listed = await broker.rabbitmqctl("list_queues", "name", "--no-table-headers")
            left += [name for name in listed.split() if name.startswith(f"{settings.namespace}.")]
        assert not left, f"namespace left behind: {left}"
    finally:
        created_namespaces.remove(settings)


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
                async with running_workers(fleet), OrderStream(settings) as stream:
                    caught = await under_load(stream, settings, server.restart)
                    await every_order_ended(settings, stream.placed, timeout=180)
                    await nothing_lost(settings)
                assert caught > 0, "the fault struck no order in flight"
                felt = sum(process.count("retrying") for process in fleet.processes)
                assert felt > 0, "no handler saw the database go away"
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
                async with OrderStream(settings) as stream:

                    async def cut() -> None:
                        assert proxy.cut() > 0
                        proxy.resume()

                    async def cut_holding(*, to_server: bool, to_client: bool) -> None:
                        await wait_for(lambda: _at_least(proxy, connected), timeout=60)
                        await stream.wait_placed(len(stream.placed) + 10)  # busy again
                        proxy.pause(to_server=to_server, to_client=to_client)
                        await stream.burst()
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

    async with OrderStream(settings) as stream:
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

    async with OrderStream(settings) as stream:
        caught = await under_load(stream, settings, freeze)
    await every_order_ended(settings, stream.placed, timeout=180)
    await nothing_lost(settings)
    assert caught > 0, "the fault struck no order in flight"
    assert stream.failed_publishes > 0, "no order was tried while the broker was frozen"


async def _at_least(proxy: TcpProxy, connections: int) -> bool:
    return proxy.live >= connections
