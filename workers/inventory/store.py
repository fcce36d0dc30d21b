"""The inventory's tables, in its own database, and the statements that read and write them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import asyncpg
import sqlalchemy as sa

from workers.inventory.domain import (
    Change,
    Line,
    Refused,
    Released,
    ReleaseRequest,
    Reservation,
    ReservationRequest,
    Reserved,
    Status,
    Stock,
    TombstoneLeft,
)

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


# --- A batch's load and write, in the caller's transaction (asyncpg). -----------------

# The batch's reservations with their lines, and the stock of every SKU it names or its
# reservations hold, rows locked in SKU order (two batches never deadlock over them): one
# statement. A reservation without lines has one row with NULL sku.
_LOAD_STOCK = """
WITH held AS (
    SELECT r.order_id, r.status, r.reason, l.sku, l.quantity FROM reservations r
    LEFT JOIN reservation_lines l USING (order_id) WHERE r.order_id = ANY($1::text[])
), stock_rows AS (
    SELECT sku, available FROM stock
    WHERE sku = ANY($2::text[]) OR sku IN (SELECT sku FROM held WHERE status = 'reserved')
    ORDER BY sku FOR UPDATE
)
SELECT order_id, status, reason, sku, quantity FROM held
UNION ALL
SELECT NULL, NULL, NULL, sku, available FROM stock_rows
"""


async def load_stock(
    conn: asyncpg.Connection, messages: Sequence[ReservationRequest | ReleaseRequest]
) -> Stock:
    """What the batch's decisions need: its orders' reservations, and the stock rows they
    want or hold, locked."""
    order_ids = sorted({message.order_id for message in messages})
    skus = sorted({item.sku for m in messages for item in getattr(m, "items", ())})
    rows = await conn.fetch(_LOAD_STOCK, order_ids, skus)
    lines: dict[str, list[Line]] = {}
    first: dict[str, asyncpg.Record] = {}
    available: dict[str, int] = {}
    for row in rows:
        if row["order_id"] is None:
            available[row["sku"]] = row["quantity"]
            continue
        first.setdefault(row["order_id"], row)
        held = lines.setdefault(row["order_id"], [])
        if row["sku"] is not None:
            held.append(Line(row["sku"], row["quantity"]))
    reservations = {
        order_id: Reservation(
            order_id, row["status"], row["reason"], tuple(sorted(lines[order_id], key=_sku))
        )
        for order_id, row in first.items()
    }
    return Stock(reservations, available)


def _sku(line: Line) -> str:
    return line.sku


class LedgerEntry(NamedTuple):
    sku: str
    order_id: str
    delta: int
    reason: str


@dataclass(frozen=True)
class Rows:
    """A batch's changes as the rows they write: each order's reservation as it ends (one
    row per order, however many changes it had), the lines reserved, each SKU's change of
    available stock, and the ledger's entries."""

    reservations: dict[str, tuple[Status, str | None]] = field(default_factory=dict)
    lines: list[tuple[str, Line]] = field(default_factory=list)
    deltas: dict[str, int] = field(default_factory=dict)
    ledger: list[LedgerEntry] = field(default_factory=list)


def rows_of(changes: Sequence[Change]) -> Rows:
    rows = Rows()
    for change in changes:
        match change:
            case Reserved(order_id, lines):
                rows.reservations[order_id] = ("reserved", None)
                rows.lines.extend((order_id, line) for line in lines)
                taken = [LedgerEntry(x.sku, order_id, -x.quantity, "reserved") for x in lines]
                rows.ledger.extend(taken)
            case Refused(order_id, reason):
                rows.reservations[order_id] = ("refused", reason)
            case Released(order_id, lines, reason):
                rows.reservations[order_id] = ("released", reason)
                given = [LedgerEntry(x.sku, order_id, x.quantity, "released") for x in lines]
                rows.ledger.extend(given)
            case TombstoneLeft(order_id, reason):
                rows.reservations[order_id] = ("released", reason)
    for entry in rows.ledger:
        rows.deltas[entry.sku] = rows.deltas.get(entry.sku, 0) + entry.delta
    return rows


# Reservations as they end, the lines reserved, the stock they move and the ledger's
# entries: one statement for the whole batch.
_WRITE_STOCK = """
WITH reservation_rows AS (
    INSERT INTO reservations AS r (order_id, status, reason)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
    ON CONFLICT (order_id) DO UPDATE
    SET status = excluded.status, reason = excluded.reason, updated_at = now()
), line_rows AS (
    INSERT INTO reservation_lines (order_id, sku, quantity)
    SELECT * FROM unnest($4::text[], $5::text[], $6::int[])
), stock_rows AS (
    UPDATE stock SET available = stock.available + moved.delta
    FROM unnest($7::text[], $8::int[]) AS moved(sku, delta) WHERE stock.sku = moved.sku
)
INSERT INTO stock_ledger (sku, order_id, delta, reason)
SELECT * FROM unnest($9::text[], $10::text[], $11::int[], $12::text[])
"""


async def write_stock(conn: asyncpg.Connection, changes: Sequence[Change]) -> None:
    rows = rows_of(changes)
    reservations = list(rows.reservations.items())
    moved = [(sku, delta) for sku, delta in sorted(rows.deltas.items()) if delta]
    await conn.execute(
        _WRITE_STOCK,
        [order_id for order_id, _ in reservations],
        [status for _, (status, _) in reservations],
        [reason for _, (_, reason) in reservations],
        [order_id for order_id, _ in rows.lines],
        [line.sku for _, line in rows.lines],
        [line.quantity for _, line in rows.lines],
        [sku for sku, _ in moved],
        [delta for _, delta in moved],
        [entry.sku for entry in rows.ledger],
        [entry.order_id for entry in rows.ledger],
        [entry.delta for entry in rows.ledger],
        [entry.reason for entry in rows.ledger],
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
