"""What the rest of the fleet may use of the shipping service: which orders have a shipment,
read as the shipping's own role (``fleet verify``)."""

from __future__ import annotations

import sqlalchemy as sa

from db.engine import connect_once
from workers.runtime.settings import Settings
from workers.shipping import store

SERVICE = "shipping"


async def shipped_orders(settings: Settings) -> set[str]:
    """The orders with a shipment in force (created, not cancelled or refused)."""
    shipments = store.shipments
    async with connect_once(settings.database_url(SERVICE)) as conn:
        rows = await conn.execute(
            sa.select(shipments.c.order_id).where(shipments.c.status == "created")
        )
        return {order_id for (order_id,) in rows}
