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

* --engines payment=mariadb: the fleet runs twice in the same run, in two namespaces: all on
  PostgreSQL, then with the services named on MariaDB (``FLEET_ENGINES``); ``vs all-pg`` is
  each style's sagas/s on the mixed fleet over the same style's on all-PostgreSQL (issue
  19's goal: at least 80 %).

How to read it: ``vs bare`` is a style's messages/s over the faster bare rate (issue 17:
honest baselines; the goal is >= 25 % for each style). The bare rate is the ceiling of one
Python process here; a saga's messages pass through six processes, each doing transactions
for its deliveries, all on the machine's cores with RabbitMQ and PostgreSQL. Nothing here
asserts on time; a row has an ``error`` if an order did not end, or ended otherwise than
planned.

    uv run python bench/saga_throughput.py [--orders 1000] [--concurrency 100]
        [--engines payment=mariadb] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Any

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

from db.adapters import store_once
from db.engine import ENGINES
from db.mariadb import MariaConnection
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


async def read(settings: Settings, service: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of ``sql`` (``$1`` parameters) in ``service``'s database, whatever its engine."""
    async with store_once(settings.database_url(service)) as store, store.connection() as conn:
        if isinstance(conn, MariaConnection):
            for number in range(len(args), 0, -1):
                sql = sql.replace(f"${number}", "%s")
            return await conn.fetch(sql, args)
        return [dict(row) for row in await conn.fetch(sql, *args)]


async def traffic(settings: Settings) -> Traffic:
    outbox_ids, inbox_rows = {}, {}
    for service in catalog.SERVICES:
        [row] = await read(
            settings,
            service,
            "SELECT coalesce(max(id), 0) AS last_id, (SELECT count(*) FROM inbox) AS inbox"
            " FROM outbox",
        )
        outbox_ids[service], inbox_rows[service] = int(row["last_id"]), int(row["inbox"])
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
        rows = await read(
            settings,
            service,
            "SELECT exchange, routing_key, count(*) AS n FROM outbox WHERE id > $1"
            " GROUP BY exchange, routing_key",
            before.outbox_ids[service],
        )
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


def parse_engines(text: str | None) -> dict[str, str]:
    """``payment=mariadb`` -> {"payment": "mariadb"}."""
    engines: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        service, _, engine = part.strip().partition("=")
        if service not in catalog.SERVICES or engine not in ENGINES:
            raise SystemExit(
                f"--engines takes SERVICE=ENGINE pairs (services: {', '.join(catalog.SERVICES)};"
                f" engines: {', '.join(ENGINES)}), not {part.strip()!r}"
            )
        engines[service] = engine
    return engines


def on_engines(engines: dict[str, str]) -> str:
    """A fleet's engines, as its rows name them."""
    elsewhere = [f"{s} on {e}" for s, e in sorted(engines.items()) if e != "postgresql"]
    return ", ".join(elsewhere) or "all PostgreSQL"


async def main(
    orders: int, concurrency: int, bare_count: int, engines: dict[str, str], as_json: bool
) -> None:
    rows: list[dict[str, Any]] = []
    settings = Settings(namespace=fresh_namespace())
    async with bench_namespace(settings) as bench:
        rows += await bare_consumers(bench, bare_count, settings.prefetch, RATE)
    baseline = faster(rows, RATE)
    fleets = [{}, engines] if any(e != "postgresql" for e in engines.values()) else [engines]
    for fleet_engines in fleets:
        settings = Settings(namespace=fresh_namespace(), engines=fleet_engines)
        rows += await saga_rows(settings, orders, concurrency, baseline)
    all_pg = {row["style"]: row["rate/s"] for row in rows if row.get("engines") == on_engines({})}
    for row in rows:
        row.setdefault("count", row.get("messages"))
        if "style" in row and row["engines"] != on_engines({}) and all_pg.get(row["style"]):
            row["vs all-pg"] = f"{100 * (row['rate/s'] or 0) / all_pg[row['style']]:.0f} %"
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
            "vs all-pg",
            "deliveries/saga",
            "transactions/saga",
        ],
        rows,
        as_json,
    )


async def saga_rows(
    settings: Settings, orders: int, concurrency: int, baseline: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Both styles' rows of a ``fleet up`` in ``settings``' namespace (made and removed)."""
    rows: list[dict[str, Any]] = []
    engines = on_engines(settings.engines)
    async with bench_namespace(settings) as bench:
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
                        "method": f"fleet, {style} sagas"
                        + ("" if engines == on_engines({}) else f" ({engines})"),
                        "style": style,
                        "engines": engines,
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
    return rows


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
    parser.add_argument(
        "--engines",
        help="SERVICE=ENGINE,...: run the fleet also with these services on another engine"
        " (e.g. payment=mariadb), beside all-PostgreSQL in the same run",
    )
    parser.add_argument("--json", action="store_true")
    add_loop_option(parser)
    args = parser.parse_args()
    bare_count = args.bare_messages or max(5_000, args.orders * 10)
    try:
        engines = parse_engines(args.engines)
        run(main(args.orders, args.concurrency, bare_count, engines, args.json), args.loop)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
