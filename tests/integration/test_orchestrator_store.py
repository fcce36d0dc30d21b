"""The orchestrator's saga rows: optimistic concurrency on the real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from contracts import Money, OrderLine
from tests.integration.support import Fleet
from workers.orchestrator import domain, store

pytestmark = pytest.mark.integration


async def test_a_saga_saved_from_a_stale_version_is_a_retryable_conflict(fleet: Fleet) -> None:
    facts = domain.OrderFacts(
        order_id=str(uuid.uuid4()),
        customer_id="c",
        items=(OrderLine(sku="A", quantity=1, unit_price=Money.of("1.00", "EUR")),),
        total=Money.of("1.00", "EUR"),
        country="DE",
    )
    now, timeout = datetime.now(UTC), timedelta(seconds=30)
    async with fleet.unit_of_work("orchestrator") as uow:
        stored = await store.save(uow.conn, domain.start(facts, now, timeout).saga)
    assert stored.version == 1
    async with fleet.unit_of_work("orchestrator") as uow:
        loaded = await store.load(uow.conn, facts.order_id)
        assert loaded == stored
        advanced = await store.save(
            uow.conn, domain.on_reply(stored, "stock.reserved", None, now, timeout).saga
        )
    assert advanced.version == 2 and advanced.step == "charge_payment"
    stale = domain.on_reply(stored, "stock.reservation_failed", "late", now, timeout).saga
    with pytest.raises(store.SagaConflict):
        async with fleet.unit_of_work("orchestrator") as uow:
            await store.save(uow.conn, stale)
    async with fleet.connection("orchestrator") as conn:
        assert await store.load(conn, facts.order_id) == advanced
