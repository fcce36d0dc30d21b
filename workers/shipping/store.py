"""The shipping's tables, in its own database, and the statements that read and write them."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.shipping.domain import Shipment

metadata = sa.MetaData()

# One row per order, whatever happened to it: created, refused, or cancelled. A cancellation
# that arrives first writes a 'cancelled' row with no shipment id: the tombstone that refuses
# a late creation. A created shipment keeps its ids when it is cancelled.
shipments = sa.Table(
    "shipments",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("shipment_id", sa.Text, nullable=True, unique=True),
    sa.Column("tracking_number", sa.Text, nullable=True, unique=True),
    sa.Column("country", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint("status IN ('created', 'refused', 'cancelled')", name="ck_shipments_status"),
    sa.CheckConstraint(
        "status <> 'created'"
        " OR (shipment_id IS NOT NULL AND tracking_number IS NOT NULL AND country IS NOT NULL)",
        name="ck_shipments_created_is_complete",
    ),
)


# --- Reads and writes, in the caller's transaction. -----------------------------------


async def load_shipment(conn: AsyncConnection, order_id: str) -> Shipment | None:
    row = (await conn.execute(sa.select(shipments).where(shipments.c.order_id == order_id))).first()
    if row is None:
        return None
    return Shipment(
        order_id=row.order_id,
        shipment_id=row.shipment_id,
        tracking_number=row.tracking_number,
        country=row.country,
        status=row.status,
        reason=row.reason,
    )


async def create(
    conn: AsyncConnection, order_id: str, shipment_id: str, tracking_number: str, country: str
) -> None:
    await conn.execute(
        sa.insert(shipments).values(
            order_id=order_id,
            shipment_id=shipment_id,
            tracking_number=tracking_number,
            country=country,
            status="created",
        )
    )


async def refuse(conn: AsyncConnection, order_id: str, country: str, reason: str) -> None:
    await conn.execute(
        sa.insert(shipments).values(
            order_id=order_id, country=country, status="refused", reason=reason
        )
    )


async def cancel(conn: AsyncConnection, order_id: str, reason: str) -> None:
    await conn.execute(
        sa.update(shipments)
        .where(shipments.c.order_id == order_id)
        .values(status="cancelled", reason=reason, updated_at=sa.func.now())
    )


async def leave_tombstone(conn: AsyncConnection, order_id: str, reason: str) -> None:
    await conn.execute(
        sa.insert(shipments).values(order_id=order_id, status="cancelled", reason=reason)
    )
