"""The inventory's tables, in its own database, and the statements that read and write them."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

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


# --- Reads and writes, in the caller's transaction. -----------------------------------


async def load_reservation(conn: AsyncConnection, order_id: str) -> Reservation | None:
    row = (
        await conn.execute(sa.select(reservations).where(reservations.c.order_id == order_id))
    ).first()
    if row is None:
        return None
    lines = await conn.execute(
        sa.select(reservation_lines.c.sku, reservation_lines.c.quantity)
        .where(reservation_lines.c.order_id == order_id)
        .order_by(reservation_lines.c.sku)
    )
    return Reservation(
        order_id, row.status, row.reason, tuple(Line(sku, quantity) for sku, quantity in lines)
    )


async def lock_available(conn: AsyncConnection, skus: list[str]) -> dict[str, int]:
    """Available stock of the SKUs that exist, rows locked in SKU order (no deadlocks)."""
    rows = await conn.execute(
        sa.select(stock.c.sku, stock.c.available)
        .where(stock.c.sku.in_(skus))
        .order_by(stock.c.sku)
        .with_for_update()
    )
    return {sku: available for sku, available in rows}


async def _move_stock(
    conn: AsyncConnection, order_id: str, lines: Iterable[Line], sign: int, reason: str
) -> None:
    for line in lines:
        await conn.execute(
            sa.update(stock)
            .where(stock.c.sku == line.sku)
            .values(available=stock.c.available + sign * line.quantity)
        )
        await conn.execute(
            sa.insert(stock_ledger).values(
                sku=line.sku, order_id=order_id, delta=sign * line.quantity, reason=reason
            )
        )


async def reserve(conn: AsyncConnection, order_id: str, lines: tuple[Line, ...]) -> None:
    await conn.execute(sa.insert(reservations).values(order_id=order_id, status="reserved"))
    await conn.execute(
        sa.insert(reservation_lines),
        [{"order_id": order_id, "sku": line.sku, "quantity": line.quantity} for line in lines],
    )
    await _move_stock(conn, order_id, lines, -1, "reserved")


async def refuse(conn: AsyncConnection, order_id: str, reason: str) -> None:
    await conn.execute(
        sa.insert(reservations).values(order_id=order_id, status="refused", reason=reason)
    )


async def release(
    conn: AsyncConnection, order_id: str, lines: tuple[Line, ...], reason: str
) -> None:
    await _move_stock(conn, order_id, lines, +1, "released")
    await conn.execute(
        sa.update(reservations)
        .where(reservations.c.order_id == order_id)
        .values(status="released", reason=reason, updated_at=sa.func.now())
    )


async def leave_tombstone(conn: AsyncConnection, order_id: str, reason: str) -> None:
    await conn.execute(
        sa.insert(reservations).values(order_id=order_id, status="released", reason=reason)
    )


async def seed(conn: AsyncConnection, sku: str, quantity: int) -> None:
    """Add ``quantity`` of ``sku`` to the stock (creating the SKU if new)."""
    statement = insert(stock).values(sku=sku, available=quantity, seeded=quantity)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[stock.c.sku],
            set_={
                "available": stock.c.available + quantity,
                "seeded": stock.c.seeded + quantity,
            },
        )
    )
    await conn.execute(
        sa.insert(stock_ledger).values(sku=sku, order_id=None, delta=quantity, reason="seeded")
    )
