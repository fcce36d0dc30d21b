"""The payment's tables, in its own database, and the statements that read and write them.

The payment may live on PostgreSQL or on MariaDB (``FLEET_ENGINES``): each function takes
the connection its engine gives (asyncpg's, or ``db.mariadb.MariaConnection``) and runs that
engine's statements; what they read and write is the same. MariaDB's tables are made by
their own migrations (``db/migrations/mariadb/payment``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from db.mariadb import MariaConnection, placeholders
from workers.payment.domain import (
    ZERO,
    Account,
    Books,
    Change,
    ChargeRequest,
    Movement,
    Payment,
    RefundRequest,
    movement_of,
    payment_after,
    to_cents,
)

metadata = sa.MetaData()

# Money: NUMERIC(14, 2), read back as Decimal; never a float.
MONEY = sa.Numeric(14, 2)

# seeded: all money ever added by seeding; the invariant is
# balance + charged - refunded = seeded (charged and refunded summed from the ledger).
accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("balance", MONEY, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("seeded", MONEY, nullable=False),
    sa.CheckConstraint("balance >= 0", name="ck_accounts_balance_not_negative"),
    sa.CheckConstraint("seeded >= 0", name="ck_accounts_seeded_not_negative"),
)

# One row per order, whatever happened to it: charged, refused, or refunded. A refund that
# arrives first writes a 'refunded' row with no amount: the tombstone that refuses a late
# charge. Every row has a payment id of its own (the answer to a repeated request repeats
# it); only a 'charged' row, or a 'refunded' one with an amount, stands for money moved.
payments = sa.Table(
    "payments",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("payment_id", sa.Text, nullable=False, unique=True),
    sa.Column("customer_id", sa.Text, nullable=True),
    sa.Column("amount", MONEY, nullable=True),
    sa.Column("currency", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint("status IN ('charged', 'refused', 'refunded')", name="ck_payments_status"),
    sa.CheckConstraint(
        "status <> 'charged'"
        " OR (customer_id IS NOT NULL AND amount IS NOT NULL AND currency IS NOT NULL)",
        name="ck_payments_charged_is_complete",
    ),
    sa.CheckConstraint("amount >= 0", name="ck_payments_amount_not_negative"),
)

# Every change of a balance, with its cause; amount is what moved, its direction is the
# kind's: a charge takes it, a refund and a seed add it.
payment_ledger = sa.Table(
    "payment_ledger",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("customer_id", sa.Text, sa.ForeignKey("accounts.customer_id"), nullable=False),
    sa.Column("order_id", sa.Text, nullable=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("amount", MONEY, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("kind IN ('charge', 'refund', 'seed')", name="ck_payment_ledger_kind"),
    sa.CheckConstraint("amount >= 0", name="ck_payment_ledger_amount_not_negative"),
    sa.CheckConstraint(
        "(kind = 'seed') = (order_id IS NULL)", name="ck_payment_ledger_order_unless_seed"
    ),
)
sa.Index("ix_payment_ledger_customer_id", payment_ledger.c.customer_id)
sa.Index("ix_payment_ledger_order_id", payment_ledger.c.order_id)


# --- A batch's load and write, in the caller's transaction (asyncpg). -----------------

# The batch's payments, and the accounts of the customers it charges and of the charged
# payments it refunds, rows locked in customer order (two batches never deadlock over
# them): one statement. An account is a row with no order id.
_LOAD_BOOKS = """
WITH batch_payments AS (
    SELECT order_id, payment_id, customer_id, amount, currency, status, reason
    FROM payments WHERE order_id = ANY($1::text[])
), account_rows AS (
    SELECT customer_id, balance, currency FROM accounts
    WHERE customer_id = ANY($2::text[]) OR customer_id IN (
        SELECT customer_id FROM batch_payments
        WHERE status = 'charged' AND order_id = ANY($3::text[])
    )
    ORDER BY customer_id FOR UPDATE
)
SELECT order_id, payment_id, customer_id, amount, currency, status, reason,
       NULL::numeric AS balance
