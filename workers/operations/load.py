"""``fleet load``: many orders at once, without a process per order, and how long they took.

It seeds what it needs (a well-stocked SKU and well-funded customers, plus what makes the
refusals it is asked for), publishes PlaceOrder pipelined with confirms, then watches the
order service's event store until every order has ended.

Latency is from the moment the broker confirmed an order's PlaceOrder to the moment its
final event was recorded (the database's clock; this tool assumes it runs on a host whose
clock agrees, as on one machine).

It rides out a server restart as the workers do: a read that lost its database connection
is made again on a new one, a window of PlaceOrders whose broker connection was lost is
published again on a new one (the same message ids: each order is placed once), and the
summary says how many times it reconnected.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from contracts import Money, OrderLine, PlaceOrder
from workers.inventory import public as inventory
from workers.operations import InvalidRequest, Progress, no_progress
from workers.operations.reconnect import ReconnectingPublisher, Reconnects, read_again_on_loss
from workers.order import public as orders
from workers.payment import public as payment
from workers.runtime.settings import Settings

STYLES = ("orchestration", "choreography", "mixed")

LOAD_SKU, SCARCE_SKU = "LOAD-SKU", "LOAD-SCARCE"
BROKE_CUSTOMER = "LOAD-BROKE"
CUSTOMERS = 50


@dataclass
class Placed:
    order_id: str
    style: str
    expected: str  # CONFIRMED, or REJECTED for a deliberate refusal
    confirmed_at: float  # time.time() when the broker confirmed its PlaceOrder


def plan(count: int, saga: str, refusals: float, rng: random.Random) -> list[PlaceOrder]:
    commands = []
    for n in range(count):
        style = saga if saga != "mixed" else ("orchestration", "choreography")[n % 2]
        customer, sku, country = f"LOAD-CUST-{n % CUSTOMERS:03d}", LOAD_SKU, "DE"
        if rng.random() < refusals:
            kind = rng.choice(("stock", "money", "country"))
            sku = SCARCE_SKU if kind == "stock" else sku
            customer = BROKE_CUSTOMER if kind == "money" else customer
            country = "XX" if kind == "country" else country
        commands.append(
            PlaceOrder(
                idempotency_key=str(uuid.uuid4()),
                customer_id=customer,
                items=[OrderLine(sku=sku, quantity=1, unit_price=Money.of("1.00", "EUR"))],
                country=country,
                saga=style,
            )
        )
    return commands


async def seed(settings: Settings, count: int) -> None:
    """Enough stock and money for ``count`` orders (adds to what a previous run left)."""
    await inventory.add_stock(settings, {LOAD_SKU: count, SCARCE_SKU: 0})  # scarce: never any
    per_customer = Decimal(count // CUSTOMERS + 1)
    funds = {f"LOAD-CUST-{n:03d}": per_customer for n in range(CUSTOMERS)}
    await payment.add_funds(settings, {**funds, BROKE_CUSTOMER: Decimal("0.00")}, "EUR")


def expected_outcome(command: PlaceOrder) -> str:
    """CONFIRMED, or REJECTED for an order ``plan`` meant to be refused."""
    refused = (
        command.country == "XX"
        or command.customer_id == BROKE_CUSTOMER
        or command.items[0].sku == SCARCE_SKU
    )
    return "REJECTED" if refused else "CONFIRMED"


async def place(
    publisher: ReconnectingPublisher, namespace: str, window: list[PlaceOrder]
) -> list[Placed]:
    """Publish ``window``'s PlaceOrders pipelined, confirmed (again after a lost connection:
    a message id comes from its idempotency key, so an order is placed once)."""
    outgoing = [
        orders.place_order_message(namespace, command, producer="fleet-load") for command in window
    ]
    await publisher.publish_many(outgoing)
    now = time.time()
    return [
        Placed(orders.order_id_for(command), command.saga, expected_outcome(command), now)
        for command in window
    ]


async def publish(
    settings: Settings,
    commands: list[PlaceOrder],
    concurrency: int,
    progress: Progress,
    reconnects: Reconnects,
) -> list[Placed]:
    publisher = ReconnectingPublisher(settings.broker_urls, reconnects)
    placed: list[Placed] = []
    progress("placing", 0, len(commands))
    try:
        for start in range(0, len(commands), concurrency):
            window = commands[start : start + concurrency]
            placed += await place(publisher, settings.namespace, window)
            progress("placing", len(placed), len(commands))
    finally:
        await publisher.close()
    return placed


async def ended_by_now(
    settings: Settings, order_ids: list[str], reconnects: Reconnects
) -> dict[str, tuple[str, float]]:
    """Of ``order_ids``, those that ended: (final status, when it was recorded); read again
    when the database connection is lost."""
    found = await read_again_on_loss(
        lambda: orders.ended_orders(settings, order_ids), reconnects, "order database"
    )
    return {order_id: (str(status), at.timestamp()) for order_id, (status, at) in found.items()}


async def watch(
    settings: Settings,
    placed: list[Placed],
    timeout: float,
    progress: Progress,
    reconnects: Reconnects,
) -> dict[str, tuple[str, float]]:
    """order id -> (final status, when it was recorded), until all ended or ``timeout``."""
    ids = [order.order_id for order in placed]
    ended: dict[str, tuple[str, float]] = {}
    deadline = time.monotonic() + timeout
    progress("ending", 0, len(ids))
    while len(ended) < len(ids) and time.monotonic() < deadline:
        waiting = [order_id for order_id in ids if order_id not in ended]
        ended.update(await ended_by_now(settings, waiting, reconnects))
        progress("ending", len(ended), len(ids))
        if len(ended) < len(ids):
            await asyncio.sleep(0.25)
    return ended


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summarise(
    placed: list[Placed], ended: dict[str, tuple[str, float]], started: float, finished: float
) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {}
    unexpected = 0
    for order in placed:
        if order.order_id not in ended:
            continue
        status, at = ended[order.order_id]
        latencies.setdefault(order.style, []).append(at - order.confirmed_at)
        unexpected += status != order.expected
    every = [value for values in latencies.values() for value in values]
    seconds = finished - started
    return {
        "orders": len(placed),
        "ended": len(ended),
        "confirmed": sum(status == "CONFIRMED" for status, _ in ended.values()),
        "rejected": sum(status == "REJECTED" for status, _ in ended.values()),
        "unexpected_outcomes": unexpected,
        "seconds": round(seconds, 3),
        "sagas_per_second": round(len(ended) / seconds, 1) if seconds > 0 else None,
        "latency_ms": {
            style: {
                "p50": round(percentile(values, 0.50) * 1000),
                "p95": round(percentile(values, 0.95) * 1000),
                "p99": round(percentile(values, 0.99) * 1000),
                "mean": round(statistics.fmean(values) * 1000),
            }
            for style, values in {"all": every, **latencies}.items()
            if values
        },
    }


async def run_load(
    settings: Settings,
    count: int,
    concurrency: int,
    saga: str,
    refusals: float,
    timeout: float,
    progress: Progress = no_progress,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Place ``count`` orders, wait for all to end (at most ``timeout`` s), summarise.

    A server restart is ridden out: reads and publishes go on on a new connection (``say``
    hears of each), and the summary counts the reconnects."""
    if saga not in STYLES:
        raise InvalidRequest(f"saga must be orchestration, choreography or mixed, not {saga!r}")
    reconnects = Reconnects(say=say)
    await read_again_on_loss(lambda: seed(settings, count), reconnects, "seeding")
    commands = plan(count, saga, refusals, random.Random(count))
    started = time.time()
    placed = await publish(settings, commands, concurrency, progress, reconnects)
    ended = await watch(settings, placed, timeout, progress, reconnects)
    finished = max((at for _, at in ended.values()), default=time.time())
    return {**summarise(placed, ended, started, finished), "reconnects": reconnects.as_dict()}
