"""What the benchmarks share: a throw-away namespace, fleet processes, sample messages, the
bare consumers every fleet rate is set against (``bare_consumers``, ``faster``) and the
output.

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
import time
import unittest.mock
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aio_pika
from faststream import AckPolicy
from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitQueue
from rich.console import Console
from rich.table import Table

from contracts import (
    Envelope,
    Money,
    OrderLine,
    OutgoingMessage,
    ReserveStock,
    StockReserved,
    encode_message,
)
from workers.operations import namespace
from workers.runtime import loop
from workers.runtime.publisher import ConfirmedPublisher
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
    """The environment a ``fleet`` process needs to join the bench's namespace: this one
    without its ``FLEET_`` variables, then every setting of ``settings`` in the form the
    settings read back (checked: ``Settings()`` in that environment equals ``settings``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    for key, value in settings.model_dump().items():
        if value is not None:  # unset: the default (None), not the string "None"
            env[f"FLEET_{key.upper()}"] = _env_value(value)
    with unittest.mock.patch.dict(os.environ, env, clear=True):
        read_back = Settings()
    if read_back != settings:
        differ = [
            key
            for key in Settings.model_fields
            if getattr(read_back, key) != getattr(settings, key)
        ]
        raise ValueError(f"fleet_env does not round-trip the settings {', '.join(differ)}")
    return env


def _env_value(value: Any) -> str:
    """``value`` as the settings parse it from the environment."""
    if isinstance(value, timedelta):  # as parse_duration reads it: whole seconds, or a fraction
        whole, micro = divmod(value // timedelta(microseconds=1), 1_000_000)
        return f"{whole}.{micro:06d}s" if micro else f"{whole}s"
    if isinstance(value, list | dict | bool):
        return json.dumps(value)
    return str(value)  # str, int, and float (whose str is its repr: exact)


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
    try:
        while waiting:
            line = (await asyncio.wait_for(process.stdout.readline(), timeout=120)).decode()
            if not line:
                raise RuntimeError(f"fleet {' '.join(args)} exited before it was ready")
            waiting = {text for text in waiting if text not in line}
    except BaseException:
        # Stopped before the caller holds it (an error, Ctrl-C): stop it here, or it would
        # outlive the benchmark, and `fleet up` would set the namespace up again while the
        # benchmark tears it down.
        await stop_fleet_process(process)
        raise

    async def drain() -> None:  # keep reading, so the pipe never fills and blocks the fleet
        assert process.stdout is not None
        while await process.stdout.readline():
            pass

    asyncio.get_running_loop().create_task(drain())
    return process


async def stop_fleet_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it has not ended within a minute."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), timeout=60)
    except TimeoutError:
        process.kill()
        await process.wait()


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


# --- Bare consumers: the baselines -----------------------------------------------------

BARE_QUEUE = "bench.bare"  # <namespace>.bench.bare, a durable quorum queue of the benchmark
BARE_TIMEOUT = 600


async def preload(settings: Settings, messages: Sequence[OutgoingMessage]) -> None:
    """Publish ``messages`` persistently with confirms, 500 in flight at a time."""
    publisher = await ConfirmedPublisher.connect(settings.amqp_url)
    try:
        for start in range(0, len(messages), 500):
            await publisher.publish_many(messages[start : start + 500])
    finally:
        await publisher.close()


def bare_messages(queue: str, count: int) -> list[OutgoingMessage]:
    """``count`` reserve_stock commands as the CLI sends them (envelope in properties and
    headers, persistent), straight to ``queue``: what the fleet's consumers get, unread."""
    body = encode_message(reserve_stock(str(uuid.uuid4()), ["SKU-0001", "SKU-0002"]))
    return [
        OutgoingMessage.of(
            Envelope.new(ReserveStock.TYPE, ReserveStock.VERSION, "bench"),
            body,
            exchange="",
            routing_key=queue,
        )
        for _ in range(count)
    ]


@dataclass(frozen=True)
class Timed:
    seconds: float  # from the start (connecting included) to the last ack
    startup: float  # the part of it before consuming began
    cpu: float  # this process's CPU time in the window


class _Acks:
    """Counts acks; ``done`` is set by the ``count``-th."""

    def __init__(self, count: int) -> None:
        self.count, self.acked, self.done = count, 0, asyncio.Event()

    def one(self) -> None:
        self.acked += 1
        if self.acked == self.count:
            self.done.set()


async def _time_aio_pika(settings: Settings, queue: str, acks: _Acks, prefetch: int) -> Timed:
    """aio-pika alone: a channel with ``set_qos(prefetch_count=prefetch)``, a consumer whose
    callback acks each message."""

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        acks.one()

    started, cpu = time.perf_counter(), time.process_time()
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        source = await channel.get_queue(queue, ensure=False)
        await source.consume(on_message)
        startup = time.perf_counter() - started
        await asyncio.wait_for(acks.done.wait(), timeout=BARE_TIMEOUT)
        return Timed(time.perf_counter() - started, startup, time.process_time() - cpu)
    finally:
        await connection.close()


async def _raw_body(message: Any) -> bytes:
    # async: FastStream runs a plain-def decoder in a worker thread, one hop per message.
    body: bytes = message.body
    return body


async def _time_faststream(settings: Settings, queue: str, acks: _Acks, prefetch: int) -> Timed:
    """FastStream made cheap: no dependency injection (``apply_types=False``), no logger,
    ``Channel(prefetch_count=prefetch)``, manual acks, an async decoder passing the raw body
    through, a handler that only acks (the message from FastStream's context)."""
    broker = RabbitBroker(
        settings.amqp_url,
        apply_types=False,
        logger=None,
        default_channel=Channel(prefetch_count=prefetch),
        ack_policy=AckPolicy.MANUAL,
    )
    context = broker.context

    @broker.subscriber(
        RabbitQueue(queue, queue_type=QueueType.QUORUM, declare=False), decoder=_raw_body
    )
    async def handle(body: bytes) -> None:
        await context.get_local("message").ack()
        acks.one()

    started, cpu = time.perf_counter(), time.process_time()
    try:
        await broker.start()
        startup = time.perf_counter() - started
        await asyncio.wait_for(acks.done.wait(), timeout=BARE_TIMEOUT)
        return Timed(time.perf_counter() - started, startup, time.process_time() - cpu)
    finally:
        await broker.stop()


BARE_CONSUMERS = {"bare aio-pika": _time_aio_pika, "bare faststream": _time_faststream}


async def bare_consumers(
    bench: BenchNamespace, count: int, prefetch: int, rate: str = "msg/s"
) -> list[dict[str, Any]]:
    """A row for each bare consumer (``BARE_CONSUMERS``), one after the other on the same
    queue: ``count`` persistent messages preloaded into a durable quorum queue (not timed),
    then consumed at ``prefetch`` with an ack each, timed from connecting until the
    ``count``-th ack. ``rate`` names the row's messages-per-second column."""
    queue = f"{bench.ns}.{BARE_QUEUE}"
    if queue not in bench.extra_queues:
        await bench.declare_quorum_queue(queue)
    rows = []
    for method, consume in BARE_CONSUMERS.items():
        row: dict[str, Any] = {
            "method": f"{method} (prefetch {prefetch})",
            "prefetch": prefetch,
            "messages": count,
        }
        try:
            await bench.purge(queue)
            await preload(bench.settings, bare_messages(queue, count))
            queued = await bench.depth(queue)
            timed = await consume(bench.settings, queue, _Acks(count), prefetch)
            left = await bench.depth(queue)
            row |= {
                "seconds": timed.seconds,
                "startup s": timed.startup,
                "cpu s": timed.cpu,
                "cpu ms/msg": timed.cpu / count * 1000,
                rate: count / timed.seconds,
            }
            if queued != count or left:
                row["error"] = f"preloaded {queued} of {count}, {left} left in the queue"
        except Exception as error:
            row["error"] = f"{type(error).__name__}: {error}"
        rows.append(row)
        print(f"{row['method']} done", file=sys.stderr, flush=True)
    return rows


def faster(rows: Sequence[dict[str, Any]], rate: str = "msg/s") -> dict[str, Any] | None:
    """Of the bare rows measured without an error, the one with the higher ``rate``: the
    baseline every fleet rate is set against."""
    measured = [row for row in rows if row.get(rate) and not row.get("error")]
    return max(measured, key=lambda row: row[rate], default=None)


def versus(rate: float | None, baseline: dict[str, Any] | None, key: str) -> str | None:
    """``rate`` as a share of the baseline's, e.g. ``"47%"``."""
    if not rate or baseline is None:
        return None
    return f"{rate / baseline[key]:.0%}"


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
        left = column in ("method", "benchmark", "baseline method", "unit", "goal", "met")
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
