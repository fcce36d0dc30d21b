"""Completed sagas per second and placement-to-final latency, for each saga style, beside a
bare FastStream consumer's rate measured in the same run.

What is measured:

* fleet: ``fleet up`` runs the five services as separate processes in a fresh namespace;
  ``fleet load`` (its ``run_load``, in this process) places N orders of one style, pipelined
  with confirms, and waits until every order has ended. Sagas/s is N over the time from the
  first placement to the last final event; latency is from an order's confirmed PlaceOrder
  to its final event. Orchestration moves 10 messages per saga (place, placed, and a
  command and a reply for each of four steps), choreography 6; "messages/s" multiplies.
* bare: N persistent messages preloaded into a quorum queue, consumed by a RabbitBroker
  with the same prefetch whose handler only acks (see ``consumer_throughput.py``).

How to read it: the bare rate is the ceiling of one FastStream process here; a saga's
messages pass through five such processes, each doing a transaction per message, all on
the machine's cores with RabbitMQ and PostgreSQL. Nothing here asserts on time.

    uv run python bench/saga_throughput.py [--orders 1000] [--concurrency 100] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from _support import bench_namespace, fresh_namespace, show, start_fleet_process
from consumer_throughput import time_bare

from cli.load import run_load
from workers.settings import Settings

SERVICES = ("inventory", "payment", "shipping", "order", "orchestrator")
MESSAGES_PER_SAGA = {"orchestration": 10, "choreography": 6}


async def start_fleet(settings: Settings) -> asyncio.subprocess.Process:
    ready = [f"{service} worker consuming" for service in SERVICES]
    return await start_fleet_process(settings, ["up"], ready)


async def main(orders: int, concurrency: int, as_json: bool) -> None:
    settings = Settings(namespace=fresh_namespace())
    rows: list[dict[str, Any]] = []
    async with bench_namespace(settings) as bench:
        bare_queue = f"{settings.namespace}.bench.bare"
        await bench.declare_quorum_queue(bare_queue)
        bare = await time_bare(bench, bare_queue, orders * 10, settings.prefetch)
        bare_rate = orders * 10 / bare["seconds"]
        rows.append(
            {
                "method": f"bare FastStream consumer (prefetch {settings.prefetch})",
                "count": orders * 10,
                "seconds": round(bare["seconds"], 2),
                "rate/s": round(bare_rate),
                "messages/s": round(bare_rate),
            }
        )
        fleet = await start_fleet(settings)
        try:
            for style in ("orchestration", "choreography"):
                result = await run_load(settings, orders, concurrency, style, 0.0, 600, quiet=True)
                latency = result["latency_ms"].get(style, {})
                rate = result["sagas_per_second"] or 0
                rows.append(
                    {
                        "method": f"fleet, {style} sagas",
                        "count": result["ended"],
                        "seconds": result["seconds"],
                        "rate/s": rate,
                        "messages/s": round(rate * MESSAGES_PER_SAGA[style]),
                        "p50 ms": latency.get("p50"),
                        "p99 ms": latency.get("p99"),
                        "vs bare": f"{rate * MESSAGES_PER_SAGA[style] / bare_rate:.0%}",
                    }
                )
        finally:
            fleet.terminate()
            await fleet.wait()
    show(
        f"sagas end to end, {orders} orders per style (concurrency {concurrency}), vs bare",
        ["method", "count", "seconds", "rate/s", "messages/s", "p50 ms", "p99 ms", "vs bare"],
        rows,
        as_json,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.orders, args.concurrency, args.json))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
