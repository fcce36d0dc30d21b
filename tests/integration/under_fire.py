"""What the tests of the fleet under fire share: whole servers failing under load
(test_server_faults.py), outages far longer than the retries (test_outages.py) and a
cluster node stopping (test_cluster.py).

A steady stream of orders of both saga styles, refusals included (so compensations run
too), placed before, during and after the fault; the stock and money they need; and the
checks every such test ends with: every order placed ended, ``fleet verify`` passes, and
nothing of the namespace is left on the servers the test started itself. Each test keeps
its own pace, burst size and timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from contracts import Money, OrderLine, PlaceOrder, SagaStyle
from tests.integration.leftovers import created_namespaces, leftovers
from tests.integration.rabbit_nodes import RabbitNode
from tests.integration.support import Fleet, FleetProcess, wait_for
from workers.inventory import public as inventory
from workers.operations import dead_letters
from workers.operations.verify import verify
from workers.order import public as orders
from workers.payment import public as payment
from workers.runtime import catalog
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.settings import Settings

# Retries patient enough to outlast a restart or a node's loss (about 12 s of delays before
# a dead letter), as the defaults are (36 s), and the broker's default delivery limit: a
# fault must not turn into dead letters.
FAULT_TOLERANT: Final[dict[str, object]] = {
    "retry_delays_ms": [500, 1000, 2000],
    "max_attempts": 8,
    "delivery_limit": 10,
}
STYLES: Final[tuple[SagaStyle, SagaStyle]] = ("orchestration", "choreography")
# Seconds to open a publisher, and to close one that failed.
CONNECT_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 5.0
# Seconds before an order whose publish failed is sent again.
RETRY_AFTER: Final = 0.5


def order_command(n: int) -> PlaceOrder:
    """The n-th order of a run, of a fresh idempotency key, the styles taking turns: mostly
    confirmed; every tenth is refused by shipping (after stock and payment: both
    compensated), another by payment (stock released)."""
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


async def seed(settings: Settings) -> None:
    """Stock and money for far more orders than a test places: the "rich" customer's are
    confirmed, the "poor" one's refused by payment (order_command)."""
    await inventory.add_stock(settings, {"WIDGET": 100_000})
    await payment.add_funds(
        settings, {"rich": Decimal("1000000.00"), "poor": Decimal("1.00")}, "EUR"
    )


