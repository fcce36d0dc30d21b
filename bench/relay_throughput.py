"""Outbox relay throughput against raw aio-pika, measured in the same run.

What is measured, for each batch size B (100, 500, 1000; 500 is the default) and each run:

* raw: N persistent, mandatory messages with the relay's body, properties and headers,
  published with aio-pika on a confirm channel (``on_return_raises=True``), pipelined in
  windows of B (gather a window, await its confirms, next window). The fastest honest way
  to get N confirmed messages onto the broker: the ceiling for the relay.
* relay: N rows bulk-inserted into the inventory ``outbox`` (not timed), then
  ``Relay(settings, "inventory", publisher).drain(conn)`` timed until every row is published
  and marked. Each batch is claim (SELECT ... FOR UPDATE SKIP LOCKED) -> publish pipelined
  with confirms -> mark published -> commit.

Both publish to ``<ns>.events`` with routing key ``stock.reserved`` into one durable quorum
queue bound for it, so every message is really routed and confirmed by the quorum; the queue
is purged between measurements and its depth checked (== N) after each.

How to read it: ``msg/s`` is N / median seconds over the runs; ``vs raw`` is the relay's
rate over the raw rate at the same batch size (issue 17's goal: >= 90 %). ``cpu s`` is this
Python process's CPU time in the timed window (median): the part of ``median s`` not spent
in Python is spent waiting on PostgreSQL round trips and broker confirms. RabbitMQ,
PostgreSQL and this Python process share the machine, so compare ratios, not absolute
numbers, across machines; ``min s`` shows how noisy the machine was. Nothing here asserts
on time.

    uv run python bench/relay_throughput.py [--messages 20000] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
from _support import (
    BenchNamespace,
    add_loop_option,
    bench_namespace,
    fresh_namespace,
    median,
    run,
    show,
    stock_reserved_body,
)

from contracts import Envelope, OutgoingMessage, StockReserved
from contracts.routing import events_exchange
from db import outbox
from db.engine import asyncpg_url
from db.postgres import PostgresRelaySession
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.relay import Relay
from workers.runtime.settings import Settings

SERVICE = "inventory"
ROUTING_KEY = StockReserved.TYPE
BATCH_SIZES = (100, 500, 1000)
OUTBOX_COLUMNS = (
    "message_id",
    "exchange",
    "routing_key",
    "type",
    "version",
    "correlation_id",
    "causation_id",
    "producer",
    "occurred_at",
    "headers",
    "body",
)


@dataclass
class Measurement:
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def rate(self, count: int) -> float | None:
        """Messages per second over the median run, if any run succeeded."""
        return count / median(self.seconds) if self.seconds else None


def envelopes(count: int) -> list[Envelope]:
    return [
        Envelope.new(
            ROUTING_KEY,
            StockReserved.VERSION,
            SERVICE,
            correlation_id=str(uuid.uuid4()),
            causation_id=str(uuid.uuid4()),
        )
        for _ in range(count)
    ]


def raw_message(envelope: Envelope, body: bytes) -> aio_pika.Message:
    """What the relay sends for an outbox row, built directly with aio-pika."""
    return aio_pika.Message(
        body,
        headers={"x-contract-version": envelope.version, "x-causation-id": envelope.causation_id},
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=envelope.message_id,
        type=envelope.type,
        correlation_id=envelope.correlation_id,
        timestamp=envelope.occurred_at,
        app_id=envelope.producer,
    )


async def time_raw(
    connection: aio_pika.abc.AbstractConnection, ns: str, body: bytes, count: int, window: int
) -> tuple[float, float, int]:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        exchange = await channel.get_exchange(events_exchange(ns), ensure=False)
        pending = envelopes(count)
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, count, window):
            await asyncio.gather(
                *(
                    exchange.publish(raw_message(envelope, body), ROUTING_KEY, mandatory=True)
                    for envelope in pending[start : start + window]
                )
            )
        return time.perf_counter() - started, time.process_time() - cpu, count
    finally:
        await channel.close()


async def fill_outbox(conn: asyncpg.Connection, ns: str, body: bytes, count: int) -> None:
    await conn.execute("TRUNCATE outbox")
    exchange = events_exchange(ns)
    records = [
        (
            e.message_id,
            exchange,
            ROUTING_KEY,
            e.type,
            e.version,
            e.correlation_id,
            e.causation_id,
            e.producer,
            e.occurred_at,
            # The headers as the unit of work writes them.
            json.dumps(dict(OutgoingMessage.of(e, body, exchange="", routing_key="").headers)),
            body,
        )
        for e in envelopes(count)
    ]
    await conn.copy_records_to_table("outbox", records=records, columns=OUTBOX_COLUMNS)


async def time_relay(
    settings: Settings, publisher: ConfirmedPublisher, conn: asyncpg.Connection
) -> tuple[float, float, int]:
    relay = Relay(settings, SERVICE, publisher)
    started, cpu = time.perf_counter(), time.process_time()
    published = await relay.drain(PostgresRelaySession(conn))
    return time.perf_counter() - started, time.process_time() - cpu, published


async def measure(
    bench: BenchNamespace, sink: str, method: str, batch: int, count: int, into: Measurement
) -> None:
    settings = bench.settings.model_copy(update={"relay_batch_size": batch})
    body = stock_reserved_body()
    await bench.purge(sink)
    if method == "raw":
        seconds, cpu, sent = await time_raw(bench.connection, bench.ns, body, count, batch)
    else:
        conn = await asyncpg.connect(asyncpg_url(settings.database_url(SERVICE)))
        publisher = await ConfirmedPublisher.connect(settings.amqp_url)
        try:
            await fill_outbox(conn, bench.ns, body, count)
            await publisher.channel()  # open the confirm channel before the clock starts
            seconds, cpu, sent = await time_relay(settings, publisher, conn)
            left = await conn.fetchval(outbox.COUNT_UNPUBLISHED)
            if left:
                into.errors.append(f"{left} rows left unpublished")
        finally:
            await publisher.close()
            await conn.close()
    depth = await bench.depth(sink)
    if sent != count or depth != count:
        into.errors.append(f"published {sent}, queue depth {depth}, expected {count}")
    into.seconds.append(seconds)
    into.cpu.append(cpu)


async def main(count: int, runs: int, batch_sizes: Sequence[int], as_json: bool) -> None:
    settings = Settings(namespace=fresh_namespace())
    results = {
        (method, batch): Measurement() for batch in batch_sizes for method in ("raw", "relay")
    }
    async with bench_namespace(settings) as bench:
        sink = f"{bench.ns}.bench.relay_sink"
        await bench.declare_quorum_queue(sink, (events_exchange(bench.ns), ROUTING_KEY))
        # Warm-up, not measured: the first publishes into a new quorum queue are slower.
        await measure(bench, sink, "raw", batch_sizes[0], min(count, 2_000), Measurement())
        for run in range(1, runs + 1):
            for batch in batch_sizes:
                for method in ("raw", "relay"):
                    result = results[(method, batch)]
                    try:
                        await measure(bench, sink, method, batch, count, result)
                    except Exception as error:
                        result.errors.append(f"{type(error).__name__}: {error}")
            print(f"run {run}/{runs} done", flush=True, file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for batch in batch_sizes:
        raw_rate = results[("raw", batch)].rate(count)
        for method in ("raw", "relay"):
            result = results[(method, batch)]
            rate = result.rate(count)
            ratio = rate / raw_rate if method == "relay" and rate and raw_rate else None
            rows.append(
                {
                    "method": f"{method} (batch {batch})",
                    "batch": batch,
                    "messages": count,
                    "runs": len(result.seconds),
                    "median s": median(result.seconds) if result.seconds else None,
                    "min s": min(result.seconds) if result.seconds else None,
                    "cpu s": median(result.cpu) if result.cpu else None,
                    "msg/s": rate,
                    "vs raw": f"{ratio:.0%}" if ratio else None,
                    "ratio": ratio,
                    "error": "; ".join(sorted(set(result.errors))) or None,
                }
            )
    show(
        f"outbox relay vs raw aio-pika, {count} messages x {runs} runs "
        f"(quorum queue, confirms; default batch {settings.relay_batch_size})",
        ["method", "messages", "runs", "median s", "min s", "cpu s", "msg/s", "vs raw"],
        rows,
        as_json,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--batch-sizes", default=",".join(map(str, BATCH_SIZES)), help="comma-separated"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_loop_option(parser)
    args = parser.parse_args()
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    try:
        run(main(args.messages, args.runs, sizes, args.json), args.loop)
    except KeyboardInterrupt:
        sys.exit(130)  # cleaned up already (see _support.bench_namespace)


if __name__ == "__main__":
    cli()
