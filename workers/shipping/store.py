"""The shipping's tables, in its own database, and the statements that read and write them."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import sqlalchemy as sa

from contracts import CancelShipment
from workers.shipping.domain import Change, CreationRequest, Shipment, Shipments, shipment_after

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


# --- A batch's load and write, in the caller's transaction (asyncpg). -----------------
# No row locks: a shipment is one order's row, and the runtime holds each order's lock.


async def load_shipments(
    conn: asyncpg.Connection, messages: Sequence[CreationRequest | CancelShipment]
) -> Shipments:
    """What the batch's decisions need: its orders' shipments."""
    rows = await conn.fetch(
        "SELECT order_id, shipment_id, tracking_number, country, status, reason"
        " FROM shipments WHERE order_id = ANY($1::text[])",
        sorted({message.order_id for message in messages}),
    )
    return Shipments({row["order_id"]: Shipment(**dict(row)) for row in rows})


def rows_of(changes: Sequence[Change]) -> list[Shipment]:
    """Each order's shipment as the batch's changes leave it (one row per order, however
    many changes it had)."""
    return list({change.order_id: shipment_after(change) for change in changes}.values())


# Shipments as they end: one statement for the whole batch. Once recorded, only a
# shipment's status and reason change (a cancellation).
_WRITE_SHIPMENTS = """
INSERT INTO shipments (order_id, shipment_id, tracking_number, country, status, reason)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
ON CONFLICT (order_id) DO UPDATE
SET status = excluded.status, reason = excluded.reason, updated_at = now()
"""


async def write_shipments(conn: asyncpg.Connection, changes: Sequence[Change]) -> None:
    rows = rows_of(changes)
    await conn.execute(
        _WRITE_SHIPMENTS,
        [row.order_id for row in rows],
        [row.shipment_id for row in rows],
        [row.tracking_number for row in rows],
        [row.country for row in rows],
        [row.status for row in rows],
        [row.reason for row in rows],
    )
