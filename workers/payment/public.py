"""What the rest of the fleet may use of the payment service: money added to accounts by an
operator (seeding), and the accounts and their ledger, read as the payment's own role
(``fleet verify``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from db.adapters import store_once
from workers.payment import store
from workers.runtime.settings import Settings

SERVICE = "payment"


@dataclass(frozen=True)
class Balance:
    customer_id: str
    balance: Decimal
    seeded: Decimal  # all ever added by seeding: balance + charged - refunded = seeded


@dataclass(frozen=True)
class LedgerEntry:
    """One movement of money; ``amount`` is what moved, its direction is the kind's."""

    customer_id: str
    order_id: str | None  # None for a seed
    kind: Literal["charge", "refund", "seed"]
    amount: Decimal


async def add_funds(settings: Settings, amounts: Mapping[str, Decimal], currency: str) -> None:
    """Add money to each customer's account (creating the new ones), in one transaction.
    Raises ValueError for an amount that is not whole cents, or an account in another
    currency."""
    async with (
        store_once(settings.database_url(SERVICE)) as database,
        database.transaction() as conn,
    ):
        for customer_id, amount in amounts.items():
            await store.seed_customer(conn, customer_id, amount, currency)


async def balances(settings: Settings) -> list[Balance]:
    # The same statement on either engine (asyncpg's rows and MariaDB's dicts read alike).
    async with (
        store_once(settings.database_url(SERVICE)) as database,
        database.connection() as conn,
    ):
        rows = await conn.fetch("SELECT customer_id, balance, seeded FROM accounts")
    return [Balance(**dict(row)) for row in rows]


async def ledger(settings: Settings) -> list[LedgerEntry]:
    async with (
        store_once(settings.database_url(SERVICE)) as database,
        database.connection() as conn,
    ):
        rows = await conn.fetch("SELECT customer_id, order_id, kind, amount FROM payment_ledger")
    return [LedgerEntry(**dict(row)) for row in rows]
