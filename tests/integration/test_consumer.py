"""The idempotent consumer on the real servers: inbox, rollback, retries, dead letters."""

from __future__ import annotations

import dataclasses
import json

import aio_pika
import asyncpg
import pytest

from contracts import (
    Envelope,
    Money,
    OrderConfirmed,
    OrderPlacedV2,
    OutgoingMessage,
    ReleaseStock,
    SagaStyle,
)
from contracts.routing import events_exchange
from tests.integration import probes
from tests.integration.support import (
    Fleet,
    Seen,
    new_id,
    outgoing,
    publish_with_another_client,
    reserve_command,
    scalar,
    wait_for,
)
from workers.inventory import store
from workers.operations import dead_letters
from workers.runtime import catalog, topology

pytestmark = pytest.mark.integration

SKUS = ("sku-a", "sku-b", "sku-c")


@pytest.fixture(scope="module")
async def stocked(fleet: Fleet) -> Fleet:
    async with fleet.unit_of_work("inventory") as uow:
        for sku in SKUS:
            await store.seed(uow.conn, sku, 100_000)
    return fleet


def reserve_queue(fleet: Fleet) -> str:
    return f"{fleet.ns}.inventory.reserve_stock"


def probe_queue(fleet: Fleet, handler: str) -> str:
    return f"{fleet.ns}.inventory.{handler}"


async def reserved_quantity(fleet: Fleet, order_id: str) -> int:
    """Stock taken for the order, from the ledger: counts every application, not just one."""
    value = await scalar(
        fleet.engine("inventory"),
        "SELECT coalesce(-sum(delta), 0) FROM stock_ledger"
        " WHERE order_id = :id AND reason = 'reserved'",
        id=order_id,
    )
    return int(value)


async def outbox_count(fleet: Fleet, type_: str, order_id: str) -> int:
    return int(
        await scalar(
            fleet.engine("inventory"),
            "SELECT count(*) FROM outbox WHERE type = :type"
            " AND convert_from(body, 'UTF8')::jsonb->>'order_id' = :id",
            type=type_,
            id=order_id,
        )
    )


async def dlq_letters(fleet: Fleet, queue: str) -> list[dead_letters.DeadLetter]:
    return await dead_letters.browse(fleet.settings, topology.dead_letter_queue(queue), 1000)


