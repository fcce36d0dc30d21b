"""The read model's speed: live projection (events applied per second) and the time to
rebuild the view from the order service's event store, beside two bare consumers' rates
measured in the same run.

What is measured, in a fresh namespace:

* bare aio-pika and bare faststream: N persistent messages (``--bare-messages``, default
  the larger of 5,000 and the live events) preloaded into a quorum queue, consumed at the
  fleet's prefetch with an ack each, by aio-pika alone and by a FastStream broker without
  dependency injection (``_support.bare_consumers``, described in
  ``consumer_throughput.py``). The FASTER of the two is the baseline.
* projection: the live events of P orders (order.placed and order.confirmed with their
  stream versions, payment.completed, shipment.created: 4 per order, as the services send
  them) preloaded into the view's queue; then the order_view worker (in this process, its
  relay off: the view emits nothing) applies them. Events/s counts from the worker's start
  to the last inbox row, each event being one transaction (inbox, lock, read, upsert).
* rebuild: the events of R orders (placed, then confirmed or, for one in five, rejected)
  written straight into the order service's event store; then ``fleet view rebuild`` (its
  ``run_rebuild``, in this process) against ``fleet worker order`` and
  ``fleet worker order_view`` as separate processes. Seconds run from the request to the
  view's last applied event: the order service reads pages of the store and writes them to
  its outbox, its relay publishes them, the view applies them, all at once.

How to read it: ``vs bare`` is events/s over the faster bare rate (issue 17: honest
baselines; the goals are >= 40 % live, >= 35 % for a rebuild). Nothing here asserts on time.

    uv run python bench/view_throughput.py [--rebuild-orders 10000] [--live-orders 2500]
        [--bare-messages N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
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
    run,
    show,
    start_fleet_process,
    stop_fleet_process,
    versus,
)

from contracts import (
    Envelope,
    Message,
    Money,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    OutgoingMessage,
    PaymentCompleted,
    ShipmentCreated,
    encode_message,
    registry,
)
from contracts.envelope import STREAM_VERSION_HEADER
from db.engine import asyncpg_url
from workers.operations.rebuild import run_rebuild
from workers.runtime import catalog
from workers.runtime.settings import Settings
from workers.runtime.worker import Worker

POLL = 0.05
RATE = "events/s"  # of every row: the bare consumers' messages and the view's events
START = datetime(2026, 1, 1, tzinfo=UTC)


def order(n: int) -> tuple[OrderPlaced, Message, str, str]:
    """Order n: its order.placed, its decision (every fifth rejected), payment and tracking."""
    order_id = str(uuid.uuid4())
    items = [
        OrderLine(sku=f"SKU-{n % 50:04d}", quantity=1 + n % 3, unit_price=Money.of("9.90", "EUR"))
    ]
    placed = OrderPlaced(
        order_id=order_id,
        customer_id=f"CUST-{n % 100:04d}",
        items=items,
        total=items[0].subtotal(),
        country="DE",
        saga="orchestration" if n % 2 else "choreography",
    )
    payment_id, tracking = str(uuid.uuid4()), f"TRK-{n:010d}"
    decided: Message = (
        OrderRejected(order_id=order_id, reason="out of stock")
        if n % 5 == 0
        else OrderConfirmed(order_id=order_id, payment_id=payment_id, tracking_number=tracking)
    )
    return placed, decided, payment_id, tracking


# --- Projection. -----------------------------------------------------------------------


def live_events(ns: str, count: int) -> list[OutgoingMessage]:
    """The events ``count`` confirmed orders send the view, straight to its queue."""
    queue = f"{ns}.order_view.project"
    messages: list[OutgoingMessage] = []
    for n in range(count):
        placed, _, payment_id, tracking = order(n + 1)  # n + 1: never a rejected one
        confirmed = OrderConfirmed(
            order_id=placed.order_id, payment_id=payment_id, tracking_number=tracking
        )
        paid = PaymentCompleted(
            order_id=placed.order_id,
            payment_id=payment_id,
            amount=placed.total,
            saga=placed.saga,
            country=placed.country,
            items=placed.items,
        )
        shipped = ShipmentCreated(
            order_id=placed.order_id,
            shipment_id=str(uuid.uuid4()),
            tracking_number=tracking,
            saga=placed.saga,
        )
        for message, version in ((placed, 1), (paid, None), (shipped, None), (confirmed, 2)):
            envelope = Envelope.new(message.TYPE, message.VERSION, "bench", placed.order_id)
            messages.append(
                OutgoingMessage.of(
                    envelope,
                    exchange="",
                    routing_key=queue,
                    body=encode_message(message),
                    headers={} if version is None else {STREAM_VERSION_HEADER: version},
                )
            )
    return messages


async def time_projection(bench: BenchNamespace, orders: int) -> dict[str, Any]:
    settings = bench.settings
    events = live_events(bench.ns, orders)
    await preload(settings, events)
    conn = await asyncpg.connect(asyncpg_url(settings.database_url("order_view")))
    try:
        worker = Worker(settings, catalog.load("order_view"), with_relay=False)
        stop, ready = asyncio.Event(), asyncio.Event()
        started, cpu = time.perf_counter(), time.process_time()
        task = asyncio.create_task(worker.run(stop, ready))
        try:
            await ready.wait()
            while await conn.fetchval(
                "SELECT count(*) FROM inbox WHERE consumer = 'order_view.project'"
            ) < len(events):
                if task.done():
                    task.result()
                    raise RuntimeError("the view worker stopped before applying everything")
                if time.perf_counter() - started > 900:
                    raise TimeoutError("the view did not apply every event within 900 s")
                await asyncio.sleep(POLL)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            stop.set()
            await task
        rows = await conn.fetchval("SELECT count(*) FROM order_summaries WHERE status IS NOT NULL")
    finally:
        await conn.close()
    assert rows == orders, f"{rows} rows for {orders} orders"
    return {"events": len(events), "seconds": seconds, "cpu": cpu}


# --- Rebuild. --------------------------------------------------------------------------


async def seed_event_store(settings: Settings, orders: int) -> int:
    """Write ``orders`` orders' streams into the order service's store; return the events."""
    rows: list[tuple[Any, ...]] = []
    for n in range(orders):
        placed, decided, _, _ = order(n)
        at = START + timedelta(seconds=n)
        for version, message in enumerate((placed, decided), start=1):
            occurred = (at + timedelta(seconds=version)).isoformat()
            metadata = {
                "message_id": str(uuid.uuid4()),
                "correlation_id": placed.order_id,
                "occurred_at": occurred,
            }
            rows.append(
                (
                    placed.order_id,
                    version,
                    message.TYPE,
                    message.VERSION,
                    registry.encode(message).decode(),
                    json.dumps(metadata),
                )
            )
    # A plain connection: COPY is binary, and asyncpg's own jsonb codec takes the JSON text.
    conn = await asyncpg.connect(asyncpg_url(settings.database_url("order")))
    try:
        await conn.copy_records_to_table(
            "events",
            records=rows,
            columns=["stream_id", "version", "type", "contract_version", "data", "metadata"],
        )
    finally:
        await conn.close()
    return len(rows)


async def time_rebuild(bench: BenchNamespace, orders: int) -> dict[str, Any]:
    settings = bench.settings
    events = await seed_event_store(settings, orders)
    workers = []
    try:
        for service in ("order", "order_view"):
            workers.append(
                await start_fleet_process(settings, ["worker", service], ["worker consuming"])
            )
        result = await run_rebuild(settings, timeout=1800)
    finally:
        for process in workers:
            await stop_fleet_process(process)
    assert result["events"] == events and result["orders"] == orders, result
    return result


async def main(rebuild_orders: int, live_orders: int, bare_count: int, as_json: bool) -> None:
    settings = Settings(namespace=fresh_namespace())
    rows: list[dict[str, Any]] = []
    async with bench_namespace(settings) as bench:
        rows += await bare_consumers(bench, bare_count, settings.prefetch, RATE)
        for row in rows:
            row["events"] = row["messages"]
        baseline = faster(rows, RATE)
        live = await time_projection(bench, live_orders)
        live_rate = live["events"] / live["seconds"]
        rows.append(
            {
                "method": "order_view projection, live events (1 worker)",
                "orders": live_orders,
                "events": live["events"],
                "seconds": round(live["seconds"], 2),
                RATE: round(live_rate),
                "vs bare": versus(live_rate, baseline, RATE),
                "baseline": baseline["method"] if baseline else None,
            }
        )
        rebuilt = await time_rebuild(bench, rebuild_orders)
        rebuild_rate = rebuilt["events"] / rebuilt["seconds"]
        rows.append(
            {
                "method": "fleet view rebuild (order replays, view applies)",
                "orders": rebuilt["orders"],
                "events": rebuilt["events"],
                "seconds": round(rebuilt["seconds"], 2),
                RATE: round(rebuild_rate),
                "vs bare": versus(rebuild_rate, baseline, RATE),
                "baseline": baseline["method"] if baseline else None,
            }
        )
    show(
        "order_view: live projection and rebuild, vs the faster bare consumer",
        ["method", "orders", "events", "seconds", RATE, "vs bare"],
        rows,
        as_json,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild-orders", type=int, default=10_000)
    parser.add_argument("--live-orders", type=int, default=2_500)
    parser.add_argument(
        "--bare-messages",
        type=int,
        help="messages for each bare consumer (default: the larger of 5,000 and the live events)",
    )
    parser.add_argument("--json", action="store_true")
    add_loop_option(parser)
    args = parser.parse_args()
    try:
        bare = args.bare_messages or max(5_000, args.live_orders * 4)
        run(main(args.rebuild_orders, args.live_orders, bare, args.json), args.loop)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
