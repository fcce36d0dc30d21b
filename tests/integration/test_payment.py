"""The payment service on the real servers: charges, refusals, refunds, tombstones,
idempotency by message id and by order id, and its choreography reactions."""

from __future__ import annotations

from decimal import Decimal
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa

from contracts import (
    ChargePayment,
    Money,
    OrderLine,
    RefundPayment,
    SagaStyle,
    ShipmentFailed,
    StockReserved,
)
from contracts.routing import events_exchange
from tests.integration.support import Fleet, new_id, outgoing, scalar, wait_for, wait_ignored
from workers.payment import store
from workers.runtime import catalog

pytestmark = pytest.mark.integration

RICH = "payment-rich"  # EUR, more than any test spends
POOR = "payment-poor"  # EUR 5.00
DOLLARS = "payment-dollars"  # USD


@pytest.fixture(scope="module")
async def seeded(fleet: Fleet) -> Fleet:
    async with fleet.unit_of_work("payment") as uow:
        await store.seed_customer(uow.conn, RICH, Decimal("1000000.00"), "EUR")
        await store.seed_customer(uow.conn, POOR, Decimal("5.00"), "EUR")
        await store.seed_customer(uow.conn, DOLLARS, Decimal("100.00"), "USD")
    # Earlier modules' inventory workers published orchestrated stock.reserved events, which
    # the payment's queue kept.
    await fleet.drain(catalog.load("payment"))
    return fleet


def charge_queue(fleet: Fleet) -> str:
    return f"{fleet.ns}.payment.charge_payment"


def refund_queue(fleet: Fleet) -> str:
    return f"{fleet.ns}.payment.refund_payment"


def items() -> list[OrderLine]:
    return [OrderLine(sku="sku-a", quantity=2, unit_price=Money.of("6.25", "EUR"))]


def charge_command(
    order_id: str,
    amount: str = "12.50",
    *,
    customer: str = RICH,
    currency: str = "EUR",
    saga: SagaStyle = "orchestration",
) -> ChargePayment:
    return ChargePayment(
        order_id=order_id,
        customer_id=customer,
        amount=Money.of(amount, currency),
        saga=saga,
        country="DE",
        items=items(),
    )


def refund_command(order_id: str, saga: SagaStyle = "orchestration") -> RefundPayment:
    return RefundPayment(order_id=order_id, reason="the saga compensates", saga=saga)


def stock_reserved(order_id: str, saga: SagaStyle, total: str = "12.50") -> StockReserved:
    return StockReserved(
        order_id=order_id,
        items=items(),
        saga=saga,
        customer_id=RICH,
        total=Money.of(total, "EUR"),
        country="FR",
    )


async def _queue_empty(fleet: Fleet, queue: str) -> bool:
    return await fleet.queue_empty(queue)


async def emitted(fleet: Fleet, type_: str, order_id: str) -> list[dict[str, Any]]:
    return await fleet.emitted("payment", type_, order_id)


async def _emitted_at_least(fleet: Fleet, type_: str, order_id: str, n: int) -> bool:
    return len(await emitted(fleet, type_, order_id)) >= n


async def ledger(fleet: Fleet, order_id: str, kind: str) -> list[Decimal]:
    async with fleet.engine("payment").connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT amount FROM payment_ledger WHERE order_id = :id AND kind = :kind"
                " ORDER BY id"
            ),
            {"id": order_id, "kind": kind},
        )
        return [amount for (amount,) in rows]


async def balance(fleet: Fleet, customer: str) -> Decimal:
    value: Decimal = await scalar(
        fleet.engine("payment"), "SELECT balance FROM accounts WHERE customer_id = :c", c=customer
    )
    return value


async def payment_row(fleet: Fleet, order_id: str) -> dict[str, Any] | None:
    return await fleet.row("payment", "SELECT * FROM payments WHERE order_id = :id", id=order_id)


async def in_dlq(fleet: Fleet, queue: str, order_id: str) -> bool:
    return await fleet.dead_letter(queue, order_id) is not None


