"""The shipping's tables, in its own database, and the statements that read and write them."""

from __future__ import annotations

import asyncpg
import sqlalchemy as sa

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


# --- Reads and writes, in the caller's transaction (asyncpg, one round trip each). -----


async def load_shipment(conn: asyncpg.Connection, order_id: str) -> Shipment | None:
    row = await conn.fetchrow(
        "SELECT order_id, shipment_id, tracking_number, country, status, reason"
        " FROM shipments WHERE order_id = $1",
        order_id,
    )
    return None if row is None else Shipment(**dict(row))


_INSERT = """
INSERT INTO shipments (order_id, shipment_id, tracking_number, country, status, reason)
VALUES ($1, $2, $3, $4, $5, $6)
"""


async def create(
    conn: asyncpg.Connection, order_id: str, shipment_id: str, tracking_number: str, country: str
) -> None:
    await conn.execute(_INSERT, order_id, shipment_id, tracking_number, country, "created", None)


async def refuse(conn: asyncpg.Connection, order_id: str, country: str, reason: str) -> None:
    await conn.execute(_INSERT, order_id, None, None, country, "refused", reason)


async def cancel(conn: asyncpg.Connection, order_id: str, reason: str) -> None:
    await conn.execute(
        "UPDATE shipments SET status = 'cancelled', reason = $2, updated_at = now()"
        " WHERE order_id = $1",
        order_id,
        reason,
    )


async def leave_tombstone(conn: asyncpg.Connection, order_id: str, reason: str) -> None:
    await conn.execute(_INSERT, order_id, None, None, None, "cancelled", reason)