async def test_the_same_message_five_times_in_a_row_has_one_effect(stocked: Fleet) -> None:
    fleet = stocked
    order_id = new_id()
    message = outgoing(reserve_command(order_id, ("sku-a", 2)), queue=reserve_queue(fleet))
    async with (
        fleet.worker(catalog.load("inventory"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        for _ in range(5):
            await publisher.publish(message)
        await wait_for(
            lambda: scalar(
                fleet.engine("inventory"),
                "SELECT count(*) FROM inbox WHERE message_id = :id",
                id=message.message_id,
            )
        )
        await wait_for(lambda: _queue_empty(fleet, reserve_queue(fleet)))
    assert await reserved_quantity(fleet, order_id) == 2
    assert await outbox_count(fleet, "stock.reserved", order_id) == 1


async def _queue_empty(fleet: Fleet, queue: str) -> bool:
    return await fleet.queue_empty(queue)


def placed_event(order_id: str, saga: SagaStyle) -> OrderPlacedV2:
    command = reserve_command(order_id, ("sku-c", 2))
    return OrderPlacedV2(
        order_id=order_id,
        customer_id=command.customer_id,
        items=command.items,
        total=command.total,
        country=command.country,
        saga=saga,
    )


async def test_an_event_of_the_other_saga_style_is_acked_with_no_transaction(
    stocked: Fleet,
) -> None:
    """The inventory reserves on order.placed in choreography only; an orchestrated order's
    order.placed is left, by the handler's declared filter, before any transaction."""
    fleet = stocked
    orchestrated, choreographed = new_id(), new_id()
    ignored = outgoing(placed_event(orchestrated, "orchestration"), queue=reserve_queue(fleet))
    applied = outgoing(placed_event(choreographed, "choreography"), queue=reserve_queue(fleet))
    async with fleet.publisher() as publisher:
        await publisher.publish_many([ignored, applied])
    async with fleet.worker(catalog.load("inventory"), with_relay=False):
        await wait_for(lambda: _queue_empty(fleet, reserve_queue(fleet)))

    async def inbox_rows(message_id: str | None) -> int:
        sql = "SELECT count(*) FROM inbox WHERE message_id = :id"
        return int(await scalar(fleet.engine("inventory"), sql, id=message_id))

    applied_effects = (
        await inbox_rows(applied.message_id),
        await reserved_quantity(fleet, choreographed),
    )
    assert applied_effects == (1, 2)
    assert await inbox_rows(ignored.message_id) == 0  # no transaction wrote anything
    assert await reserved_quantity(fleet, orchestrated) == 0
    assert await outbox_count(fleet, "stock.reserved", orchestrated) == 0
    assert not await fleet.dead_letter(reserve_queue(fleet), orchestrated)


async def test_the_same_message_five_times_at_once_has_one_effect(stocked: Fleet) -> None:
    fleet = stocked
    order_id = new_id()
    message = outgoing(reserve_command(order_id, ("sku-b", 3)), queue=reserve_queue(fleet))
    async with fleet.publisher() as publisher:
        # Queued before the worker starts, so all five arrive in one prefetch window and
        # are handled concurrently.
        await publisher.publish_many([message] * 5)
    async with fleet.worker(catalog.load("inventory"), with_relay=False):
        await wait_for(lambda: _queue_empty(fleet, reserve_queue(fleet)))
    assert await reserved_quantity(fleet, order_id) == 3
    assert await outbox_count(fleet, "stock.reserved", order_id) == 1


async def test_a_second_command_for_the_same_order_repeats_the_answer_without_effect(
    stocked: Fleet,
) -> None:
    fleet = stocked
    order_id = new_id()
    command = reserve_command(order_id, ("sku-a", 1), ("sku-c", 4))
    async with (
        fleet.worker(catalog.load("inventory"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        for _ in range(2):  # two distinct message ids: the inbox cannot catch this one
            await publisher.publish(outgoing(command, queue=reserve_queue(fleet)))
        await wait_for(lambda: _outbox_at_least(fleet, "stock.reserved", order_id, 2))
    assert await reserved_quantity(fleet, order_id) == 5


async def _outbox_at_least(fleet: Fleet, type_: str, order_id: str, n: int) -> bool:
    return await outbox_count(fleet, type_, order_id) >= n


async def test_out_of_stock_is_a_refusal_event_not_an_error(stocked: Fleet) -> None:
    fleet = stocked
    order_id = new_id()
    async with (
        fleet.worker(catalog.load("inventory"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(
            outgoing(
                reserve_command(order_id, ("sku-a", 1), ("no-such-sku", 1)),
                queue=reserve_queue(fleet),
            )
        )
        await wait_for(lambda: _outbox_at_least(fleet, "stock.reservation_failed", order_id, 1))
    assert await reserved_quantity(fleet, order_id) == 0
    assert not [
        letter
        for letter in await dlq_letters(fleet, reserve_queue(fleet))
        if order_id in letter.body.decode()
    ]


async def test_a_handler_that_fails_before_commit_leaves_no_state_and_no_outbox_rows(
    fleet: Fleet,
) -> None:
    order_id = new_id()
    probes.script.fail_after_write.add(order_id)
    queue = probe_queue(fleet, "probe_effects")
    message = outgoing(OrderConfirmed(order_id=order_id), queue=queue)
    async with fleet.worker(probes.probe, with_relay=False), fleet.publisher() as publisher:
        await publisher.publish(message)
        await wait_for(lambda: _in_dlq(fleet, queue, order_id))
    assert probes.script.calls[order_id] == 1  # it decided, wrote, then failed
    engine = fleet.engine("inventory")
    stock_rows = "SELECT count(*) FROM stock WHERE sku = :sku"
    assert await scalar(engine, stock_rows, sku=probes.probe_sku(order_id)) == 0
    assert await outbox_count(fleet, "order.rejected", order_id) == 0
    inbox_rows = "SELECT count(*) FROM inbox WHERE message_id = :id"
    assert await scalar(engine, inbox_rows, id=message.message_id) == 0


async def _in_dlq(fleet: Fleet, queue: str, text: str) -> dead_letters.DeadLetter | None:
    return await fleet.dead_letter(queue, text)


async def test_a_transient_failure_succeeds_on_a_delayed_retry(fleet: Fleet) -> None:
    order_id = new_id()
    probes.script.transient_failures[order_id] = 1
    queue = probe_queue(fleet, "probe_effects")
    async with fleet.worker(probes.probe, with_relay=False), fleet.publisher() as publisher:
        await publisher.publish(outgoing(OrderConfirmed(order_id=order_id), queue=queue))
        await wait_for(
            lambda: scalar(
                fleet.engine("inventory"),
                "SELECT count(*) FROM stock WHERE sku = :sku",
                sku=probes.probe_sku(order_id),
            )
        )
    assert probes.script.calls[order_id] == 2
    assert await outbox_count(fleet, "order.rejected", order_id) == 1
    assert await _in_dlq(fleet, queue, order_id) is None


async def test_a_retry_left_in_a_retry_queue_of_before_the_delay_tiers_still_comes_back(
    stocked: Fleet,
) -> None:
    """Namespaces made before the shared delay tiers had a retry queue per handler and
    delay; what waits in one when a worker of today starts is applied all the same."""
    fleet = stocked
    queue = reserve_queue(fleet)
    legacy = topology.legacy_retry_queue(queue, fleet.settings.retry_delays_ms[0])
    order_id = new_id()
    connection = await aio_pika.connect(fleet.settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(
            legacy,
            durable=True,
            arguments={  # as they were declared, with their TTL and their way back
                "x-queue-type": "quorum",
                "x-message-ttl": fleet.settings.retry_delays_ms[0],
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
    finally:
        await connection.close()
    async with fleet.publisher() as publisher:
        await publisher.publish(outgoing(reserve_command(order_id, ("sku-a", 1)), queue=legacy))
    async with fleet.worker(catalog.load("inventory"), with_relay=False):
        await wait_for(lambda: _reserved(fleet, order_id))
    assert await fleet.queue_depth(legacy) == 0
    assert await reserved_quantity(fleet, order_id) == 1


async def _reserved(fleet: Fleet, order_id: str) -> bool:
    return await reserved_quantity(fleet, order_id) == 1


async def test_a_retry_whose_queue_is_gone_is_kept_unrouted_and_holds_back_no_other(
    stocked: Fleet,
) -> None:
    """A delay tier is shared: a retry that cannot go back (its queue was deleted) must not
    stay at the tier's head, where it would hold back every retry after it."""
    fleet = stocked
    tier = topology.delay_tier(fleet.ns, fleet.settings.retry_delays_ms[0])
    order_id = new_id()
    lost = outgoing(reserve_command(new_id(), ("sku-a", 1)), exchange=tier)
    back = outgoing(reserve_command(order_id, ("sku-a", 1)), exchange=tier)
    async with fleet.publisher() as publisher:
        await publisher.publish(dataclasses.replace(lost, routing_key=f"{fleet.ns}.no.such.queue"))
        await publisher.publish(dataclasses.replace(back, routing_key=reserve_queue(fleet)))
    async with fleet.worker(catalog.load("inventory"), with_relay=False):
        await wait_for(lambda: _reserved(fleet, order_id))

    async def kept_unrouted() -> bool:
        letters = await dead_letters.browse(fleet.settings, topology.unrouted_queue(fleet.ns), 1000)
        return any(letter.message_id == lost.message_id for letter in letters)

    await wait_for(kept_unrouted)
    assert await fleet.queue_depth(tier) == 0


async def test_a_permanent_failure_lands_in_the_dlq_with_its_reason(fleet: Fleet) -> None:
    order_id = new_id()
    probes.script.permanent.add(order_id)
    queue = probe_queue(fleet, "probe_effects")
    message = outgoing(OrderConfirmed(order_id=order_id), queue=queue)
    async with fleet.worker(probes.probe, with_relay=False), fleet.publisher() as publisher:
        await publisher.publish(message)
        letter = await wait_for(lambda: _in_dlq(fleet, queue, order_id))
    assert letter.message_id == message.message_id
    assert letter.headers["x-error-type"] == "PermanentError"
    assert letter.headers["x-error-message"] == "probe: this message can never succeed"
    assert letter.headers["x-attempts"] == 1
    assert letter.headers["x-original-queue"] == queue
    assert letter.headers["x-failed-at"]
    assert letter.headers["x-contract-version"] == OrderConfirmed.VERSION  # headers are kept


async def test_retries_that_never_succeed_end_in_the_dlq(fleet: Fleet) -> None:
    order_id = new_id()
    probes.script.transient_failures[order_id] = 99
    queue = probe_queue(fleet, "probe_effects")
    async with fleet.worker(probes.probe, with_relay=False), fleet.publisher() as publisher:
        await publisher.publish(outgoing(OrderConfirmed(order_id=order_id), queue=queue))
        letter = await wait_for(lambda: _in_dlq(fleet, queue, order_id))
    assert probes.script.calls[order_id] == fleet.settings.max_attempts
    assert letter.headers["x-error-type"] == "TransientError"
    assert letter.headers["x-attempts"] == fleet.settings.max_attempts
    assert (
        await scalar(
            fleet.engine("inventory"),
            "SELECT count(*) FROM stock WHERE sku = :sku",
            sku=probes.probe_sku(order_id),
        )
        == 0
    )


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("not json", "InvalidBody"),
        ("no message id", "InvalidEnvelope"),
        ("unknown version", "UnknownContractVersion"),
        ("no version", "InvalidEnvelope"),
        ("invalid body", "InvalidBody"),
        ("type this queue does not handle", "ContractError"),
    ],
)
async def test_bad_messages_land_in_the_dlq_and_the_worker_serves_the_next(
    stocked: Fleet, case: str, reason: str
) -> None:
    fleet = stocked
    queue = reserve_queue(fleet)
    marker = new_id()  # found in the body of the bad message, to pick it out of the DLQ
    good = reserve_command(marker, ("sku-a", 1))
    bad = outgoing(good, queue=queue)
    if case == "not json":
        bad = dataclasses.replace(bad, body=f"not json {marker}".encode())
    elif case == "no message id":
        bad = dataclasses.replace(bad, message_id=None)
    elif case == "unknown version":
        bad = dataclasses.replace(bad, headers={**bad.headers, "x-contract-version": 99})
    elif case == "no version":
        bad = dataclasses.replace(bad, headers={})
    elif case == "invalid body":
        body = json.loads(bad.body)
        body["items"][0]["quantity"] = 0
        bad = dataclasses.replace(bad, body=json.dumps(body).encode())
    else:
        bad = dataclasses.replace(bad, type="order.confirmed")
    next_order = new_id()
    async with (
        fleet.worker(catalog.load("inventory"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        if bad.message_id is None:
            await publish_with_another_client(fleet.settings.amqp_url, bad)
        else:
            await publisher.publish(bad)
        await publisher.publish(outgoing(reserve_command(next_order, ("sku-a", 1)), queue=queue))
        letter = await wait_for(lambda: _in_dlq(fleet, queue, marker))
        await wait_for(lambda: reserved_quantity(fleet, next_order))
    assert letter.headers["x-error-type"] == reason, letter.headers
    assert letter.headers["x-error-message"]
    assert await reserved_quantity(fleet, marker) == 0


async def test_an_order_placed_v1_is_upcast_and_handled_as_v2(fleet: Fleet) -> None:
    order_id = new_id()
    v1_body = {
        "order_id": order_id,
        "customer_id": "customer-9",
        "items": [{"sku": "sku-a", "quantity": 3, "unit_price": 4.1}],
        "total": 12.3,
        "country": "FR",
    }
    v1 = OutgoingMessage.of(
        Envelope.new("order.placed", 1, "an-old-producer"),
        exchange="",
        routing_key=probe_queue(fleet, "probe_orders"),
        body=json.dumps(v1_body).encode(),
    )
    async with fleet.worker(probes.probe, with_relay=False), fleet.publisher() as publisher:
        await publisher.publish(v1)
        received = await wait_for(lambda: _received(order_id))
    assert isinstance(received, OrderPlacedV2)
    assert received.total == Money.of("12.30", "EUR")
    assert received.items[0].unit_price == Money.of("4.10", "EUR")
    assert received.items[0].quantity == 3
    assert received.saga == "orchestration"
    # The handler can still see the message as it arrived: version 1, from the old producer.
    assert probes.script.received_headers[order_id]["x-contract-version"] == 1


async def _received(order_id: str) -> OrderPlacedV2 | None:
    return next(
        (
            m
            for m in probes.script.received
            if isinstance(m, OrderPlacedV2) and m.order_id == order_id
        ),
        None,
    )


async def test_a_worker_killed_while_holding_unacked_messages_loses_none_and_applies_each_once(
    stocked: Fleet,
) -> None:
    fleet = stocked
    queue = reserve_queue(fleet)
    orders = [new_id() for _ in range(400)]
    async with fleet.publisher() as publisher:
        await publisher.publish_many(
            [outgoing(reserve_command(order_id, ("sku-c", 1)), queue=queue) for order_id in orders]
        )
    engine = fleet.engine("inventory")
    applied = "SELECT count(*) FROM reservations WHERE order_id = ANY(:ids)"

    worker = await fleet.spawn("worker", "inventory", "--no-relay", prefetch=50)
    await wait_for(lambda: _at_least(scalar(engine, applied, ids=orders), 40), interval=0.01)
    ready = await fleet.queue_depth(queue)
    await worker.kill()
    done = int(await scalar(engine, applied, ids=orders))
    assert done < len(orders), "the worker finished before it could be killed"
    # Delivered to the worker and neither committed nor acked when it died:
    assert len(orders) - ready - done > 0

    restarted = await fleet.spawn("worker", "inventory", "--no-relay")
    await wait_for(lambda: _at_least(scalar(engine, applied, ids=orders), len(orders)), timeout=60)
    await wait_for(lambda: _queue_empty(fleet, queue))
    assert await restarted.terminate() == 0
    per_order = await scalar(
        engine,
        "SELECT max(n) FROM (SELECT count(*) AS n FROM stock_ledger"
        " WHERE order_id = ANY(:ids) GROUP BY order_id) AS per_order",
        ids=orders,
    )
    assert per_order == 1
    assert (
        await scalar(
            engine, "SELECT count(*) FROM stock_ledger WHERE order_id = ANY(:ids)", ids=orders
        )
        == 400
    )


async def _at_least(value: object, n: int) -> bool:
    return int(await value) >= n  # type: ignore[misc]


async def test_events_a_handler_emits_carry_its_correlation(stocked: Fleet) -> None:
    fleet = stocked
    order_id = new_id()
    correlation = new_id()
    message = outgoing(
        reserve_command(order_id, ("sku-a", 1)),
        queue=reserve_queue(fleet),
        correlation_id=correlation,
    )
    async with fleet.tap(events_exchange(fleet.ns), "stock.reserved") as seen:
        async with fleet.worker(catalog.load("inventory")), fleet.publisher() as publisher:
            await publisher.publish(message)
            await wait_for(lambda: _seen(seen, order_id))
    event = await _seen(seen, order_id)
    assert event is not None
    assert event.correlation_id == correlation
    assert event.headers["x-causation-id"] == message.message_id
    assert event.message_id and event.message_id != message.message_id
    assert event.app_id == "inventory"
    assert event.delivery_mode == 2  # persistent


async def _seen(seen: Seen, order_id: str) -> aio_pika.abc.AbstractIncomingMessage | None:
    return next((m for m in seen if order_id in m.body.decode()), None)


async def test_a_message_that_kills_its_consumer_every_time_is_dead_lettered_by_the_broker(
    fleet: Fleet,
) -> None:
    """A consumer that dies before ack (its connection drops) gives the message back; the
    quorum queue's delivery limit stops that after ``delivery_limit`` deliveries."""
    order_id = new_id()
    queue = probe_queue(fleet, "probe_effects")
    async with fleet.worker(probes.probe, with_relay=False):
        pass  # declares the probe's queues, then stops consuming
    async with fleet.publisher() as publisher:
        await publisher.publish(outgoing(OrderConfirmed(order_id=order_id), queue=queue))
    deliveries = 0
    while True:
        connection = await aio_pika.connect(fleet.settings.amqp_url)
        channel = await connection.channel()
        source = await channel.declare_queue(queue, passive=True)
        message = await source.get(no_ack=False, fail=False)
        await connection.close()  # "crash": the delivery was never acked
        if message is None:
            break
        deliveries += 1
        assert deliveries <= fleet.settings.delivery_limit + 1, "the message loops forever"
    letter = await wait_for(lambda: _in_dlq(fleet, queue, order_id))
    assert deliveries == fleet.settings.delivery_limit + 1
    assert letter.headers["x-death"][0]["reason"] == "delivery_limit"
    assert letter.reason.startswith("broker: delivery_limit")


async def test_a_database_outage_is_retried_with_delay_and_the_message_applied_once(
    stocked: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = stocked
    order_id = new_id()
    database = fleet.settings.database_name("inventory")
    admin = await asyncpg.connect(fleet.settings.pg_admin_url)
    patient = fleet.settings.model_copy(update={"max_attempts": 20})
    try:
        async with fleet.worker(catalog.load("inventory"), with_relay=False, settings=patient):
            # The outage: no new connections, and every existing one terminated.
            await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
            async with fleet.publisher() as publisher:
                await publisher.publish(
                    outgoing(reserve_command(order_id, ("sku-b", 2)), queue=reserve_queue(fleet))
                )
            await wait_for(lambda: _logged(caplog, "retrying"))
            await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
            await wait_for(lambda: reserved_quantity(fleet, order_id), timeout=30)
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
    assert await reserved_quantity(fleet, order_id) == 2
    assert await _in_dlq(fleet, reserve_queue(fleet), order_id) is None


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


async def test_a_release_before_its_reservation_leaves_a_tombstone_that_refuses_it(
    stocked: Fleet,
) -> None:
    fleet = stocked
    order_id = new_id()
    release = ReleaseStock(order_id=order_id, reason="payment failed", saga="orchestration")
    async with (
        fleet.worker(catalog.load("inventory"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(outgoing(release, queue=f"{fleet.ns}.inventory.release_stock"))
        await wait_for(lambda: _outbox_at_least(fleet, "stock.released", order_id, 1))
        await publisher.publish(
            outgoing(reserve_command(order_id, ("sku-a", 1)), queue=reserve_queue(fleet))
        )
        await wait_for(lambda: _outbox_at_least(fleet, "stock.reservation_failed", order_id, 1))
    assert await reserved_quantity(fleet, order_id) == 0
    assert await outbox_count(fleet, "stock.reserved", order_id) == 0


async def test_a_release_gives_back_exactly_what_was_reserved_once(stocked: Fleet) -> None:
    fleet = stocked
    order_id = new_id()
    release = ReleaseStock(order_id=order_id, reason="shipment failed", saga="orchestration")
    release_queue = f"{fleet.ns}.inventory.release_stock"
    available = "SELECT available FROM stock WHERE sku = 'sku-c'"
    engine = fleet.engine("inventory")
    async with (
        fleet.worker(catalog.load("inventory"), with_relay=False),
        fleet.publisher() as publisher,
    ):
        await publisher.publish(
            outgoing(reserve_command(order_id, ("sku-c", 7)), queue=reserve_queue(fleet))
        )
        await wait_for(lambda: reserved_quantity(fleet, order_id))
        before_release = await scalar(engine, available)
        for _ in range(2):  # a compensation delivered twice, under two message ids
            await publisher.publish(outgoing(release, queue=release_queue))
        await wait_for(lambda: _outbox_at_least(fleet, "stock.released", order_id, 2))
    assert await scalar(engine, available) == before_release + 7
    given_back = "SELECT sum(delta) FROM stock_ledger WHERE order_id = :id AND reason = 'released'"
    assert await scalar(engine, given_back, id=order_id) == 7
