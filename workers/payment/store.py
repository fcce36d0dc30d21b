"""The payment's tables, in its own database, and the statements that read and write them."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import sqlalchemy as sa

from workers.payment.domain import Account, Payment, to_cents

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


# --- Reads and writes, in the caller's transaction (asyncpg, one round trip each). -----


async def load_payment(conn: asyncpg.Connection, order_id: str) -> Payment | None:
    row = await conn.fetchrow(
        "SELECT order_id, payment_id, customer_id, amount, currency, status, reason"
        " FROM payments WHERE order_id = $1",
        order_id,
    )
    return None if row is None else Payment(**dict(row))


async def lock_account(conn: asyncpg.Connection, customer_id: str) -> Account | None:
    """The customer's account, its row locked until the transaction ends."""
    row = await conn.fetchrow(
        "SELECT balance, currency FROM accounts WHERE customer_id = $1 FOR UPDATE", customer_id
    )
    return None if row is None else Account(customer_id, row["balance"], row["currency"])


# A balance set, and the movement written to the ledger, in one statement.
_SET_BALANCE = """
WITH updated AS (
    UPDATE accounts SET balance = $2 WHERE customer_id = $1
)
INSERT INTO payment_ledger (customer_id, order_id, kind, amount) VALUES ($1, $3, $4, $5)
"""

_INSERT_PAYMENT = """
INSERT INTO payments (order_id, payment_id, customer_id, amount, currency, status, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""


async def charge(
    conn: asyncpg.Connection,
    order_id: str,
    payment_id: str,
    account: Account,
    new_balance: Decimal,
    amount: Decimal,
    currency: str,
) -> None:
    """Record the charge and take ``amount`` from the (locked) account."""
    await conn.execute(
        _INSERT_PAYMENT,
        order_id,
        payment_id,
        account.customer_id,
        amount,
        currency,
        "charged",
        None,
    )
    await conn.execute(_SET_BALANCE, account.customer_id, new_balance, order_id, "charge", amount)


async def refuse(
    conn: asyncpg.Connection,
    order_id: str,
    payment_id: str,
    customer_id: str,
    amount: Decimal | None,
    currency: str,
    reason: str,
) -> None:
    await conn.execute(
        _INSERT_PAYMENT, order_id, payment_id, customer_id, amount, currency, "refused", reason
    )


async def refund(
    conn: asyncpg.Connection,
    order_id: str,
    account: Account,
    new_balance: Decimal,
    amount: Decimal,
    reason: str,
) -> None:
    """Give ``amount`` back to the (locked) account and mark the payment refunded."""
    await conn.execute(_SET_BALANCE, account.customer_id, new_balance, order_id, "refund", amount)
    await conn.execute(
        "UPDATE payments SET status = 'refunded', reason = $2, updated_at = now()"
        " WHERE order_id = $1",
        order_id,
        reason,
    )


async def leave_tombstone(
    conn: asyncpg.Connection, order_id: str, payment_id: str, reason: str
) -> None:
    await conn.execute(_INSERT_PAYMENT, order_id, payment_id, None, None, None, "refunded", reason)


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


async def seed_customer(
    conn: asyncpg.Connection, customer_id: str, balance: Decimal, currency: str
) -> None:
    """Add ``balance`` to the customer's account (creating it if new) and to its seeded
    total. An existing account keeps its currency: seeding it in another one is refused."""
    cents = to_cents(balance)
    if cents is None or cents < 0:
        raise ValueError(f"cannot seed {balance}: a non-negative amount in cents is needed")
    if not await conn.fetchval(_SEED_CUSTOMER, customer_id, cents, currency):
        raise ValueError(f"the account of {customer_id} is not in {currency}")
