"""What the rest of the fleet may use of the shipping service: which orders have a shipment,
read as the shipping's own role (``fleet verify``)."""

from __future__ import annotations

from db.engine import connect_once
from workers.runtime.settings import Settings

SERVICE = "shipping"


async def shipped_orders(settings: Settings) -> set[str]:
    """The orders with a shipment in force (created, not cancelled or refused)."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        rows = await conn.fetch("SELECT order_id FROM shipments WHERE status = 'created'")
    return {row["order_id"] for row in rows}
