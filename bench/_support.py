"""What the benchmarks share: a throw-away namespace, fleet processes, sample messages and
the output.

async with bench_namespace(Settings(namespace=fresh_namespace())) as ns:
    ...  # databases provisioned and migrated, topology declared
# queues, exchanges, databases and roles removed (workers.operations.namespace.tear_down),
# even after an error or Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from rich.console import Console
from rich.table import Table

from contracts import Money, OrderLine, ReserveStock, StockReserved, encode_message
from workers.operations import namespace
from workers.runtime import loop
from workers.runtime.settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_loop_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default=Settings().event_loop,
        help="the event loop of this process and the fleet processes it starts "
        "(default: the fleet's, FLEET_EVENT_LOOP)",
    )


def run(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """``main`` on the event loop chosen, which fleet processes started from it use too."""
    os.environ["FLEET_EVENT_LOOP"] = event_loop  # read by every Settings() from here on
    loop.run(main, Settings())


def fleet_env(settings: Settings) -> dict[str, str]:
    """The environment a ``fleet`` process needs to join the bench's namespace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    for key, value in settings.model_dump().items():
        env[f"FLEET_{key.upper()}"] = (
            json.dumps(value) if isinstance(value, list | dict) else str(value)
        )
    return env


async def start_fleet_process(
    settings: Settings, args: Sequence[str], ready: Sequence[str]
) -> asyncio.subprocess.Process:
    """``fleet *args`` in the namespace, once its output has shown every line of ``ready``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        *args,
        cwd=ROOT,
        env=fleet_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    waiting = set(ready)
    while waiting:
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=120)).decode()
        if not line:
            raise RuntimeError(f"fleet {' '.join(args)} exited before it was ready")
        waiting = {text for text in waiting if text not in line}

    async def drain() -> None:  # keep reading, so the pipe never fills and blocks the fleet
        assert process.stdout is not None
        while await process.stdout.readline():
            pass

    asyncio.get_running_loop().create_task(drain())
    return process


def fresh_namespace() -> str:
    return f"bench{secrets.token_hex(4)}"


@dataclass
class BenchNamespace:
    settings: Settings
    connection: aio_pika.abc.AbstractConnection
    extra_queues: list[str] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return self.settings.namespace

    async def declare_quorum_queue(self, name: str, bind_to: tuple[str, str] | None = None) -> None:
        """A durable quorum queue owned by the benchmark (deleted with the namespace)."""
        self.extra_queues.append(name)
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(
                name, durable=True, arguments={"x-queue-type": "quorum"}
            )
            if bind_to is not None:
                await queue.bind(*bind_to)
        finally:
            await channel.close()

    async def depth(self, name: str) -> int:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            return queue.declaration_result.message_count or 0
        finally:
            await channel.close()

    async def purge(self, name: str) -> None:
        channel = await self.connection.channel()
        try:
            queue = await channel.get_queue(name, ensure=False)
            await queue.purge()
        finally:
            await channel.close()


@contextlib.asynccontextmanager
async def bench_namespace(settings: Settings) -> AsyncIterator[BenchNamespace]:
    """Set the namespace up (databases, topology); tear all of it down afterwards, as
    `fleet teardown` does, with the queues the benchmark declared itself."""
    connection = await aio_pika.connect(settings.amqp_url)
    bench = BenchNamespace(settings, connection)
    try:
        print(f"namespace {settings.namespace}: provisioning", file=sys.stderr)
        await namespace.set_up(settings)
        yield bench
    finally:
        print(f"namespace {settings.namespace}: cleaning up", file=sys.stderr)
        # A second Ctrl-C would abort asyncio.run mid-cleanup and leave databases behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            with contextlib.suppress(Exception):
                await connection.close()
            await namespace.tear_down(settings, extra_queues=bench.extra_queues)
        finally:
            signal.signal(signal.SIGINT, previous)


# --- Sample messages ----------------------------------------------------------------


def reserve_stock(order_id: str, skus: Sequence[str]) -> ReserveStock:
    """A valid reserve_stock command for ``order_id``: one of each SKU at 9.99 EUR."""
    items = [OrderLine(sku=sku, quantity=1, unit_price=Money.of("9.99", "EUR")) for sku in skus]
    total = Money.of("0", "EUR")
    for item in items:
        total = total + item.subtotal()
    return ReserveStock(
        order_id=order_id,
        items=items,
        saga="orchestration",
        customer_id="bench-customer",
        total=total,
        country="DE",
    )


def stock_reserved_body() -> bytes:
    """The body of a typical event the inventory relay publishes (two order lines)."""
    command = reserve_stock(str(uuid.uuid4()), ["SKU-0001", "SKU-0002"])
    return encode_message(
        StockReserved(
            order_id=command.order_id,
            items=command.items,
            saga=command.saga,
            customer_id=command.customer_id,
            total=command.total,
            country=command.country,
        )
    )


# --- Output ---------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def show(
    title: str,
    columns: Sequence[str],
    rows: Sequence[dict[str, Any]],
    as_json: bool,
    width: int = 140,
) -> None:
    """A table, then each row's error (if any) on its own line; or all of it as JSON."""
    if as_json:
        sys.stdout.write(json.dumps({"title": title, "rows": list(rows)}, indent=2) + "\n")
        return
    table = Table(title=title)
    for column in columns:
        left = column in ("method", "benchmark", "unit", "goal", "met")
        table.add_column(column, justify="left" if left else "right")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    console = Console(width=max(width, Console().width))
    console.print(table)
    for row in rows:
        if row.get("error"):
            console.print(f"[red]error[/red] {row['method']}: {row['error']}", highlight=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
