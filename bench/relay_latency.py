"""Commit-to-publish latency of the outbox relay, on each engine, measured in the same run.

What is measured: payment's database in a fresh namespace per engine (all PostgreSQL, then
with ``FLEET_ENGINES={"payment": "mariadb"}``); a relay for it runs in this process, as in a
worker, and a queue of the benchmark's is bound to the events exchange. N transactions, one
at a time at a steady pace, each put one message in the outbox and commit; the latency of a
message is from just after its commit to its delivery from that queue. PostgreSQL wakes the
relay by NOTIFY (delivered at commit); MariaDB has none, so the committing transaction wakes
the relay of its own process, and a relay elsewhere would hear only the poll
(``FLEET_RELAY_POLL_INTERVAL``). Both include one publish with confirm and one delivery.

    uv run python bench/relay_latency.py [--messages 300] [--pace-ms 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import aio_pika
from _support import add_loop_option, bench_namespace, fresh_namespace, run, show

from contracts import Send, StockReleased
from contracts.routing import events_exchange
from db.adapters import open_store
from db.unit_of_work import outgoing
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.relay import Relay
from workers.runtime.settings import Settings

SERVICE = "payment"
ENGINES = ("postgresql", "mariadb")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def measure(engine: str, messages: int, pace: float) -> dict[str, Any]:
    settings = Settings(namespace=fresh_namespace(), engines={SERVICE: engine})
    committed: dict[str, float] = {}
    latencies: list[float] = []
    received = asyncio.Event()
    async with bench_namespace(settings) as bench:
        queue_name = f"{settings.namespace}.bench.latency"
        await bench.declare_quorum_queue(
            queue_name, bind_to=(events_exchange(settings.namespace), "stock.released")
        )
        connection = await aio_pika.connect(settings.amqp_url)
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            arrived = time.perf_counter()
            at = committed.get(str(message.message_id))
            if at is not None:
                latencies.append(1000 * (arrived - at))
                if len(latencies) == messages:
                    received.set()
            await message.ack()

        await queue.consume(on_message)
        store = await open_store(settings.database_url(SERVICE), size=2)
        publisher = await ConfirmedPublisher.connect(settings.broker_urls)
        stop = asyncio.Event()
        relay = Relay(settings, SERVICE, publisher)
        relay_task = asyncio.create_task(relay.run(stop))
        try:
            for _ in range(600):  # the relay takes its lock within a minute
                if relay.active:
                    break
                await asyncio.sleep(0.1)
            started = time.perf_counter()
            for number in range(messages):
                order_id = f"00000000-0000-4000-8000-{number:012d}"
                sent = outgoing(
                    Send(StockReleased(order_id=order_id, saga="orchestration")),
                    producer="bench",
                    namespace=settings.namespace,
                    cause=None,
                )
                async with store.transaction() as conn:
                    await store.append(conn, [sent])
                committed[str(sent.message_id)] = time.perf_counter()
                await asyncio.sleep(max(0.0, started + (number + 1) * pace - time.perf_counter()))
            await asyncio.wait_for(received.wait(), timeout=60)
        finally:
            stop.set()
            await relay_task
            await publisher.close()
            await store.close()
            await connection.close()
    print(f"{engine}: {len(latencies)} of {messages} measured", file=sys.stderr)
    return {
        "method": f"commit to delivery, payment on {engine}",
        "engine": engine,
        "count": len(latencies),
        "p50 ms": round(percentile(latencies, 0.50), 2),
        "p99 ms": round(percentile(latencies, 0.99), 2),
        "max ms": round(max(latencies), 2),
    }


async def main(messages: int, pace_ms: float, as_json: bool) -> None:
    rows = [await measure(engine, messages, pace_ms / 1000) for engine in ENGINES]
    postgresql = rows[0]
    for row in rows[1:]:
        row["p50 vs postgresql"] = f"{row['p50 ms'] / postgresql['p50 ms']:.1f}x"
        row["p99 vs postgresql"] = f"{row['p99 ms'] / postgresql['p99 ms']:.1f}x"
    show(
        f"outbox relay, commit to delivery, {messages} single-message transactions,"
        f" one every {pace_ms:g} ms",
        ["method", "count", "p50 ms", "p99 ms", "max ms", "p50 vs postgresql", "p99 vs postgresql"],
        rows,
        as_json,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    add_loop_option(parser)
    args = parser.parse_args()
    run(main(args.messages, args.pace_ms, args.json), args.loop)


if __name__ == "__main__":
    cli()
