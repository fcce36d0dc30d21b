"""``fleet seed``: stock and customer accounts to play with, added to what is there."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from workers.inventory import public as inventory
from workers.operations import InvalidRequest, OperatorError
from workers.payment import public as payment
from workers.runtime.settings import Settings


@dataclass(frozen=True)
class Seeded:
    skus: list[str]
    stock_added: int
    customers: list[str]
    balance_added: Decimal
    currency: str


def parse_balance(text: str) -> Decimal:
    """A non-negative amount in whole cents, like ``1000.00``."""
    try:
        amount = Decimal(text)
        if amount < 0 or amount != amount.quantize(Decimal("0.01")):
            raise InvalidOperation
    except InvalidOperation:
        raise InvalidRequest(f"--balance must be an amount like 1000.00, not {text!r}") from None
    return amount


async def seed(
    settings: Settings, *, skus: int, stock: int, customers: int, balance: Decimal, currency: str
) -> Seeded:
    """``stock`` units more of each of SKU-0001 ... SKU-<skus>, and ``balance`` more on each
    account CUST-0001 ... CUST-<customers> (accounts are made in ``currency``)."""
    sku_names = [f"SKU-{n:04d}" for n in range(1, skus + 1)]
    customer_ids = [f"CUST-{n:04d}" for n in range(1, customers + 1)]
    if sku_names:
        await inventory.add_stock(settings, dict.fromkeys(sku_names, stock))
    if customer_ids:
        try:
            await payment.add_funds(settings, dict.fromkeys(customer_ids, balance), currency)
        except ValueError as error:  # an account in another currency
            raise OperatorError(str(error)) from error
    return Seeded(sku_names, stock, customer_ids, balance, currency)
