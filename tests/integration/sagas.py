"""A fleet that runs the order saga: its services as real worker processes, seeded, orders
placed and waited for; shared by the tests of the saga, the API, the order view, its
rebuild, observability and fuzzed messages."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal

from contracts import Money, OrderLine, PlaceOrder
from tests.integration.support import Fleet, FleetProcess, wait_for
from workers.inventory import store as inventory_store
from workers.operations.orders import place_order, wait_until_final
from workers.operations.verify import verify
from workers.payment import store as payment_store


class SagaFleet:
    """The saga's services of a namespaced fleet as real processes (``start``, ``kill``),
    with the stock and money its orders need (``seed``), orders placed as ``fleet order
    place`` does and waited for to end."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.workers: dict[str, FleetProcess] = {}

    async def seed(self, stock: Mapping[str, int], balances: Mapping[str, str]) -> None:
        """Units per SKU in inventory, and EUR accounts per customer in payment."""
        fleet = self.fleet
        async with fleet.unit_of_work("inventory") as uow:
            for sku, units in stock.items():
                await inventory_store.seed(uow.conn, sku, units)
        async with fleet.unit_of_work("payment") as uow:
            for customer, balance in balances.items():
                await payment_store.seed_customer(uow.conn, customer, Decimal(balance), "EUR")

    async def start(self, service: str) -> None:
        process = await self.fleet.spawn("worker", service)
        await process.wait_for_line("consuming", timeout=90)  # several start at once
        self.workers[service] = process

    async def kill(self, service: str) -> None:
        await self.workers.pop(service).kill()

    async def place(
        self,
        customer: str,
        *lines: tuple[str, int, str],
        country: str = "DE",
        saga: str = "orchestration",
        key: str | None = None,
    ) -> str:
        command = PlaceOrder(
            idempotency_key=key or str(uuid.uuid4()),
            customer_id=customer,
            items=[
                OrderLine(sku=sku, quantity=quantity, unit_price=Money.of(price, "EUR"))
                for sku, quantity, price in lines
            ],
            country=country,
            saga=saga,
        )
        return await place_order(self.fleet.settings, command)

    async def ended(self, order_id: str, timeout: float = 60) -> dict[str, object]:
        status = await wait_until_final(self.fleet.settings, order_id, timeout)
        assert status is not None and status["status"] in ("CONFIRMED", "REJECTED"), status
        return status

    async def quiet_and_verified(self, timeout: float = 60) -> None:
        """Invariants hold at quiet points: wait for one (compensations may still be in
        flight when an order has ended), then every invariant must pass."""
        problems: list[str] = []

        async def passes() -> bool:
            checks = await verify(self.fleet.settings)
            problems[:] = [f"{c.name}: {c.problems}" for c in checks if not c.passed]
            return not problems

        try:
            await wait_for(passes, timeout=timeout, interval=0.5)
        except AssertionError:
            raise AssertionError("\n".join(problems)) from None
