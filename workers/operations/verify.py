"""``fleet verify``: DESIGN.md's saga invariants, checked across the services' databases.

Read-only. Each service is read through its public module, as that service (its own role),
the broker through passive declares. Meant for quiet points: while orders are in flight,
"none stuck" and the money and stock balances are legitimately not yet true.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from db.adapters import store_once
from workers.inventory import public as inventory
from workers.operations import dead_letters
from workers.order import public as orders
from workers.order.public import Order, Status
from workers.payment import public as payment
from workers.runtime import catalog, topology
from workers.runtime.settings import Settings
from workers.shipping import public as shipping


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


def check_orders_ended(orders_by_id: dict[str, Order]) -> Check:
    check = Check("every order is CONFIRMED or REJECTED")
    by_status: dict[str, int] = defaultdict(int)
    for order in orders_by_id.values():
        by_status[str(order.status)] += 1
        if not order.final:
            check.fail(f"order {order.order_id} is {order.status}")
    check.counts = {"orders": len(orders_by_id), **by_status}
    return check


async def check_stock(settings: Settings, orders_by_id: dict[str, Order]) -> Check:
    check = Check("stock: available + held = seeded; held = CONFIRMED orders' quantities")
    levels = await inventory.stock_levels(settings)
    held_stock = await inventory.held_stock(settings)
    held_by_sku: dict[str, int] = defaultdict(int)
    held: dict[str, dict[str, int]] = defaultdict(dict)  # order -> sku -> units
    for entry in held_stock:
        held_by_sku[entry.sku] += entry.quantity
        held[entry.order_id][entry.sku] = entry.quantity
    for level in levels:
        if level.available + held_by_sku[level.sku] != level.seeded:
            check.fail(
                f"{level.sku}: available {level.available} + held {held_by_sku[level.sku]}"
                f" != seeded {level.seeded}"
            )
    for order in orders_by_id.values():
        wanted: dict[str, int] = defaultdict(int)
        if order.status == Status.CONFIRMED:
            for item in order.items:
                wanted[item.sku] += item.quantity
        got = held.get(order.order_id, {})
        if dict(wanted) != got:
            check.fail(
                f"order {order.order_id} ({order.status}) holds {got}, expected {dict(wanted)}"
            )
    for order_id in held.keys() - orders_by_id.keys():
        check.fail(f"stock held for {order_id}, which is no order")
    check.counts = {"skus": len(levels), "orders holding stock": len(held)}
    return check


async def check_money(settings: Settings, orders_by_id: dict[str, Order]) -> Check:
    check = Check("money: balance + charged - refunded = seeded; per order = total or 0")
    accounts = await payment.balances(settings)
    moved: dict[str, Decimal] = defaultdict(Decimal)  # charged - refunded, per customer
    per_order: dict[str, Decimal] = defaultdict(Decimal)
    for entry in await payment.ledger(settings):
        sign = {"charge": 1, "refund": -1, "seed": 0}[entry.kind]
        moved[entry.customer_id] += sign * entry.amount
        if entry.order_id is not None:
            per_order[entry.order_id] += sign * entry.amount
    for account in accounts:
        if account.balance + moved[account.customer_id] != account.seeded:
            check.fail(
                f"customer {account.customer_id}: balance {account.balance} + charged-refunded"
                f" {moved[account.customer_id]} != seeded {account.seeded}"
            )
    for order in orders_by_id.values():
        expected = order.total.amount if order.status == Status.CONFIRMED else Decimal(0)
        if per_order.get(order.order_id, Decimal(0)) != expected:
            check.fail(
                f"order {order.order_id} ({order.status}): charged-refunded"
                f" {per_order.get(order.order_id, Decimal(0))}, expected {expected}"
            )
    check.counts = {"customers": len(accounts), "orders charged": len(per_order)}
    return check


async def check_shipments(settings: Settings, orders_by_id: dict[str, Order]) -> Check:
    check = Check("a shipment (not cancelled) exists exactly for CONFIRMED orders")
    shipped = await shipping.shipped_orders(settings)
    confirmed = {o.order_id for o in orders_by_id.values() if o.status == Status.CONFIRMED}
    for order_id in sorted(confirmed - shipped):
        check.fail(f"CONFIRMED order {order_id} has no shipment")
    for order_id in sorted(shipped - confirmed):
        check.fail(f"order {order_id} is not CONFIRMED but has a shipment")
    check.counts = {"shipments": len(shipped), "confirmed orders": len(confirmed)}
    return check


async def _unpublished(settings: Settings, service: str) -> int:
    """Outbox rows the service's relay has not published yet (the runtime's own table)."""
    async with store_once(settings.database_url(service)) as store, store.connection() as conn:
        return (await store.backlog(conn)).rows


async def check_messages(settings: Settings) -> Check:
    check = Check("every message published was consumed or sits in a DLQ")
    unpublished = 0
    for service in catalog.SERVICES:
        count = await _unpublished(settings, service)
        unpublished += count
        if count:
            check.fail(f"{service}: {count} outbox row(s) not yet published")
    loaded = catalog.load_all()
    # Every handler queue, the delay tiers, and what is left of the retry queues namespaces
    # had before the tiers (None, not counted, where there are none).
    queues = [
        name
        for service in loaded
        for spec in service.queue_specs(settings.namespace)
        for name in (spec.name, *topology.legacy_retry_queues(settings, spec))
    ] + topology.delay_tiers(settings)
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
    orders_by_id = await orders.all_orders(settings)
    checks: list[Callable[[], Any]] = [
        lambda: check_stock(settings, orders_by_id),
        lambda: check_money(settings, orders_by_id),
        lambda: check_shipments(settings, orders_by_id),
        lambda: check_messages(settings),
    ]
    return [check_orders_ended(orders_by_id), *await asyncio.gather(*(make() for make in checks))]