async def test_a_charge_takes_the_amount_once_and_completes_the_payment(seeded: Fleet) -> None:
    fleet = seeded
    order_id = new_id()
    before = await balance(fleet, RICH)
    async with (
        fleet.worker(catalog.load("payment"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(outgoing(charge_command(order_id), queue=charge_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "payment.completed", order_id, 1))
    (event,) = await emitted(fleet, "payment.completed", order_id)
    assert event["amount"] == {"amount": "12.50", "currency": "EUR"}
    assert event["saga"] == "orchestration" and event["country"] == "DE"
    assert event["items"] == [item.model_dump(mode="json") for item in items()]
    row = await payment_row(fleet, order_id)
    assert row is not None
    assert row["status"] == "charged" and row["payment_id"] == event["payment_id"]
    assert (row["customer_id"], row["amount"], row["currency"]) == (RICH, Decimal("12.50"), "EUR")
    assert await ledger(fleet, order_id, "charge") == [Decimal("12.50")]
    assert await balance(fleet, RICH) == before - Decimal("12.50")


@pytest.mark.parametrize(
    ("customer", "amount", "currency", "reason"),
    [
        (POOR, "5.01", "EUR", "insufficient funds: balance 5.00 EUR, charge 5.01 EUR"),
        ("payment-nobody", "1.00", "EUR", "unknown customer: payment-nobody"),
        (DOLLARS, "1.00", "EUR", "currency mismatch: the charge is in EUR"),
    ],
)
async def test_a_charge_that_cannot_be_paid_is_a_refusal_event_not_an_error(
    seeded: Fleet, customer: str, amount: str, currency: str, reason: str
) -> None:
    fleet = seeded
    order_id = new_id()
    command = charge_command(order_id, amount, customer=customer, currency=currency)
    async with (
        fleet.worker(catalog.load("payment"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(outgoing(command, queue=charge_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "payment.failed", order_id, 1))
    (event,) = await emitted(fleet, "payment.failed", order_id)
    assert event["reason"].startswith(reason) and event["saga"] == "orchestration"
    assert await emitted(fleet, "payment.completed", order_id) == []
    assert await ledger(fleet, order_id, "charge") == []
    row = await payment_row(fleet, order_id)
    assert row is not None and row["status"] == "refused" and row["reason"] == event["reason"]
    assert await balance(fleet, POOR) == Decimal("5.00")
    assert not await in_dlq(fleet, charge_queue(fleet), order_id)


async def test_a_second_charge_for_the_same_order_repeats_the_answer_without_a_charge(
    seeded: Fleet,
) -> None:
    fleet = seeded
    order_id = new_id()
    async with (
        fleet.worker(catalog.load("payment"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        for _ in range(2):  # two distinct message ids: the inbox cannot catch this one
            await publisher.publish(outgoing(charge_command(order_id), queue=charge_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "payment.completed", order_id, 2))
    first, second = await emitted(fleet, "payment.completed", order_id)
    assert first == second  # the same payment id, the same amount
    assert await ledger(fleet, order_id, "charge") == [Decimal("12.50")]


async def test_the_same_message_five_times_at_once_charges_once(seeded: Fleet) -> None:
    fleet = seeded
    order_id = new_id()
    message = outgoing(charge_command(order_id, "3.00"), queue=charge_queue(fleet))
    before = await balance(fleet, RICH)
    async with fleet.publisher() as publisher:
        # Queued before the worker starts, so all five arrive in one prefetch window and
        # are handled concurrently.
        await publisher.publish_many([message] * 5)
    async with fleet.worker(catalog.load("payment"), with_relay=False):
        await wait_for(lambda: ledger(fleet, order_id, "charge"))
        await wait_for(lambda: _queue_empty(fleet, charge_queue(fleet)))
    assert await ledger(fleet, order_id, "charge") == [Decimal("3.00")]
    assert len(await emitted(fleet, "payment.completed", order_id)) == 1
    assert await balance(fleet, RICH) == before - Decimal("3.00")


async def test_concurrent_charges_of_one_account_never_overdraw_it(seeded: Fleet) -> None:
    fleet = seeded
    customer = f"payment-{new_id()}"
    async with fleet.unit_of_work("payment") as uow:
        await store.seed_customer(uow.conn, customer, Decimal("10.00"), "EUR")
    orders = [new_id() for _ in range(8)]
    async with fleet.publisher() as publisher:
        await publisher.publish_many(
            [
                outgoing(charge_command(o, "3.00", customer=customer), queue=charge_queue(fleet))
                for o in orders
            ]
        )

    async def answers() -> tuple[int, int] | None:
        completed = [o for o in orders if await emitted(fleet, "payment.completed", o)]
        failed = [o for o in orders if await emitted(fleet, "payment.failed", o)]
        return (len(completed), len(failed)) if len(completed) + len(failed) == 8 else None

    async with fleet.worker(catalog.load("payment"), with_relay=False):
        # Every order answered (an empty queue is not enough: a delivery may be in flight,
        # or waiting in a retry queue).
        assert await wait_for(answers) == (3, 5)
    assert await balance(fleet, customer) == Decimal("1.00")


async def test_a_refund_gives_the_charge_back_once_when_delivered_twice(seeded: Fleet) -> None:
    fleet = seeded
    order_id = new_id()
    before = await balance(fleet, RICH)
    async with (
        fleet.worker(catalog.load("payment"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(outgoing(charge_command(order_id), queue=charge_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "payment.completed", order_id, 1))
        for _ in range(2):  # a compensation delivered twice, under two message ids
            await publisher.publish(outgoing(refund_command(order_id), queue=refund_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "payment.refunded", order_id, 2))
    (completed,) = await emitted(fleet, "payment.completed", order_id)
    first, second = await emitted(fleet, "payment.refunded", order_id)
    assert first == second
    assert first["payment_id"] == completed["payment_id"]
    assert first["amount"] == {"amount": "12.50", "currency": "EUR"}
    assert await ledger(fleet, order_id, "refund") == [Decimal("12.50")]
    assert await balance(fleet, RICH) == before
    row = await payment_row(fleet, order_id)
    assert row is not None and row["status"] == "refunded"


async def test_a_refund_before_its_charge_leaves_a_tombstone_that_refuses_it(
    seeded: Fleet,
) -> None:
    fleet = seeded
    order_id = new_id()
    before = await balance(fleet, RICH)
    async with (
        fleet.worker(catalog.load("payment"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(outgoing(refund_command(order_id), queue=refund_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "payment.refunded", order_id, 1))
        await publisher.publish(outgoing(charge_command(order_id), queue=charge_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "payment.failed", order_id, 1))
    (refunded,) = await emitted(fleet, "payment.refunded", order_id)
    assert refunded["amount"] == {"amount": "0.00", "currency": "EUR"}
    (failed,) = await emitted(fleet, "payment.failed", order_id)
    assert "refunded" in failed["reason"] and "before it was charged" in failed["reason"]
    assert await emitted(fleet, "payment.completed", order_id) == []
    assert await ledger(fleet, order_id, "charge") == []
    assert await balance(fleet, RICH) == before
    row = await payment_row(fleet, order_id)
    assert row is not None and row["status"] == "refunded" and row["amount"] is None
    assert row["payment_id"] == refunded["payment_id"]


async def test_a_refund_of_a_refused_charge_answers_zero_in_the_order_s_currency(
    seeded: Fleet,
) -> None:
    fleet = seeded
    order_id = new_id()
    async with (
        fleet.worker(catalog.load("payment"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        command = charge_command(order_id, "1000.00", customer=DOLLARS, currency="USD")
        await publisher.publish(outgoing(command, queue=charge_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "payment.failed", order_id, 1))
        await publisher.publish(outgoing(refund_command(order_id), queue=refund_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "payment.refunded", order_id, 1))
    (refunded,) = await emitted(fleet, "payment.refunded", order_id)
    assert refunded["amount"] == {"amount": "0.00", "currency": "USD"}
    assert await ledger(fleet, order_id, "refund") == []
    row = await payment_row(fleet, order_id)
    assert row is not None and row["status"] == "refused"


async def test_a_refund_of_a_charge_to_a_customer_without_an_account_is_dead_lettered(
    seeded: Fleet,
) -> None:
    fleet = seeded
    order_id = new_id()
    # No handler charges a customer without an account: a row an operator left behind.
    async with fleet.unit_of_work("payment") as uow:
        await uow.conn.execute(
            "INSERT INTO payments (order_id, payment_id, customer_id, amount, currency, status)"
            " VALUES ($1, $2, 'payment-gone', 1.00, 'EUR', 'charged')",
            order_id,
            new_id(),
        )
    async with (
        fleet.worker(catalog.load("payment"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(outgoing(refund_command(order_id), queue=refund_queue(fleet)))
        letter = await wait_for(lambda: fleet.dead_letter(refund_queue(fleet), order_id))
    assert letter.headers["x-error-type"] == "PermanentError"
    assert "charged to payment-gone, who has no account" in letter.headers["x-error-message"]
    assert await emitted(fleet, "payment.refunded", order_id) == []
    row = await payment_row(fleet, order_id)
    assert row is not None and row["status"] == "charged"


async def test_in_choreography_stock_reserved_leads_to_a_charge(seeded: Fleet) -> None:
    fleet = seeded
    order_id = new_id()
    event = outgoing(stock_reserved(order_id, "choreography"), exchange=events_exchange(fleet.ns))
    async with (
        fleet.worker(catalog.load("payment"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(event)
        await wait_for(lambda: _emitted_at_least(fleet, "payment.completed", order_id, 1))
    (completed,) = await emitted(fleet, "payment.completed", order_id)
    assert completed["saga"] == "choreography"
    assert completed["amount"] == {"amount": "12.50", "currency": "EUR"}
    assert completed["country"] == "FR"
    assert await ledger(fleet, order_id, "charge") == [Decimal("12.50")]


async def inbox_row(fleet: Fleet, consumer: str, message_id: str | None) -> bool:
    sql = "SELECT count(*) FROM inbox WHERE consumer = :consumer AND message_id = :id"
    return bool(await scalar(fleet.engine("payment"), sql, consumer=consumer, id=message_id))


async def test_an_orchestrated_stock_reserved_is_acked_and_nothing_else(seeded: Fleet) -> None:
    fleet = seeded
    order_id = new_id()
    event = outgoing(stock_reserved(order_id, "orchestration"), exchange=events_exchange(fleet.ns))
    async with (
        fleet.worker(catalog.load("payment"), with_relay=False) as worker,
        fleet.publisher() as publisher,
    ):
        await publisher.publish(event)
        await wait_ignored(worker, "charge_payment", 1)
    assert not await inbox_row(fleet, "payment.charge_payment", event.message_id)
    assert await payment_row(fleet, order_id) is None
    assert await ledger(fleet, order_id, "charge") == []
    assert await emitted(fleet, "payment.completed", order_id) == []
    assert await emitted(fleet, "payment.failed", order_id) == []


async def test_in_choreography_shipment_failed_refunds_and_orchestrated_does_nothing(
    seeded: Fleet,
) -> None:
    fleet = seeded
    choreographed, orchestrated = new_id(), new_id()
    sagas: list[tuple[str, SagaStyle]] = [
        (choreographed, "choreography"),
        (orchestrated, "orchestration"),
    ]
    before = await balance(fleet, RICH)
    async with (
        fleet.worker(catalog.load("payment"), with_relay=False) as worker,
        fleet.publisher() as publisher,
    ):
        for order_id, saga in sagas:
            command = charge_command(order_id, saga=saga)
            await publisher.publish(outgoing(command, queue=charge_queue(fleet)))
            await wait_for(partial(_emitted_at_least, fleet, "payment.completed", order_id, 1))
        failures = [
            outgoing(
                ShipmentFailed(order_id=order_id, reason="destination blocked", saga=saga),
                exchange=events_exchange(fleet.ns),
            )
            for order_id, saga in reversed(sagas)  # the orchestrated one first
        ]
        await publisher.publish_many(failures)
        await wait_for(lambda: _emitted_at_least(fleet, "payment.refunded", choreographed, 1))
        await wait_ignored(worker, "refund_payment", 1)
    assert not await inbox_row(fleet, "payment.refund_payment", failures[0].message_id)
    (refunded,) = await emitted(fleet, "payment.refunded", choreographed)
    assert refunded["saga"] == "choreography"
    assert await ledger(fleet, choreographed, "refund") == [Decimal("12.50")]
    row = await payment_row(fleet, choreographed)
    assert row is not None and row["reason"] == "shipment failed: destination blocked"
    assert await emitted(fleet, "payment.refunded", orchestrated) == []
    assert await ledger(fleet, orchestrated, "refund") == []
    assert await balance(fleet, RICH) == before - Decimal("12.50")


async def test_seeding_adds_to_balance_and_seeded_and_keeps_the_currency(seeded: Fleet) -> None:
    fleet = seeded
    customer = f"payment-{new_id()}"
    engine = fleet.engine("payment")
    for amount in ("10.00", "2.50"):
        async with fleet.unit_of_work("payment") as uow:
            await store.seed_customer(uow.conn, customer, Decimal(amount), "EUR")
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text("SELECT balance, seeded, currency FROM accounts WHERE customer_id = :c"),
                {"c": customer},
            )
        ).one()
    assert tuple(row) == (Decimal("12.50"), Decimal("12.50"), "EUR")
    with pytest.raises(ValueError, match="not in USD"):
        async with fleet.unit_of_work("payment") as uow:
            await store.seed_customer(uow.conn, customer, Decimal("1.00"), "USD")
    seeds = "SELECT sum(amount) FROM payment_ledger WHERE customer_id = :c AND kind = 'seed'"
    assert await scalar(engine, seeds, c=customer) == Decimal("12.50")


async def test_the_balance_invariant_holds_for_every_account(seeded: Fleet) -> None:
    """balance + charged - refunded = seeded, for every account the tests above touched."""
    broken = await scalar(
        seeded.engine("payment"),
        """
        SELECT count(*) FROM accounts a
        LEFT JOIN (
            SELECT customer_id,
                   sum(amount) FILTER (WHERE kind = 'charge') AS charged,
                   sum(amount) FILTER (WHERE kind = 'refund') AS refunded
            FROM payment_ledger GROUP BY customer_id
        ) l USING (customer_id)
        WHERE a.balance + coalesce(l.charged, 0) - coalesce(l.refunded, 0) <> a.seeded
        """,
    )
    assert broken == 0
