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

import asyncpg
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.output import JsonOption, fail, print_json, print_table
from contracts import Money, OrderLine, PlaceOrder
from db.engine import asyncpg_url, create_engine
from workers.inventory import store as inventory_store
from workers.order import domain as order_domain
from workers.order.placing import place_order_message
from workers.payment import store as payment_store
from workers.publisher import ConfirmedPublisher
from workers.settings import Settings, get_settings

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
    for service, write in (
        ("inventory", _stock_up),
        ("payment", _fund),
    ):
        engine = create_engine(settings.database_url(service), pool_size=1)
        try:
            async with engine.begin() as conn:
                await write(conn, count)
        finally:
            await engine.dispose()


async def _stock_up(conn: Any, count: int) -> None:
    await inventory_store.seed(conn, LOAD_SKU, count)
    await inventory_store.seed(conn, SCARCE_SKU, 0)  # known, never in stock


async def _fund(conn: Any, count: int) -> None:
    per_customer = Decimal(count // CUSTOMERS + 1)
    for n in range(CUSTOMERS):
        await payment_store.seed_customer(conn, f"LOAD-CUST-{n:03d}", per_customer, "EUR")
    await payment_store.seed_customer(conn, BROKE_CUSTOMER, Decimal("0.00"), "EUR")


async def publish(
    settings: Settings, commands: list[PlaceOrder], concurrency: int, progress: Progress
) -> list[Placed]:
    task = progress.add_task("placing", total=len(commands))
    publisher = await ConfirmedPublisher.connect(settings.amqp_url)
    placed: list[Placed] = []
    try:
        for start in range(0, len(commands), concurrency):
            window = commands[start : start + concurrency]
            outgoing = [
                place_order_message(settings.namespace, command, producer="fleet-load")
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
                        order_domain.order_id_for(command),
                        command.saga,
                        "REJECTED" if refused else "CONFIRMED",
                        now,
                    )
                )
            progress.update(task, advance=len(window))
    finally:
        await publisher.close()
    return placed


async def watch(
    settings: Settings, placed: list[Placed], timeout: float, progress: Progress
) -> dict[str, tuple[str, float]]:
    """order id -> (final status, when it was recorded), until all ended or ``timeout``."""
    task = progress.add_task("ending", total=len(placed))
    ids = [order.order_id for order in placed]
    ended: dict[str, tuple[str, float]] = {}
    conn = await asyncpg.connect(asyncpg_url(settings.database_url("order")))
    try:
        deadline = time.monotonic() + timeout
        while len(ended) < len(ids) and time.monotonic() < deadline:
            rows = await conn.fetch(
                "SELECT stream_id, type, extract(epoch FROM recorded_at) AS at FROM events"
                " WHERE stream_id = ANY($1::text[])"
                " AND type IN ('order.confirmed', 'order.rejected')",
                [order_id for order_id in ids if order_id not in ended],
            )
            for row in rows:
                status = "CONFIRMED" if row["type"] == "order.confirmed" else "REJECTED"
                ended[row["stream_id"]] = (status, float(row["at"]))
            progress.update(task, completed=len(ended))
            if len(ended) < len(ids):
                await asyncio.sleep(0.25)
    finally:
        await conn.close()
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
    quiet: bool = False,
) -> dict[str, Any]:
    await seed(settings, count)
    commands = plan(count, saga, refusals, random.Random(count))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=quiet, transient=False) as progress:
        started = time.time()
        placed = await publish(settings, commands, concurrency, progress)
        ended = await watch(settings, placed, timeout, progress)
        finished = max((at for _, at in ended.values()), default=time.time())
    return summarise(placed, ended, started, finished)


def load(
    orders: int = typer.Option(..., "--orders", min=1, help="How many orders to place."),
    concurrency: int = typer.Option(
        100, "--concurrency", min=1, help="PlaceOrders in flight at once."
    ),
    saga: str = typer.Option("mixed", "--saga", help="orchestration, choreography or mixed."),
    refusals: float = typer.Option(
        0.0, "--refusals", min=0.0, max=1.0, help="Fraction meant to be refused."
    ),
    timeout: float = typer.Option(
        300.0, "--timeout", min=1.0, help="Seconds to wait for all to end."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Place orders fast, wait for all to end, print throughput and latency; exit 1 if some hang."""
    if saga not in ("orchestration", "choreography", "mixed"):
        fail(f"--saga must be orchestration, choreography or mixed, not {saga!r}", 2)
    result = asyncio.run(
        run_load(get_settings(), orders, concurrency, saga, refusals, timeout, quiet=as_json)
    )
    if as_json:
        print_json(result)
    else:
        typer.echo(
            f"{result['ended']}/{result['orders']} ended ({result['confirmed']} confirmed,"
            f" {result['rejected']} rejected, {result['unexpected_outcomes']} unexpected)"
            f" in {result['seconds']} s: {result['sagas_per_second']} sagas/s"
        )
        print_table(
            "placement to final, ms",
            ["saga", "p50", "p95", "p99", "mean"],
            [
                (style, v["p50"], v["p95"], v["p99"], v["mean"])
                for style, v in result["latency_ms"].items()
            ],
        )
    if result["ended"] < result["orders"]:
        raise typer.Exit(1)