@dataclass
class OrderStream:
    """Orders placed one after another, ``every`` seconds, from entering the stream until
    leaving it, over one publisher on every broker address (``settings.broker_urls``, the
    first that answers); ``placed`` is their ids, in order.

    An order whose publish fails (the broker down, restarting or frozen; its node gone
    mid-publish) is sent again with its idempotency key, as a client would, so it stays the
    same order: the publisher is closed and a new one opened, which tries every address
    again. ``publish_timeout`` bounds one attempt: longer than a lost connection takes to
    be noticed, so that an attempt is not given up while it could still be confirmed."""

    settings: Settings
    every: float
    publish_timeout: float
    placed: list[str] = field(default_factory=list)
    failed_publishes: int = 0
    _publisher: ConfirmedPublisher | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OrderStream:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stops placing once the order being placed is placed."""
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
                await asyncio.wait_for(self._stop.wait(), self.every)

    async def burst(self, count: int) -> list[str]:
        """``count`` orders at once, besides the steady ones; their ids."""
        first = len(self.placed) + 10_000  # its own run of the mix
        ids = await asyncio.gather(*(self.place(order_command(first + n)) for n in range(count)))
        self.placed.extend(ids)
        return list(ids)

    async def place(self, command: PlaceOrder) -> str:
        """The order's id, once its publish is confirmed: tried until it is."""
        while True:
            try:
                if self._publisher is None:
                    self._publisher = await asyncio.wait_for(
                        ConfirmedPublisher.connect(self.settings.broker_urls), CONNECT_TIMEOUT
                    )
                return await asyncio.wait_for(
                    orders.send_place_order(
                        self._publisher, self.settings.namespace, command, producer="tests"
                    ),
                    self.publish_timeout,
                )
            except Exception:  # the broker or its node is gone for now: try again
                self.failed_publishes += 1
                await self._close_publisher()
                await asyncio.sleep(RETRY_AFTER)

    async def _close_publisher(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(publisher.close(), CLOSE_TIMEOUT)

    async def wait_placed(self, count: int, timeout: float = 60) -> None:
        """Until ``count`` orders in all were placed."""

        async def enough() -> bool:
            return len(self.placed) >= count

        await wait_for(enough, timeout=timeout)


async def every_order_ended(settings: Settings, order_ids: list[str], timeout: float) -> None:
    """Every one of ``order_ids`` is CONFIRMED or REJECTED within ``timeout`` seconds; else
    fails naming a few that are not."""
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


async def verified(settings: Settings, timeout: float = 90) -> None:
    """Every invariant of ``fleet verify`` holds (polled: the fleet settles first); else
    fails with the problems of the last check."""
    problems: list[str] = []

    async def passes() -> bool:
        checks = await verify(settings)
        problems[:] = [f"{check.name}: {check.problems}" for check in checks if not check.passed]
        return not problems

    try:
        await wait_for(passes, timeout=timeout, interval=0.5)
    except AssertionError:
        raise AssertionError("\n".join(problems)) from None


async def forget_namespace(settings: Settings, broker: RabbitNode | None = None) -> None:
    """Nothing of the namespace is left, checked here while its servers run: on PostgreSQL
    and the machine's broker (leftovers), and on ``broker``, a private node (or a node of a
    private cluster), if given. The session's own check of every namespace (conftest) looks
    at the machine's broker only, and could not reach a private server once it is gone; so
    the namespace is taken off its list either way."""
    try:
        left = await leftovers([settings])
        if broker is not None:
            for kind in ("queues", "exchanges"):
                listed = await broker.rabbitmqctl(f"list_{kind}", "name", "--no-table-headers")
                left += [
                    name for name in listed.split() if name.startswith(f"{settings.namespace}.")
                ]
        assert not left, f"namespace left behind: {left}"
    finally:
        created_namespaces.remove(settings)


@contextlib.asynccontextmanager
async def running_workers(
    fleet: Fleet, amqp_url: str | None = None, **env: Any
) -> AsyncIterator[dict[str, FleetProcess]]:
    """Every service as its own process (consumers and relay), on ``amqp_url`` if given,
    by service name; each must stop cleanly (exit 0) at the end: a worker that never
    recovered fails here. ``env``: settings of theirs."""
    if amqp_url is not None:
        env["amqp_url"] = amqp_url

    async def start(service: str) -> FleetProcess:
        process = await fleet.spawn("worker", service, **env)
        await process.wait_for_line("consuming", timeout=60)
        return process

    processes = await asyncio.gather(*(start(service) for service in catalog.SERVICES))
    yield dict(zip(catalog.SERVICES, processes, strict=True))
    for service, process in zip(catalog.SERVICES, processes, strict=True):
        code = await process.terminate(timeout=60)
        assert code == 0, f"{service} exited {code}:\n" + "\n".join(process.lines[-30:])


async def nothing_lost(settings: Settings, timeout: float = 90) -> None:
    """At a quiet point every invariant of ``fleet verify`` holds, and no message was
    dead-lettered: a fault within the retry budget must not make a single one."""
    await verified(settings, timeout)
    queues = dead_letters.dead_letter_queues(settings, catalog.load_all())
    letters = {
        queue: [letter.reason for letter in await dead_letters.browse(settings, queue, 5)]
        for queue, depth in (await dead_letters.depths(settings, queues)).items()
        if depth
    }
    assert not letters, f"dead letters: {letters}"
