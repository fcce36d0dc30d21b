"""Completed sagas per second and placement-to-final latency, for each saga style, beside
two bare consumers' rates measured in the same run.

What is measured:

* fleet: ``fleet up`` runs the six services as separate processes in a fresh namespace;
  ``fleet load`` (its ``run_load``, in this process) places N orders of one style, pipelined
  with confirms, and waits until every order has ended. Sagas/s is N over the time from the
  first placement to the last final event; latency is from an order's confirmed PlaceOrder
  to its final event. Orchestration moves 10 messages per saga (place, placed, and a
  command and a reply for each of four steps), choreography 6; "messages/s" multiplies.
* bare aio-pika and bare faststream: 10 N persistent messages preloaded into a quorum
  queue, consumed at the fleet's prefetch with an ack each, by aio-pika alone and by a
  FastStream broker without dependency injection (``_support.bare_consumers``, described in
  ``consumer_throughput.py``). The FASTER of the two is the baseline.
* deliveries/saga: every message the services emitted during the run (their outboxes),
  times the handler queues bound for it, plus the PlaceOrder itself, over the sagas; the
  read model's queues included. transactions/saga: the inbox rows written meanwhile: a
  delivery that opens a transaction writes one, a delivery the handler's filter leaves to
  another saga style (acked before any transaction) writes none.

How to read it: ``vs bare`` is a style's messages/s over the faster bare rate (issue 17:
honest baselines; the goal is >= 25 % for each style). The bare rate is the ceiling of one
Python process here; a saga's messages pass through six processes, each doing transactions
for its deliveries, all on the machine's cores with RabbitMQ and PostgreSQL. Nothing here
asserts on time; a row has an ``error`` if an order did not end, or ended otherwise than
planned.

    uv run python bench/saga_throughput.py [--orders 1000] [--concurrency 100] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Any

import asyncpg
from _support import (
    add_loop_option,
    bare_consumers,
    bench_namespace,
    faster,
    fresh_namespace,
    run,
    show,
    start_fleet_process,
    stop_fleet_process,
    versus,
)

from db.engine import asyncpg_url
from workers.operations.load import run_load
from workers.runtime import catalog
from workers.runtime.settings import Settings

MESSAGES_PER_SAGA = {"orchestration": 10, "choreography": 6}
RATE = "messages/s"  # of every row: the bare consumers' and the sagas' messages


async def start_fleet(settings: Settings) -> asyncio.subprocess.Process:
    ready = [f"{service} worker consuming" for service in catalog.SERVICES]
    return await start_fleet_process(settings, ["up"], ready)


@dataclass
class Traffic:
    """Per service: the last outbox id and the inbox rows, at one moment."""

    outbox_ids: dict[str, int]
    inbox_rows: dict[str, int]


async def traffic(settings: Settings) -> Traffic:
    outbox_ids, inbox_rows = {}, {}
    for service in catalog.SERVICES:
        conn = await asyncpg.connect(asyncpg_url(settings.database_url(service)))
        try:
            outbox_ids[service] = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
            inbox_rows[service] = await conn.fetchval("SELECT count(*) FROM inbox")
        finally:
            await conn.close()
    return Traffic(outbox_ids, inbox_rows)


async def deliveries_since(settings: Settings, before: Traffic, placed: int) -> tuple[int, int]:
    """(deliveries, transactions) since ``before``: every message a service emitted since,
    times the handler queues bound for it, plus the ``placed`` PlaceOrders; and the inbox
    rows written since (a delivery that opens a transaction writes one)."""
    bound: dict[tuple[str, str], int] = {}
    for runnable in catalog.load_all():
        for spec in runnable.queue_specs(settings.namespace):
            for binding in spec.bindings:
                bound[binding] = bound.get(binding, 0) + 1
    deliveries = placed
    after = await traffic(settings)
    for service in catalog.SERVICES:
        conn = await asyncpg.connect(asyncpg_url(settings.database_url(service)))
        try:
            rows = await conn.fetch(
                "SELECT exchange, routing_key, count(*) AS n FROM outbox WHERE id > $1"
                " GROUP BY exchange, routing_key",
                before.outbox_ids[service],
            )
        finally:
            await conn.close()
        deliveries += sum(bound.get((r["exchange"], r["routing_key"]), 0) * r["n"] for r in rows)
    transactions = sum(after.inbox_rows.values()) - sum(before.inbox_rows.values())
    return deliveries, transactions


async def quiet(settings: Settings, bench: Any) -> None:
    """Until every handler queue is empty and the inbox stops growing (the view and the
    orchestrator may still be at work when the last order has ended)."""
    names = [spec.name for s in catalog.load_all() for spec in s.queue_specs(settings.namespace)]
    last = -1
    while True:
        depths = [await bench.depth(name) for name in names]
        rows = sum((await traffic(settings)).inbox_rows.values())
        if not any(depths) and rows == last:
            return
        last = rows
        await asyncio.sleep(1.0)


async def main(orders: int, concurrency: int, bare_count: int, as_json: bool) -> None:
    settings = Settings(namespace=fresh_namespace())
    rows: list[dict[str, Any]] = []
    async with bench_namespace(settings) as bench:
        rows += await bare_consumers(bench, bare_count, settings.prefetch, RATE)
        baseline = faster(rows, RATE)
        fleet = await start_fleet(settings)
        try:
            for style in ("orchestration", "choreography"):
                before = await traffic(settings)
                result = await run_load(settings, orders, concurrency, style, 0.0, 600)
                await quiet(settings, bench)
                deliveries, transactions = await deliveries_since(settings, before, orders)
                latency = result["latency_ms"].get(style, {})
                rate = result["sagas_per_second"] or 0
                messages = round(rate * MESSAGES_PER_SAGA[style])
                error = None
                if result["ended"] != orders or result["unexpected_outcomes"]:
                    error = (
                        f"{result['ended']} of {orders} orders ended, "
                        f"{result['unexpected_outcomes']} otherwise than planned"
                    )
                rows.append(
                    {
                        "method": f"fleet, {style} sagas",
                        "count": result["ended"],
                        "seconds": result["seconds"],
                        "rate/s": rate,
                        RATE: messages,
                        "p50 ms": latency.get("p50"),
                        "p99 ms": latency.get("p99"),
                        "vs bare": versus(messages, baseline, RATE),
                        "baseline": baseline["method"] if baseline else None,
                        "deliveries/saga": round(deliveries / orders, 2),
                        "transactions/saga": round(transactions / orders, 2),
                        "error": error,
                    }
                )
        finally:
            await stop_fleet_process(fleet)
    for row in rows:
        row.setdefault("count", row.get("messages"))
    show(
        f"sagas end to end, {orders} orders per style (concurrency {concurrency}), "
        "vs the faster bare consumer",
        [
            "method",
            "count",
            "seconds",
            "rate/s",
            RATE,
            "p50 ms",
            "p99 ms",
            "vs bare",
            "deliveries/saga",
            "transactions/saga",
        ],
        rows,
        as_json,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--bare-messages",
        type=int,
        help="messages for the bare consumers (default: 10 per order, at least 5,000, so"
        " that connecting is not most of their time)",
    )
    parser.add_argument("--json", action="store_true")
    add_loop_option(parser)
    args = parser.parse_args()
    bare_count = args.bare_messages or max(5_000, args.orders * 10)
    try:
        run(main(args.orders, args.concurrency, bare_count, args.json), args.loop)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
