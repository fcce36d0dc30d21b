"""The fleet's idempotent consumer against two bare consumers, in the same run.

What is measured, for each prefetch P (``settings.prefetch``, default 20, and 50), with N
persistent ``inventory.reserve_stock`` messages each time (``_support.bare_consumers``):

* bare aio-pika: the N messages preloaded into a durable quorum queue, consumed with
  aio-pika directly on a channel with ``set_qos(prefetch_count=P)``, a manual ``ack()`` per
  message. Timed from connecting until the N-th ack.
* bare faststream: the same, consumed by a RabbitBroker made cheap: ``apply_types=False``
  (no dependency injection), no logger, ``Channel(prefetch_count=P)``,
  ``AckPolicy.MANUAL``, an async decoder handing over the raw body, a handler that only
  acks. Timed from ``broker.start()`` until the N-th ack.
* fleet: N valid ``inventory.reserve_stock`` commands (distinct orders, SKUs seeded with
  plenty of stock) preloaded into ``<ns>.inventory.reserve_stock`` through the commands
  exchange with ``ConfirmedPublisher``; then ``Worker(settings, inventory, with_relay=False)``
  runs in this process, timed from its start until its consumer has settled N deliveries
  (its outcome counter, polled every 20 ms; the inbox, reservations and outbox are counted
  afterwards). Each message is: envelope + contract decode, then a transaction (shared by a
  batch of deliveries) with the inbox row, the reservation (advisory lock, row locks, stock
  update, ledger) and the ``stock.reserved`` outbox row, then the ack.

How to read it: ``msg/s`` is N / seconds; ``vs bare`` is the fleet's rate over the FASTER
bare rate at the same prefetch (issue 17: honest baselines; the goal is >= 50 %).
``startup s`` is the part of ``seconds`` before consuming began (connecting, declaring),
included in every row. ``cpu s`` is this Python process's CPU time in the timed window,
``cpu ms/msg`` the same per message: ``cpu s`` close to ``seconds`` means the process
itself (one core) is the bottleneck, far below it means it waits on PostgreSQL or
RabbitMQ. The bare rows are the ceiling of one Python process + RabbitMQ here; the gap is
the price of the idempotent consumer's transactions. RabbitMQ, PostgreSQL and this process
share the machine's cores, so compare ratios, not absolute rates, across machines. Nothing
here asserts on time.

    uv run python bench/consumer_throughput.py [--messages 5000] [--prefetch 20,50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from _support import (
    BenchNamespace,
    add_loop_option,
    bare_consumers,
    bench_namespace,
    faster,
    fresh_namespace,
    preload,
    reserve_stock,
    run,
    show,
    versus,
)

from contracts import Envelope, OutgoingMessage, ReserveStock, encode_message
from contracts.routing import commands_exchange
from db.engine import asyncpg_url
from workers.inventory import public as inventory
from workers.runtime import catalog
from workers.runtime.settings import Settings
from workers.runtime.worker import Worker

SERVICE = "inventory"
HANDLER = "reserve_stock"
CONSUMER = f"{SERVICE}.{HANDLER}"  # the handler's inbox consumer name
# Order i takes SKUs 2i and 2i+1 (mod SKU_COUNT): orders in flight together never share a
# stock row, so the numbers show the consumer's own cost, not lock waits on hot SKUs.
SKU_COUNT = 1_000
POLL = 0.02


def commands(ns: str, count: int) -> list[OutgoingMessage]:
    """``count`` reserve_stock commands for new orders, two SKUs each, as the CLI sends them."""
    messages = []
    for i in range(count):
        order_id = str(uuid.uuid4())
        skus = [sku(2 * i % SKU_COUNT), sku((2 * i + 1) % SKU_COUNT)]
        envelope = Envelope.new(ReserveStock.TYPE, ReserveStock.VERSION, "bench", order_id)
        messages.append(
            OutgoingMessage.of(
                envelope,
                exchange=commands_exchange(ns),
                routing_key=ReserveStock.TYPE,
                body=encode_message(reserve_stock(order_id, skus)),
            )
        )
    return messages


def sku(i: int) -> str:
    return f"BENCH-{i:04d}"


async def seed(settings: Settings, stock_each: int) -> None:
    await inventory.add_stock(settings, {sku(i): stock_each for i in range(SKU_COUNT)})


async def outcome_counts(conn: asyncpg.Connection) -> tuple[int, int, int]:
    """(inbox rows, reserved orders, outbox rows) of the inventory database."""
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM inbox WHERE consumer = $1),
                  (SELECT count(*) FROM reservations WHERE status = 'reserved'),
                  (SELECT count(*) FROM outbox)""",
        CONSUMER,
    )
    return row[0], row[1], row[2]


