"""The shipping service on the real servers: shipments, blocked destinations, cancellations,
tombstones, idempotency by message id and by order id, and its choreography reaction."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from contracts import (
    CancelShipment,
    CreateShipment,
    Money,
    OrderLine,
    PaymentCompleted,
    SagaStyle,
    StockReserved,
)
from contracts.routing import events_exchange
from tests.integration.support import Fleet, new_id, outgoing, scalar, wait_for, wait_ignored
from workers.payment import store as payment_store
from workers.runtime import catalog

pytestmark = pytest.mark.integration

BLOCKED = "XX"  # in the default settings' blocked countries
CUSTOMER = "shipping-customer"


@pytest.fixture(scope="module")
async def drained(fleet: Fleet) -> Fleet:
    """Earlier modules may have left payment.completed events in the shipping's queue; let
    them be consumed before the tests count."""
    await fleet.drain(catalog.load("shipping"))
    return fleet


def create_queue(fleet: Fleet) -> str:
    return f"{fleet.ns}.shipping.create_shipment"


def cancel_queue(fleet: Fleet) -> str:
    return f"{fleet.ns}.shipping.cancel_shipment"


def items() -> list[OrderLine]:
    return [OrderLine(sku="sku-a", quantity=1, unit_price=Money.of("4.00", "EUR"))]


def create_command(
    order_id: str, country: str = "DE", saga: SagaStyle = "orchestration"
) -> CreateShipment:
    return CreateShipment(order_id=order_id, country=country, items=items(), saga=saga)


def cancel_command(order_id: str) -> CancelShipment:
    return CancelShipment(order_id=order_id, reason="the saga compensates", saga="orchestration")


def payment_completed(order_id: str, saga: SagaStyle, country: str = "DE") -> PaymentCompleted:
    return PaymentCompleted(
        order_id=order_id,
        payment_id=new_id(),
        amount=Money.of("4.00", "EUR"),
        saga=saga,
        country=country,
        items=items(),
    )


async def _queue_empty(fleet: Fleet, queue: str) -> bool:
    return await fleet.queue_empty(queue)


async def emitted(
    fleet: Fleet, type_: str, order_id: str, service: str = "shipping"
) -> list[dict[str, Any]]:
    return await fleet.emitted(service, type_, order_id)


async def _emitted_at_least(
    fleet: Fleet, type_: str, order_id: str, n: int, service: str = "shipping"
) -> bool:
    return len(await emitted(fleet, type_, order_id, service)) >= n


async def shipment(fleet: Fleet, order_id: str) -> dict[str, Any] | None:
    return await fleet.row("shipping", "SELECT * FROM shipments WHERE order_id = :id", id=order_id)


async def in_dlq(fleet: Fleet, queue: str, order_id: str) -> bool:
    return await fleet.dead_letter(queue, order_id) is not None


async def test_a_shipment_is_created_with_a_tracking_number(drained: Fleet) -> None:
    fleet = drained
    order_id = new_id()
    async with (
        fleet.worker(catalog.load("shipping"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(outgoing(create_command(order_id), queue=create_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.created", order_id, 1))
    (event,) = await emitted(fleet, "shipment.created", order_id)
    assert re.fullmatch(r"TRK-[0-9A-Z]{10}", event["tracking_number"])
    assert event["saga"] == "orchestration"
    row = await shipment(fleet, order_id)
    assert row is not None
    assert (row["status"], row["country"]) == ("created", "DE")
    assert (row["shipment_id"], row["tracking_number"]) == (
        event["shipment_id"],
        event["tracking_number"],
    )


async def test_a_blocked_destination_is_a_refusal_event_not_an_error(drained: Fleet) -> None:
    fleet = drained
    order_id = new_id()
    async with (
        fleet.worker(catalog.load("shipping"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(
            outgoing(create_command(order_id, BLOCKED), queue=create_queue(fleet))
        )
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.failed", order_id, 1))
    (event,) = await emitted(fleet, "shipment.failed", order_id)
    assert event["reason"] == f"destination country {BLOCKED} is blocked"
    assert await emitted(fleet, "shipment.created", order_id) == []
    row = await shipment(fleet, order_id)
    assert row is not None and row["status"] == "refused" and row["shipment_id"] is None
    assert not await in_dlq(fleet, create_queue(fleet), order_id)


async def test_a_second_request_for_the_same_order_repeats_the_answer_without_a_shipment(
    drained: Fleet,
) -> None:
    fleet = drained
    order_id = new_id()
    async with (
        fleet.worker(catalog.load("shipping"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        for _ in range(2):  # two distinct message ids: the inbox cannot catch this one
            await publisher.publish(outgoing(create_command(order_id), queue=create_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.created", order_id, 2))
    first, second = await emitted(fleet, "shipment.created", order_id)
    assert first == second  # the same shipment id and tracking number


async def test_the_same_message_five_times_at_once_creates_one_shipment(drained: Fleet) -> None:
    fleet = drained
    order_id = new_id()
    message = outgoing(create_command(order_id), queue=create_queue(fleet))
    async with fleet.publisher() as publisher:
        # Queued before the worker starts, so all five arrive in one prefetch window and
        # are handled concurrently.
        await publisher.publish_many([message] * 5)
    async with fleet.worker(catalog.load("shipping"), with_relay=False):
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.created", order_id, 1))
        await wait_for(lambda: _queue_empty(fleet, create_queue(fleet)))
    assert len(await emitted(fleet, "shipment.created", order_id)) == 1
    inbox = "SELECT count(*) FROM inbox WHERE message_id = :id"
    assert await scalar(fleet.engine("shipping"), inbox, id=message.message_id) == 1


async def test_a_cancellation_delivered_twice_cancels_once(drained: Fleet) -> None:
    fleet = drained
    order_id = new_id()
    async with (
        fleet.worker(catalog.load("shipping"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(outgoing(create_command(order_id), queue=create_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.created", order_id, 1))
        before = await shipment(fleet, order_id)
        for _ in range(2):  # a compensation delivered twice, under two message ids
            await publisher.publish(outgoing(cancel_command(order_id), queue=cancel_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.cancelled", order_id, 2))
        # The shipment is cancelled for good: asked again, its creation is refused.
        await publisher.publish(outgoing(create_command(order_id), queue=create_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.failed", order_id, 1))
    after = await shipment(fleet, order_id)
    assert before is not None and after is not None
    assert after["status"] == "cancelled" and after["reason"] == "the saga compensates"
    assert after["tracking_number"] == before["tracking_number"]
    assert len(await emitted(fleet, "shipment.created", order_id)) == 1


async def test_a_cancellation_before_its_creation_leaves_a_tombstone_that_refuses_it(
    drained: Fleet,
) -> None:
    fleet = drained
    order_id = new_id()
    async with (
        fleet.worker(catalog.load("shipping"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(outgoing(cancel_command(order_id), queue=cancel_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.cancelled", order_id, 1))
        await publisher.publish(outgoing(create_command(order_id), queue=create_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.failed", order_id, 1))
    (failed,) = await emitted(fleet, "shipment.failed", order_id)
    assert "cancelled" in failed["reason"] and "before it was created" in failed["reason"]
    assert await emitted(fleet, "shipment.created", order_id) == []
    row = await shipment(fleet, order_id)
    assert row is not None and row["status"] == "cancelled" and row["shipment_id"] is None


async def test_cancelling_a_refused_shipment_answers_cancelled_and_changes_nothing(
    drained: Fleet,
) -> None:
    fleet = drained
    order_id = new_id()
    async with (
        fleet.worker(catalog.load("shipping"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(
            outgoing(create_command(order_id, BLOCKED), queue=create_queue(fleet))
        )
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.failed", order_id, 1))
        await publisher.publish(outgoing(cancel_command(order_id), queue=cancel_queue(fleet)))
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.cancelled", order_id, 1))
    row = await shipment(fleet, order_id)
    assert row is not None and row["status"] == "refused"


async def test_in_choreography_payment_completed_leads_to_a_shipment(drained: Fleet) -> None:
    fleet = drained
    shipped, refused = new_id(), new_id()
    async with (
        fleet.worker(catalog.load("shipping"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        payments = {}
        for order_id, country in ((shipped, "DE"), (refused, BLOCKED)):
            payments[order_id] = payment_completed(order_id, "choreography", country)
            await publisher.publish(
                outgoing(payments[order_id], exchange=events_exchange(fleet.ns))
            )
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.created", shipped, 1))
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.failed", refused, 1))
    (created,) = await emitted(fleet, "shipment.created", shipped)
    assert created["saga"] == "choreography"
    # Passed on, so the order confirmed on this event records its payment too.
    assert created["payment_id"] == payments[shipped].payment_id
    (failed,) = await emitted(fleet, "shipment.failed", refused)
    assert failed["saga"] == "choreography"


async def test_an_orchestrated_payment_completed_is_acked_and_nothing_else(
    drained: Fleet,
) -> None:
    fleet = drained
    order_id = new_id()
    event = outgoing(
        payment_completed(order_id, "orchestration"), exchange=events_exchange(fleet.ns)
    )
    async with (
        fleet.worker(catalog.load("shipping"), with_relay=False) as worker,
        fleet.publisher() as publisher,
    ):
        await publisher.publish(event)
        await wait_ignored(worker, "create_shipment", 1)
    inbox = "SELECT count(*) FROM inbox WHERE message_id = :id"
    assert await scalar(fleet.engine("shipping"), inbox, id=event.message_id) == 0
    assert await shipment(fleet, order_id) is None
    assert await emitted(fleet, "shipment.created", order_id) == []
    assert await emitted(fleet, "shipment.failed", order_id) == []


async def test_a_choreographed_order_goes_from_stock_reserved_through_payment_to_a_shipment(
    drained: Fleet,
) -> None:
    """The two services' relays and the broker between them: stock.reserved -> charge ->
    payment.completed (published by the payment's relay) -> shipment."""
    fleet = drained
    order_id = new_id()
    async with fleet.unit_of_work("payment") as uow:
        await payment_store.seed_customer(uow.conn, CUSTOMER, Decimal("100.00"), "EUR")
    reserved = StockReserved(
        order_id=order_id,
        items=items(),
        saga="choreography",
        customer_id=CUSTOMER,
        total=Money.of("4.00", "EUR"),
        country="DE",
    )
    async with (
        fleet.worker(catalog.load("payment")),
        fleet.worker(catalog.load("shipping")),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(outgoing(reserved, exchange=events_exchange(fleet.ns)))
        await wait_for(lambda: _emitted_at_least(fleet, "shipment.created", order_id, 1))
    (completed,) = await emitted(fleet, "payment.completed", order_id, "payment")
    (created,) = await emitted(fleet, "shipment.created", order_id)
    assert completed["saga"] == created["saga"] == "choreography"
    balance = "SELECT balance FROM accounts WHERE customer_id = :c"
    assert await scalar(fleet.engine("payment"), balance, c=CUSTOMER) == Decimal("96.00")
