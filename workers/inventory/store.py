"""The inventory's tables, in its own database, and the statements that read and write them."""

from __future__ import annotations

import asyncpg
import sqlalchemy as sa

from workers.inventory.domain import Line, Reservation

metadata = sa.MetaData()

# seeded: all stock ever added by seeding; the invariant is available + held = seeded.
stock = sa.Table(
    "stock",
    metadata,
    sa.Column("sku", sa.Text, primary_key=True),
    sa.Column("available", sa.Integer, nullable=False),
    sa.Column("seeded", sa.Integer, nullable=False),
    sa.CheckConstraint("available >= 0", name="ck_stock_available_not_negative"),
)

# One row per order, whatever happened to it: reserved, refused, or released. A release that
# arrives first writes a 'released' row with no lines: the tombstone that refuses a late
# reservation.
reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint(
        "status IN ('reserved', 'refused', 'released')", name="ck_reservations_status"
    ),
)

reservation_lines = sa.Table(
    "reservation_lines",
    metadata,
    sa.Column("order_id", sa.Text, sa.ForeignKey("reservations.order_id"), primary_key=True),
    sa.Column("sku", sa.Text, sa.ForeignKey("stock.sku"), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.CheckConstraint("quantity > 0", name="ck_reservation_lines_quantity_positive"),
)

# Every change of available stock, with its cause.
stock_ledger = sa.Table(
    "stock_ledger",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("sku", sa.Text, sa.ForeignKey("stock.sku"), nullable=False),
    sa.Column("order_id", sa.Text, nullable=True),
    sa.Column("delta", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
sa.Index("ix_stock_ledger_sku", stock_ledger.c.sku)


# --- Reads and writes, in the caller's transaction (asyncpg, one round trip each). -----


async def load_reservation(conn: asyncpg.Connection, order_id: str) -> Reservation | None:
    rows = await conn.fetch(
        "SELECT r.status, r.reason, l.sku, l.quantity FROM reservations r"
        " LEFT JOIN reservation_lines l USING (order_id) WHERE r.order_id = $1 ORDER BY l.sku",
        order_id,
    )
    return _reservation(order_id, rows) if rows else None


# The order's reservation and, if it has none yet, the stock of the SKUs it wants, rows
# locked in SKU order (so two reservations never deadlock): one round trip for both.
_LOAD_FOR_RESERVING = """
WITH existing AS (
    SELECT r.status, r.reason, l.sku, l.quantity FROM reservations r
    LEFT JOIN reservation_lines l USING (order_id) WHERE r.order_id = $1
), stock_rows AS (
    SELECT sku, available FROM stock
    WHERE sku = ANY($2::text[]) AND NOT EXISTS (SELECT FROM reservations WHERE order_id = $1)
    ORDER BY sku FOR UPDATE
)
SELECT true AS reserved_before, status, reason, sku, quantity FROM existing
UNION ALL
SELECT false, NULL, NULL, sku, available FROM stock_rows
"""


async def load_for_reserving(
    conn: asyncpg.Connection, order_id: str, skus: list[str]
) -> tuple[Reservation | None, dict[str, int]]:
    """The order's reservation, or None and the available stock of the SKUs that exist."""
    rows = await conn.fetch(_LOAD_FOR_RESERVING, order_id, skus)
    before = [row for row in rows if row["reserved_before"]]
    if before:
        return _reservation(order_id, before), {}
    return None, {row["sku"]: row["quantity"] for row in rows}


def _reservation(order_id: str, rows: list[asyncpg.Record]) -> Reservation:
    lines = tuple(Line(row["sku"], row["quantity"]) for row in rows if row["sku"] is not None)
    return Reservation(order_id, rows[0]["status"], rows[0]["reason"], lines)


# A reservation, its lines, the stock it takes and the ledger's entries: one statement.
_RESERVE = """
WITH wanted AS (
    SELECT * FROM unnest($2::text[], $3::int[]) AS w(sku, quantity)
), reservation AS (
    INSERT INTO reservations (order_id, status) VALUES ($1, 'reserved')
), lines AS (
    INSERT INTO reservation_lines (order_id, sku, quantity) SELECT $1, sku, quantity FROM wanted
), taken AS (
    UPDATE stock SET available = stock.available - wanted.quantity
    FROM wanted WHERE stock.sku = wanted.sku
)
INSERT INTO stock_ledger (sku, order_id, delta, reason)
SELECT sku, $1, -quantity, 'reserved' FROM wanted
"""


async def reserve(conn: asyncpg.Connection, order_id: str, lines: tuple[Line, ...]) -> None:
    await conn.execute(
        _RESERVE, order_id, [line.sku for line in lines], [line.quantity for line in lines]
    )


async def refuse(conn: asyncpg.Connection, order_id: str, reason: str) -> None:
    await conn.execute(
        "INSERT INTO reservations (order_id, status, reason) VALUES ($1, 'refused', $2)",
        order_id,
        reason,
    )


# The stock given back, the ledger's entries and the reservation marked: one statement.
_RELEASE = """
WITH held AS (
    SELECT * FROM unnest($2::text[], $3::int[]) AS h(sku, quantity)
), given_back AS (
    UPDATE stock SET available = stock.available + held.quantity
    FROM held WHERE stock.sku = held.sku
), ledger AS (
    INSERT INTO stock_ledger (sku, order_id, delta, reason)
    SELECT sku, $1, quantity, 'released' FROM held
)
UPDATE reservations SET status = 'released', reason = $4, updated_at = now()
WHERE order_id = $1
"""


async def release(
    conn: asyncpg.Connection, order_id: str, lines: tuple[Line, ...], reason: str
) -> None:
    await conn.execute(
        _RELEASE, order_id, [line.sku for line in lines], [line.quantity for line in lines], reason
    )


async def leave_tombstone(conn: asyncpg.Connection, order_id: str, reason: str) -> None:
    await conn.execute(
        "INSERT INTO reservations (order_id, status, reason) VALUES ($1, 'released', $2)",
        order_id,
        reason,
    )


_SEED = """
WITH seeded AS (
    INSERT INTO stock (sku, available, seeded) VALUES ($1, $2, $2)
    ON CONFLICT (sku) DO UPDATE
    SET available = stock.available + excluded.available, seeded = stock.seeded + excluded.seeded
)
INSERT INTO stock_ledger (sku, order_id, delta, reason) VALUES ($1, NULL, $2, 'seeded')
"""


async def seed(conn: asyncpg.Connection, sku: str, quantity: int) -> None:
    """Add ``quantity`` of ``sku`` to the stock (creating the SKU if new)."""
    await conn.execute(_SEED, sku, quantity)
