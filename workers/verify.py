"""``fleet verify``: DESIGN.md's saga invariants, checked across the services' databases.

Read-only. Each service's database is read as that service (its own role), the broker
through passive declares. Meant for quiet points: while orders are in flight, "none
stuck" and the money and stock balances are legitimately not yet true.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from contracts import registry
from db.engine import asyncpg_url
from workers import dead_letters, services, topology
from workers.order import domain as order_domain
from workers.order.domain import Order, Status
from workers.settings import SERVICES, Settings


@dataclass
class Check:
    name: str
    passed: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.passed = False
        if len(self.problems) < 20:  # enough to start looking; the counts say how many
            self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {
            "invariant": self.name,
            "passed": self.passed,
            "counts": self.counts,
            "problems": self.problems,
        }


async def _fetch(settings: Settings, service: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_url(settings.database_url(service)))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def load_orders(settings: Settings) -> dict[str, Order]:
    rows = await _fetch(
        settings,
        "order",
        "SELECT stream_id, type, contract_version, data::text AS data FROM events"
        " ORDER BY stream_id, version",
    )
    streams: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        streams[row["stream_id"]].append(
            registry.decode(row["type"], row["contract_version"], row["data"])
        )
    orders: dict[str, Order] = {}
    for stream_id, events in streams.items():
        order = order_domain.fold(None, events)
        if order is not None:
            orders[stream_id] = order
    return orders


def check_orders_ended(orders: dict[str, Order]) -> Check:
    check = Check("every order is CONFIRMED or REJECTED")
    by_status: dict[str, int] = defaultdict(int)
    for order in orders.values():
        by_status[str(order.status)] += 1
        if not order.final:
            check.fail(f"order {order.order_id} is {order.status}")
    check.counts = {"orders": len(orders), **by_status}
    return check


def _by_order(rows: Iterable[asyncpg.Record], key: str = "order_id") -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row[key]].append(row)
    return grouped


async def check_stock(settings: Settings, orders: dict[str, Order]) -> Check:
    check = Check("stock: available + held = seeded; held = CONFIRMED orders' quantities")
    skus = await _fetch(settings, "inventory", "SELECT sku, available, seeded FROM stock")
    held_rows = await _fetch(
        settings,
        "inventory",
        "SELECT r.order_id, l.sku, l.quantity FROM reservations r"
        " JOIN reservation_lines l USING (order_id) WHERE r.status = 'reserved'",
    )
    held_by_sku: dict[str, int] = defaultdict(int)
    for row in held_rows:
        held_by_sku[row["sku"]] += row["quantity"]
    for row in skus:
        if row["available"] + held_by_sku[row["sku"]] != row["seeded"]:
            check.fail(
                f"{row['sku']}: available {row['available']} + held {held_by_sku[row['sku']]}"
                f" != seeded {row['seeded']}"
            )
    held = _by_order(held_rows)
    for order in orders.values():
        wanted: dict[str, int] = defaultdict(int)
        if order.status == Status.CONFIRMED:
            for item in order.items:
                wanted[item.sku] += item.quantity
        got = {row["sku"]: row["quantity"] for row in held.get(order.order_id, [])}
        if dict(wanted) != got:
            check.fail(
                f"order {order.order_id} ({order.status}) holds {got}, expected {dict(wanted)}"
            )
    for order_id in held.keys() - orders.keys():
        check.fail(f"stock held for {order_id}, which is no order")
    check.counts = {"skus": len(skus), "orders holding stock": len(held)}
    return check


async def check_money(settings: Settings, orders: dict[str, Order]) -> Check:
    check = Check("money: balance + charged - refunded = seeded; per order = total or 0")
    accounts = await _fetch(
        settings, "payment", "SELECT customer_id, balance, seeded FROM accounts"
    )
    ledger = await _fetch(
        settings, "payment", "SELECT customer_id, order_id, kind, amount FROM payment_ledger"
    )
    moved: dict[str, Decimal] = defaultdict(Decimal)  # charged - refunded, per customer
    per_order: dict[str, Decimal] = defaultdict(Decimal)
    for row in ledger:
        sign = {"charge": 1, "refund": -1, "seed": 0}[row["kind"]]
        moved[row["customer_id"]] += sign * row["amount"]
        if row["order_id"] is not None:
            per_order[row["order_id"]] += sign * row["amount"]
    for row in accounts:
        if row["balance"] + moved[row["customer_id"]] != row["seeded"]:
            check.fail(
                f"customer {row['customer_id']}: balance {row['balance']} + charged-refunded"
                f" {moved[row['customer_id']]} != seeded {row['seeded']}"
            )
    for order in orders.values():
        expected = order.total.amount if order.status == Status.CONFIRMED else Decimal(0)
        if per_order.get(order.order_id, Decimal(0)) != expected:
            check.fail(
                f"order {order.order_id} ({order.status}): charged-refunded"
                f" {per_order.get(order.order_id, Decimal(0))}, expected {expected}"
            )
    check.counts = {"customers": len(accounts), "orders charged": len(per_order)}
    return check


async def check_shipments(settings: Settings, orders: dict[str, Order]) -> Check:
    check = Check("a shipment (not cancelled) exists exactly for CONFIRMED orders")
    rows = await _fetch(settings, "shipping", "SELECT order_id, status FROM shipments")
    shipped = {row["order_id"] for row in rows if row["status"] == "created"}
    confirmed = {o.order_id for o in orders.values() if o.status == Status.CONFIRMED}
    for order_id in sorted(confirmed - shipped):
        check.fail(f"CONFIRMED order {order_id} has no shipment")
    for order_id in sorted(shipped - confirmed):
        check.fail(f"order {order_id} is not CONFIRMED but has a shipment")
    check.counts = {"shipments": len(shipped), "confirmed orders": len(confirmed)}
    return check


async def check_messages(settings: Settings) -> Check:
    check = Check("every message published was consumed or sits in a DLQ")
    unpublished = 0
    for service in SERVICES:
        [row] = await _fetch(
            settings, service, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
        )
        unpublished += row["n"]
        if row["n"]:
            check.fail(f"{service}: {row['n']} outbox row(s) not yet published")
    loaded = services.load_all()
    queues = [
        name
        for service in loaded
        for spec in service.queue_specs(settings.namespace)
        for name in (
            spec.name,
            *(topology.retry_queue(spec.name, delay) for delay in settings.retry_delays_ms),
        )
    ]
    waiting = await dead_letters.depths(settings, queues)
    for name, depth in waiting.items():
        if depth:
            check.fail(f"{name}: {depth} message(s) not yet consumed")
    dlqs = await dead_letters.depths(settings, dead_letters.dead_letter_queues(settings, loaded))
    check.counts = {
        "unpublished outbox rows": unpublished,
        "messages waiting": sum(depth or 0 for depth in waiting.values()),
        "dead letters (with reasons)": sum(depth or 0 for depth in dlqs.values()),
    }
    return check


async def verify(settings: Settings) -> list[Check]:
    orders = await load_orders(settings)
    checks: list[Callable[[], Any]] = [
        lambda: check_stock(settings, orders),
        lambda: check_money(settings, orders),
        lambda: check_shipments(settings, orders),
        lambda: check_messages(settings),
    ]
    return [check_orders_ended(orders), *await asyncio.gather(*(make() for make in checks))]