def _settled(worker: Worker) -> int:
    return sum(worker.consumer.outcomes.values()) if worker.consumer is not None else 0


async def time_fleet(bench: BenchNamespace, count: int, prefetch: int) -> dict[str, Any]:
    settings = bench.settings.model_copy(update={"prefetch": prefetch})
    queue = f"{bench.ns}.{SERVICE}.{HANDLER}"
    await preload(settings, commands(bench.ns, count))
    queued = await bench.depth(queue)
    conn = await asyncpg.connect(asyncpg_url(settings.database_url(SERVICE)))
    try:
        before = await outcome_counts(conn)
        worker = Worker(settings, catalog.load(SERVICE), with_relay=False)
        stop, ready = asyncio.Event(), asyncio.Event()
        started, cpu = time.perf_counter(), time.process_time()
        task = asyncio.create_task(worker.run(stop, ready))
        try:
            await ready.wait()
            startup = time.perf_counter() - started
            # The worker's own count of what it settled: polling the inbox would load the
            # database the worker is measured on.
            while _settled(worker) < count:
                if task.done():
                    task.result()  # the worker died: raise its error
                    raise RuntimeError("the worker stopped before consuming everything")
                if time.perf_counter() - started > 600:
                    raise TimeoutError(f"{_settled(worker)} of {count} settled after 600 s")
                await asyncio.sleep(POLL)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            stop.set()
            await task
        after = await outcome_counts(conn)
    finally:
        await conn.close()
    left = await bench.depth(queue)
    dead = await bench.depth(f"{queue}.dlq")
    inbox, reserved, emitted = (a - b for a, b in zip(after, before, strict=True))
    error = None
    if (queued, inbox, reserved, emitted, left, dead) != (count, count, count, count, 0, 0):
        error = (
            f"preloaded {queued} of {count}; new inbox rows {inbox}, reservations {reserved}, "
            f"outbox rows {emitted}; left in queue {left}, dead-lettered {dead}"
        )
    return {"seconds": seconds, "startup s": startup, "cpu s": cpu, "error": error}


async def main(count: int, prefetches: Sequence[int], as_json: bool) -> None:
    settings = Settings(namespace=fresh_namespace())
    rows: list[dict[str, Any]] = []
    async with bench_namespace(settings) as bench:
        await seed(settings, stock_each=2 * count * len(prefetches) + 1)
        for prefetch in prefetches:
            bare = await bare_consumers(bench, count, prefetch)
            baseline = faster(bare)
            try:
                fleet = await time_fleet(bench, count, prefetch)
            except Exception as error:
                fleet = {"error": f"{type(error).__name__}: {error}"}
            seconds, cpu = fleet.get("seconds"), fleet.get("cpu s")
            fleet |= {
                "method": f"fleet consumer (prefetch {prefetch})",
                "prefetch": prefetch,
                "messages": count,
                "cpu ms/msg": cpu / count * 1000 if cpu else None,
                "msg/s": count / seconds if seconds else None,
            }
            fleet["vs bare"] = versus(fleet["msg/s"], baseline, "msg/s")
            fleet["baseline"] = baseline["method"] if baseline else None
            print(f"{fleet['method']} done", file=sys.stderr, flush=True)
            rows += [*bare, fleet]
    show(
        f"idempotent consumer vs the faster bare consumer, {count} messages "
        "(quorum queues, manual ack)",
        ["method", "messages", "seconds", "startup s", "cpu s", "cpu ms/msg", "msg/s", "vs bare"],
        rows,
        as_json,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument(
        "--prefetch",
        default=f"{Settings().prefetch},50",
        help="comma-separated prefetch counts (default: settings.prefetch and 50)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_loop_option(parser)
    args = parser.parse_args()
    prefetches = list(dict.fromkeys(int(p) for p in args.prefetch.split(",")))
    try:
        run(main(args.messages, prefetches, args.json), args.loop)
    except KeyboardInterrupt:
        sys.exit(130)  # cleaned up already (see _support.bench_namespace)


if __name__ == "__main__":
    cli()
