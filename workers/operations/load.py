"""``fleet load``: many orders at once, without a process per order, and how long they took.

It seeds what it needs (a well-stocked SKU and well-funded customers, plus what makes the
refusals it is asked for), publishes PlaceOrder pipelined with confirms, then watches the
order service's event store until every order has ended.

Latency is from the moment the broker confirmed an order's PlaceOrder to the moment its
final event was recorded (the database's clock; this tool assumes it runs on a host whose
clock agrees, as on one machine).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from contracts import Money, OrderLine, PlaceOrder
from workers.inventory import public as inventory
from workers.operations import InvalidRequest, Progress, no_progress
from workers.order import public as orders
from workers.payment import public as payment
from workers.runtime.publisher import ConfirmedPublisher
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


async def publish(
    settings: Settings, commands: list[PlaceOrder], concurrency: int, progress: Progress
) -> list[Placed]:
    publisher = await ConfirmedPublisher.connect(settings.amqp_url)
    placed: list[Placed] = []
    progress("placing", 0, len(commands))
    try:
        for start in range(0, len(commands), concurrency):
            window = commands[start : start + concurrency]
            outgoing = [
                orders.place_order_message(settings.namespace, command, producer="fleet-load")
                for command in window
            ]
            await publisher.publish_many(outgoing)
            now = time.time()
            for command in window:
                refused = (
                    command.country == "XX"
                    or command.customer_id == BROKE_CUSTOMER
                    or command.items[0].sku == SCARCE_SKU
                )
                placed.append(
                    Placed(
                        orders.order_id_for(command),
                        command.saga,
                        "REJECTED" if refused else "CONFIRMED",
                        now,
                    )
                )
            progress("placing", len(placed), len(commands))
    finally:
        await publisher.close()
    return placed


async def watch(
    settings: Settings, placed: list[Placed], timeout: float, progress: Progress
) -> dict[str, tuple[str, float]]:
    """order id -> (final status, when it was recorded), until all ended or ``timeout``."""
    ids = [order.order_id for order in placed]
    ended: dict[str, tuple[str, float]] = {}
    deadline = time.monotonic() + timeout
    progress("ending", 0, len(ids))
    while len(ended) < len(ids) and time.monotonic() < deadline:
        waiting = [order_id for order_id in ids if order_id not in ended]
        for order_id, (status, at) in (await orders.ended_orders(settings, waiting)).items():
            ended[order_id] = (str(status), at.timestamp())
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
) -> dict[str, Any]:
    """Place ``count`` orders, wait for all to end (at most ``timeout`` s), summarise."""
    if saga not in STYLES:
        raise InvalidRequest(f"saga must be orchestration, choreography or mixed, not {saga!r}")
    await seed(settings, count)
    commands = plan(count, saga, refusals, random.Random(count))
    started = time.time()
    placed = await publish(settings, commands, concurrency, progress)
    ended = await watch(settings, placed, timeout, progress)
    finished = max((at for _, at in ended.values()), default=time.time())
    return summarise(placed, ended, started, finished)