FROM batch_payments
UNION ALL
SELECT NULL, NULL, customer_id, NULL, currency, NULL, NULL, balance FROM account_rows
"""


async def load_books(conn: Any, messages: Sequence[ChargeRequest | RefundRequest]) -> Books:
    """What the batch's decisions need: its orders' payments, and the accounts they charge
    or may refund, locked."""
    order_ids = sorted({message.order_id for message in messages})
    customers = sorted({m.customer_id for m in messages if isinstance(m, ChargeRequest)})
    refunds = sorted({m.order_id for m in messages if isinstance(m, RefundRequest)})
    if isinstance(conn, MariaConnection):
        rows = await _load_books_mariadb(conn, order_ids, customers, refunds)
    else:
        rows = await conn.fetch(_LOAD_BOOKS, order_ids, customers, refunds)
    payments: dict[str, Payment] = {}
    accounts: dict[str, Account] = {}
    for row in rows:
        if row["order_id"] is None:
            accounts[row["customer_id"]] = Account(
                row["customer_id"], row["balance"], row["currency"]
            )
        else:
            payments[row["order_id"]] = Payment(
                row["order_id"],
                row["payment_id"],
                row["customer_id"],
                row["amount"],
                row["currency"],
                row["status"],
                row["reason"],
            )
    return Books(payments, accounts)


async def _load_books_mariadb(
    conn: MariaConnection, order_ids: list[str], customers: list[str], refunds: list[str]
) -> list[dict[str, Any]]:
    """``_LOAD_BOOKS`` in two statements: the payments (the batch holds their orders'
    locks, so they cannot change meanwhile), then the accounts, locked in customer order."""
    payments = await conn.fetch(
        "SELECT order_id, payment_id, customer_id, amount, currency, status, reason"
        f" FROM payments WHERE order_id IN ({placeholders(len(order_ids), 0)})",
        order_ids,
    )
    refunded = set(refunds)
    charged = {
        row["customer_id"]
        for row in payments
        if row["status"] == "charged" and row["order_id"] in refunded
    }
    wanted = sorted(set(customers) | charged)
    if not wanted:
        return payments
    accounts = await conn.fetch(
        "SELECT NULL AS order_id, customer_id, currency, balance FROM accounts"
        f" WHERE customer_id IN ({placeholders(len(wanted), 0)})"
        " ORDER BY customer_id FOR UPDATE",
        wanted,
    )
    return payments + accounts


@dataclass(frozen=True)
class Rows:
    """A batch's changes as the rows they write: each order's payment as it ends (one row
    per order, however many changes it had), each customer's change of balance, and the
    ledger's entries."""

    payments: dict[str, Payment]
    deltas: dict[str, Decimal]
    ledger: list[Movement]


def rows_of(changes: Sequence[Change]) -> Rows:
    payments = {change.order_id: payment_after(change) for change in changes}  # the last wins
    ledger = [movement for change in changes if (movement := movement_of(change)) is not None]
    deltas: dict[str, Decimal] = {}
    for movement in ledger:
        deltas[movement.customer_id] = deltas.get(movement.customer_id, ZERO) + movement.delta
    return Rows(payments, deltas, ledger)


# Payments as they end, the balances they move and the ledger's entries: one statement for
# the whole batch. Once recorded, only a payment's status and reason change (a refund).
_WRITE_BOOKS = """
WITH payment_rows AS (
    INSERT INTO payments (order_id, payment_id, customer_id, amount, currency, status, reason)
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::numeric[], $5::text[], $6::text[], $7::text[]
    )
    ON CONFLICT (order_id) DO UPDATE
    SET status = excluded.status, reason = excluded.reason, updated_at = now()
), account_rows AS (
    UPDATE accounts SET balance = accounts.balance + moved.delta
    FROM unnest($8::text[], $9::numeric[]) AS moved(customer_id, delta)
    WHERE accounts.customer_id = moved.customer_id
)
INSERT INTO payment_ledger (customer_id, order_id, kind, amount)
SELECT * FROM unnest($10::text[], $11::text[], $12::text[], $13::numeric[])
"""


