"""What the rest of the fleet may use of the inventory: stock added by an operator (seeding),
and what is in stock and held, read as the inventory's own role (``fleet verify``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from db.engine import connect_once
from workers.inventory import store
from workers.runtime.settings import Settings

SERVICE = "inventory"


@dataclass(frozen=True)
class StockLevel:
    sku: str
    available: int
    seeded: int  # all ever added by seeding: available + held = seeded


@dataclass(frozen=True)
class HeldStock:
    """Units of one SKU held by one order's reservation."""

    order_id: str
    sku: str
    quantity: int


async def add_stock(settings: Settings, quantities: Mapping[str, int]) -> None:
    """Add units to each SKU (creating the SKUs that are new), in one transaction."""
    async with connect_once(settings.database_url(SERVICE), transaction=True) as conn:
        for sku, quantity in quantities.items():
            await store.seed(conn, sku, quantity)


async def stock_levels(settings: Settings) -> list[StockLevel]:
    async with connect_once(settings.database_url(SERVICE)) as conn:
        rows = await conn.fetch("SELECT sku, available, seeded FROM stock")
    return [StockLevel(**dict(row)) for row in rows]


async def held_stock(settings: Settings) -> list[HeldStock]:
    """What the reservations in force hold (released and refused ones hold nothing)."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        rows = await conn.fetch(
            "SELECT l.order_id, l.sku, l.quantity FROM reservation_lines l"
            " JOIN reservations r USING (order_id) WHERE r.status = 'reserved'"
        )
    return [HeldStock(**dict(row)) for row in rows]