async def write_books(conn: Any, changes: Sequence[Change]) -> None:
    rows = rows_of(changes)
    payments = list(rows.payments.values())
    moved = [(customer_id, delta) for customer_id, delta in sorted(rows.deltas.items()) if delta]
    if isinstance(conn, MariaConnection):
        await _write_books_mariadb(conn, payments, moved, rows.ledger)
        return
    await conn.execute(
        _WRITE_BOOKS,
        [payment.order_id for payment in payments],
        [payment.payment_id for payment in payments],
        [payment.customer_id for payment in payments],
        [payment.amount for payment in payments],
        [payment.currency for payment in payments],
        [payment.status for payment in payments],
        [payment.reason for payment in payments],
        [customer_id for customer_id, _ in moved],
        [delta for _, delta in moved],
        [entry.customer_id for entry in rows.ledger],
        [entry.order_id for entry in rows.ledger],
        [entry.kind for entry in rows.ledger],
        [entry.amount for entry in rows.ledger],
    )


async def _write_books_mariadb(
    conn: MariaConnection,
    payments: list[Payment],
    moved: list[tuple[str, Decimal]],
    ledger: list[Movement],
) -> None:
    """``_WRITE_BOOKS`` in a statement per table."""
    if payments:
        await conn.execute(
            "INSERT INTO payments"
            " (order_id, payment_id, customer_id, amount, currency, status, reason)"
            f" VALUES {placeholders(len(payments), 7)}"
            " ON DUPLICATE KEY UPDATE status = VALUES(status), reason = VALUES(reason),"
            " updated_at = NOW(6)",
            [
                value
                for p in payments
                for value in (
                    p.order_id,
                    p.payment_id,
                    p.customer_id,
                    p.amount,
                    p.currency,
                    p.status,
                    p.reason,
                )
            ],
        )
    if moved:
        cases = " ".join(["WHEN %s THEN %s"] * len(moved))
        await conn.execute(
            f"UPDATE accounts SET balance = balance + CASE customer_id {cases} END"
            f" WHERE customer_id IN ({placeholders(len(moved), 0)})",
            [*(value for pair in moved for value in pair), *(c for c, _ in moved)],
        )
    if ledger:
        await conn.execute(
            "INSERT INTO payment_ledger (customer_id, order_id, kind, amount)"
            f" VALUES {placeholders(len(ledger), 4)}",
            [v for e in ledger for v in (e.customer_id, e.order_id, e.kind, e.amount)],
        )


_SEED_CUSTOMER = """
WITH seeded AS (
    INSERT INTO accounts (customer_id, balance, currency, seeded) VALUES ($1, $2, $3, $2)
    ON CONFLICT (customer_id) DO UPDATE
    SET balance = accounts.balance + excluded.balance, seeded = accounts.seeded + excluded.seeded
    WHERE accounts.currency = excluded.currency
    RETURNING customer_id
), ledger AS (
    INSERT INTO payment_ledger (customer_id, order_id, kind, amount)
    SELECT customer_id, NULL, 'seed', $2 FROM seeded
)
SELECT count(*) FROM seeded
"""


async def seed_customer(conn: Any, customer_id: str, balance: Decimal, currency: str) -> None:
    """Add ``balance`` to the customer's account (creating it if new) and to its seeded
    total. An existing account keeps its currency: seeding it in another one is refused."""
    cents = to_cents(balance)
    if cents is None or cents < 0:
        raise ValueError(f"cannot seed {balance}: a non-negative amount in cents is needed")
    if isinstance(conn, MariaConnection):
        seeded = await _seed_customer_mariadb(conn, customer_id, cents, currency)
    else:
        seeded = bool(await conn.fetchval(_SEED_CUSTOMER, customer_id, cents, currency))
    if not seeded:
        raise ValueError(f"the account of {customer_id} is not in {currency}")


async def _seed_customer_mariadb(
    conn: MariaConnection, customer_id: str, cents: Decimal, currency: str
) -> bool:
    held = await conn.fetchval(
        "SELECT currency FROM accounts WHERE customer_id = %s FOR UPDATE", [customer_id]
    )
    if held is not None and held != currency:
        return False
    await conn.execute(
        "INSERT INTO accounts (customer_id, balance, currency, seeded) VALUES (%s, %s, %s, %s)"
        " ON DUPLICATE KEY UPDATE balance = balance + VALUES(balance),"
        " seeded = seeded + VALUES(seeded)",
        [customer_id, cents, currency, cents],
    )
    await conn.execute(
        "INSERT INTO payment_ledger (customer_id, order_id, kind, amount)"
        " VALUES (%s, NULL, 'seed', %s)",
        [customer_id, cents],
    )
    return True
