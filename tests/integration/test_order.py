"""The event-sourced order service on the real servers: placing once per key, confirm and
reject with late replies ignored, upcasting stored events, snapshots, and commands racing
for one stream."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from contracts import (
    ConfirmOrder,
    Message,
    Money,
    OrderConfirmed,
    OrderLine,
    OrderRejected,
    PaymentFailed,
    PlaceOrder,
    RejectOrder,
    SagaStyle,
    ShipmentCreated,
    ShipmentFailed,
    StockReservationFailed,
)
from db import event_store
from tests.integration.support import (
    Fleet,
    ignored,
    new_id,
    outgoing,
    scalar,
    wait_for,
    wait_ignored,
)
from workers.operations import dead_letters
from workers.order import domain, store
from workers.order.domain import Status
from workers.order.settings import OrderSettings
from workers.runtime import catalog
from workers.runtime.settings import Settings
from workers.runtime.worker import Worker

pytestmark = pytest.mark.integration


def queue(fleet: Fleet, handler: str) -> str:
    return f"{fleet.ns}.order.{handler}"


def place_command(
    *, key: str | None = None, order_id: str | None = None, saga: SagaStyle = "orchestration"
) -> PlaceOrder:
    return PlaceOrder(
        idempotency_key=key or new_id(),
        customer_id="customer-1",
        items=[
            OrderLine(sku="sku-a", quantity=2, unit_price=Money.of("1.25", "EUR")),
            OrderLine(sku="sku-b", quantity=1, unit_price=Money.of("10.00", "EUR")),
        ],
        country="DE",
        saga=saga,
        order_id=order_id,
    )


class OrderFleet:
    """A running order worker (no relay: emitted messages stay in the outbox to be counted)."""

    def __init__(self, fleet: Fleet, worker: Worker | None = None) -> None:
        self.fleet = fleet
        self.engine = fleet.engine("order")
        self.worker = worker

    async def send(self, message: Message, handler: str) -> str:
        out = outgoing(message, queue=queue(self.fleet, handler))
        async with self.fleet.publisher() as publisher:
            await publisher.publish(out)
        assert out.message_id is not None
        return out.message_id

    async def place(self, command: PlaceOrder) -> str:
        order_id = domain.order_id_for(command)
        await self.send(command, "place_order")
        await wait_for(lambda: self.version(order_id))
        return order_id

    async def handled(self, message_id: str) -> bool:
        query = "SELECT count(*) FROM inbox WHERE message_id = :id"
        return bool(await scalar(self.engine, query, id=message_id))

    async def wait_handled(self, *message_ids: str) -> None:
        """Until every one of the messages is in the inbox (applied, whatever the decision)."""
        for message_id in message_ids:
            await wait_for(functools.partial(self.handled, message_id))

    async def send_ignored(self, message: Message, handler: str) -> str:
        """Send ``message``, and wait until the handler's filter has acknowledged it."""
        assert self.worker is not None
        before = ignored(self.worker, handler)
        message_id = await self.send(message, handler)
        await wait_ignored(self.worker, handler, before + 1)
        assert not await self.handled(message_id)  # no transaction: no inbox row
        return message_id

    async def version(self, order_id: str) -> int:
        async with self.fleet.connection("order") as conn:
            return await event_store.current_version(conn, order_id)

    async def stream(self, order_id: str) -> list[tuple[int, str, int]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT version, type, contract_version FROM events"
                    " WHERE stream_id = :id ORDER BY version"
                ),
                {"id": order_id},
            )
            return [(row[0], row[1], row[2]) for row in rows]

    async def load(self, order_id: str) -> store.LoadedOrder:
        async with self.fleet.connection("order") as conn:
            return await store.load_order(conn, order_id)

    async def outbox(self, order_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT message_id, type, version, correlation_id, causation_id, occurred_at,"
                    " convert_from(body, 'UTF8') AS body FROM outbox"
                    " WHERE convert_from(body, 'UTF8')::jsonb->>'order_id' = :id ORDER BY id"
                ),
                {"id": order_id},
            )
            return [dict(row._mapping) for row in rows]

    async def outbox_types(self, order_id: str) -> list[str]:
        return [row["type"] for row in await self.outbox(order_id)]


@pytest.fixture
async def orders(fleet: Fleet) -> AsyncIterator[OrderFleet]:
    async with fleet.worker(catalog.load("order"), with_relay=False) as worker:
        yield OrderFleet(fleet, worker)


async def test_placing_an_order_stores_and_emits_order_placed_v2(orders: OrderFleet) -> None:
    command = place_command(saga="choreography")
    message_id = await orders.send(command, "place_order")
    order_id = domain.order_id_for(command)
    await orders.wait_handled(message_id)

    assert await orders.stream(order_id) == [(1, "order.placed", 2)]
    async with orders.fleet.connection("order") as conn:
        (stored,) = await event_store.load(conn, order_id)
    (row,) = await orders.outbox(order_id)
    assert (row["type"], row["version"]) == ("order.placed", 2)
    # The event in the stream is the message in the outbox, under the same message id.
    assert stored.metadata == {
        "message_id": row["message_id"],
        "correlation_id": order_id,  # order.placed starts the order's correlation
        "causation_id": message_id,
        # The message's own time, which a replay sends again.
        "occurred_at": row["occurred_at"].isoformat(),
    }
    assert (row["correlation_id"], row["causation_id"]) == (order_id, message_id)
    assert json.loads(row["body"]) == stored.message.model_dump(mode="json")
    assert json.loads(row["body"])["total"] == {"amount": "12.50", "currency": "EUR"}

    loaded = await orders.load(order_id)
    assert loaded.order is not None
    assert (loaded.order.status, loaded.order.saga) == (Status.PENDING, "choreography")
    assert loaded.order.total == Money.of("12.50", "EUR")


async def test_the_same_idempotency_key_twice_places_one_order(orders: OrderFleet) -> None:
    key = new_id()
    # Two message ids, so the inbox cannot tell them apart: the order id does.
    first = await orders.send(place_command(key=key), "place_order")
    second = await orders.send(place_command(key=key), "place_order")
    await orders.wait_handled(first)
    await orders.wait_handled(second)
    order_id = domain.order_id_for(place_command(key=key))
    assert await orders.stream(order_id) == [(1, "order.placed", 2)]
    assert await orders.outbox_types(order_id) == ["order.placed"]


async def test_a_confirmed_order_stays_confirmed_whatever_comes_late(orders: OrderFleet) -> None:
    order_id = await orders.place(place_command())
    confirmed = await orders.send(ConfirmOrder(order_id=order_id), "confirm_order")
    await orders.wait_handled(confirmed)
    late = [
        await orders.send(RejectOrder(order_id=order_id, reason="too late"), "reject_order"),
        await orders.send(ConfirmOrder(order_id=order_id), "confirm_order"),
    ]
    await orders.wait_handled(*late)
    assert await orders.stream(order_id) == [(1, "order.placed", 2), (2, "order.confirmed", 3)]
    assert await orders.outbox_types(order_id) == ["order.placed", "order.confirmed"]
    loaded = await orders.load(order_id)
    assert loaded.order is not None and loaded.order.status is Status.CONFIRMED


async def test_each_emitted_event_carries_its_stream_version_in_a_header(
    orders: OrderFleet,
) -> None:
    order_id = await orders.place(place_command())
    await orders.wait_handled(await orders.send(ConfirmOrder(order_id=order_id), "confirm_order"))
    async with orders.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT type, headers->>'x-stream-version' FROM outbox"
                " WHERE convert_from(body, 'UTF8')::jsonb->>'order_id' = :id ORDER BY id"
            ),
            {"id": order_id},
        )
        assert [tuple(row) for row in rows] == [("order.placed", "1"), ("order.confirmed", "2")]


async def test_a_rejected_order_stays_rejected_whatever_comes_late(orders: OrderFleet) -> None:
    order_id = await orders.place(place_command())
    rejected = await orders.send(
        RejectOrder(order_id=order_id, reason="out of stock"), "reject_order"
    )
    await orders.wait_handled(rejected)
    late = [
        await orders.send(ConfirmOrder(order_id=order_id), "confirm_order"),
        await orders.send(RejectOrder(order_id=order_id, reason="again"), "reject_order"),
    ]
    await orders.wait_handled(*late)
    assert await orders.stream(order_id) == [(1, "order.placed", 2), (2, "order.rejected", 2)]
    assert await orders.outbox_types(order_id) == ["order.placed", "order.rejected"]
    loaded = await orders.load(order_id)
    assert loaded.order is not None
    assert (loaded.order.status, loaded.order.rejection_reason) == (
        Status.REJECTED,
        "out of stock",
    )


async def dead_letter(fleet: Fleet, handler: str, text: str) -> dead_letters.DeadLetter | None:
    return await fleet.dead_letter(queue(fleet, handler), text)


async def test_confirming_an_order_that_was_never_placed_is_dead_lettered(
    orders: OrderFleet,
) -> None:
    order_id = new_id()
    await orders.send(ConfirmOrder(order_id=order_id), "confirm_order")
    letter = await wait_for(lambda: dead_letter(orders.fleet, "confirm_order", order_id))
    assert letter.headers["x-error-type"] == "PermanentError"
    assert "never placed" in letter.headers["x-error-message"]
    assert await orders.stream(order_id) == []


async def test_an_order_placed_v1_in_the_stream_is_upcast_and_can_be_confirmed(
    orders: OrderFleet,
) -> None:
    order_id = new_id()
    v1 = {
        "order_id": order_id,
        "customer_id": "customer-old",
        "items": [{"sku": "sku-a", "quantity": 3, "unit_price": 4.1}],
        "total": 12.3,
        "country": "FR",
    }
    async with orders.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO events (stream_id, version, type, contract_version, data)"
                " VALUES (:id, 1, 'order.placed', 1, CAST(:data AS jsonb))"
            ),
            {"id": order_id, "data": json.dumps(v1)},
        )
    message_id = await orders.send(ConfirmOrder(order_id=order_id), "confirm_order")
    await orders.wait_handled(message_id)
    assert await orders.stream(order_id) == [(1, "order.placed", 1), (2, "order.confirmed", 3)]
    loaded = await orders.load(order_id)
    assert loaded.order is not None
    assert loaded.order.status is Status.CONFIRMED
    assert loaded.order.total == Money.of("12.30", "EUR")
    assert str(loaded.order.total) == "12.30 EUR"
    assert loaded.order.items[0].unit_price == Money.of("4.10", "EUR")
    assert loaded.order.saga == "orchestration"


# --- Snapshots. -------------------------------------------------------------------------


async def snapshot_row(orders: OrderFleet, order_id: str) -> tuple[int, int] | None:
    async with orders.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text("SELECT version, schema_version FROM snapshots WHERE stream_id = :id"),
                {"id": order_id},
            )
        ).first()
    return None if row is None else (row.version, row.schema_version)


async def test_the_worker_snapshots_every_n_events_and_loads_from_the_snapshot(
    fleet: Fleet,
) -> None:
    orders = OrderFleet(fleet)
    every_two = OrderSettings(snapshot_every=2)
    async with fleet.worker(catalog.load("order"), with_relay=False, section=every_two):
        order_id = await orders.place(place_command())
        assert await snapshot_row(orders, order_id) is None  # version 1: not yet
        confirmed = await orders.send(ConfirmOrder(order_id=order_id), "confirm_order")
        await orders.wait_handled(confirmed)
    assert await snapshot_row(orders, order_id) == (2, domain.SCHEMA_VERSION)

    loaded = await orders.load(order_id)
    assert (loaded.snapshot_version, loaded.events_read, loaded.version) == (2, 0, 2)
    async with orders.fleet.connection("order") as conn:
        replayed = domain.fold(None, [e.message for e in await event_store.load(conn, order_id)])
    assert loaded.order == replayed
    assert loaded.order is not None and loaded.order.status is Status.CONFIRMED

    # The snapshot is what is read: doctor it, and the loaded order shows it.
    doctored = {**domain.to_snapshot(loaded.order), "customer_id": "from-the-snapshot"}
    async with orders.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE snapshots SET state = CAST(:s AS jsonb) WHERE stream_id = :id"),
            {"s": json.dumps(doctored), "id": order_id},
        )
    from_snapshot = await orders.load(order_id)
    assert from_snapshot.order is not None
    assert from_snapshot.order.customer_id == "from-the-snapshot"

    # Another schema version: never trusted, the stream is replayed from its events.
    async with orders.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE snapshots SET schema_version = :v WHERE stream_id = :id"),
            {"v": domain.SCHEMA_VERSION + 1, "id": order_id},
        )
    replayed_load = await orders.load(order_id)
    assert (replayed_load.snapshot_version, replayed_load.events_read) == (0, 2)
    assert replayed_load.order == replayed


async def test_with_the_default_setting_short_streams_take_no_snapshot(
    orders: OrderFleet,
) -> None:
    order_id = await orders.place(place_command())
    confirmed = await orders.send(ConfirmOrder(order_id=order_id), "confirm_order")
    await orders.wait_handled(confirmed)
    assert await snapshot_row(orders, order_id) is None
    loaded = await orders.load(order_id)
    assert (loaded.snapshot_version, loaded.events_read) == (0, 2)


# --- Two commands racing for one stream. ------------------------------------------------


async def _blocked_on_a_lock(orders: OrderFleet, n: int) -> bool:
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return int(await scalar(orders.engine, query)) >= n


async def test_a_writer_racing_the_handlers_makes_one_of_them_conflict_and_retry_on_its_event(
    orders: OrderFleet, caplog: pytest.LogCaptureFixture
) -> None:
    """The runtime holds an order's lock while it decides about it, so a confirm and a
    reject of one order take turns; a writer that appends without that lock (the gate)
    still collides with the first of them on the stream's primary key."""
    order_id = await orders.place(place_command())
    # Hold version 2 of the stream in an open transaction: the first handler decides at
    # version 1 and waits on that row, the second waits for the order's lock.
    async with orders.fleet.connection("order") as gate:
        gate_tx = gate.transaction()
        await gate_tx.start()
        await event_store.append(
            gate, order_id, 1, [OrderRejected(order_id=order_id, reason="the gate")]
        )
        confirm = await orders.send(ConfirmOrder(order_id=order_id), "confirm_order")
        reject = await orders.send(RejectOrder(order_id=order_id, reason="no"), "reject_order")
        await wait_for(lambda: _blocked_on_a_lock(orders, 2))
        await gate_tx.commit()  # the first handler's append conflicts; the second goes on

    await orders.wait_handled(confirm, reject)
    retries = [
        record.getMessage()
        for record in caplog.records
        if "retrying" in record.getMessage() and "ConcurrencyConflict" in record.getMessage()
    ]
    assert len(retries) == 1, retries
    loser = confirm if confirm in retries[0] else reject
    assert loser in retries[0]

    # Both decided on the gate's rejection in the end: nothing more is stored or sent.
    assert await orders.stream(order_id) == [(1, "order.placed", 2), (2, "order.rejected", 2)]
    assert await orders.outbox_types(order_id) == ["order.placed"]
    loaded = await orders.load(order_id)
    assert loaded.order is not None
    assert (loaded.order.status, loaded.order.rejection_reason) == (Status.REJECTED, "the gate")
    # The loser was applied once on its retry, and never dead-lettered.
    inbox = "SELECT count(*) FROM inbox WHERE message_id = :id"
    assert await scalar(orders.engine, inbox, id=loser) == 1
    for handler in ("confirm_order", "reject_order"):
        assert await dead_letter(orders.fleet, handler, order_id) is None


async def test_the_same_key_placed_twice_at_once_places_one_order(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    """Two deliveries of a PlaceOrder (two ids) handled concurrently by two workers."""
    orders = OrderFleet(fleet)
    command = place_command()
    order_id = domain.order_id_for(command)
    async with fleet.publisher() as publisher:
        messages = [outgoing(command, queue=queue(fleet, "place_order")) for _ in range(2)]
        await publisher.publish_many(messages)
    async with (
        fleet.worker(catalog.load("order"), with_relay=False),
        fleet.worker(catalog.load("order"), with_relay=False),
    ):
        await orders.wait_handled(*(m.message_id for m in messages if m.message_id))
    assert await orders.stream(order_id) == [(1, "order.placed", 2)]
    assert await orders.outbox_types(order_id) == ["order.placed"]


def batched(fleet: Fleet) -> Settings:
    """Settings under which messages queued together meet in one batch."""
    return fleet.settings.model_copy(
        update={"batch_size": 10, "batch_wait_ms": 500.0, "prefetch": 20}
    )


async def queue_all(fleet: Fleet, handler: str, messages: list[Message]) -> list[str]:
    sent = [outgoing(message, queue=queue(fleet, handler)) for message in messages]
    async with fleet.publisher() as publisher:
        await publisher.publish_many(sent)
    return [message.message_id for message in sent if message.message_id]


async def test_requests_for_one_order_in_one_batch_are_decided_each_on_the_one_before(
    fleet: Fleet,
) -> None:
    """Queued together, they meet in one transaction per queue: the second placing of a
    key and the second confirmation of an order see the first's event, so nothing collides
    on a stream (a collision would make the batch fall back to one message at a time)."""
    orders = OrderFleet(fleet)
    first, second = place_command(), place_command()
    first_id, second_id = domain.order_id_for(first), domain.order_id_for(second)
    every_event = OrderSettings(snapshot_every=1)
    async with fleet.worker(
        catalog.load("order"), with_relay=False, settings=batched(fleet), section=every_event
    ) as worker:
        await orders.wait_handled(*await queue_all(fleet, "place_order", [first, second, first]))
        confirms = [ConfirmOrder(order_id=first_id), ConfirmOrder(order_id=second_id)]
        await orders.wait_handled(
            *await queue_all(fleet, "confirm_order", [*confirms, confirms[0]])
        )
        assert worker.consumer is not None
        assert worker.consumer.batched == 6
        assert worker.consumer.fallbacks == 0
    for order_id in (first_id, second_id):
        assert await orders.stream(order_id) == [
            (1, "order.placed", 2),
            (2, "order.confirmed", 3),
        ]
        assert await orders.outbox_types(order_id) == ["order.placed", "order.confirmed"]
        assert await snapshot_row(orders, order_id) == (2, domain.SCHEMA_VERSION)


# --- Choreography. ----------------------------------------------------------------------


async def test_in_choreography_shipment_created_confirms_the_order(orders: OrderFleet) -> None:
    order_id = await orders.place(place_command(saga="choreography"))
    payment_id = new_id()
    created = ShipmentCreated(
        order_id=order_id,
        shipment_id=new_id(),
        tracking_number="TN-1",
        saga="choreography",
        payment_id=payment_id,
    )
    message_id = await orders.send(created, "confirm_order")
    await orders.wait_handled(message_id)
    assert [t for _, t, _ in await orders.stream(order_id)] == ["order.placed", "order.confirmed"]
    assert await orders.outbox_types(order_id) == ["order.placed", "order.confirmed"]
    # The stream keeps the references the shipment reported, for read models rebuilt from it.
    confirmed = json.loads((await orders.outbox(order_id))[1]["body"])
    assert confirmed == {
        "order_id": order_id,
        "payment_id": payment_id,
        "tracking_number": "TN-1",
        "saga": "choreography",  # so the orchestrator leaves it before any transaction
    }


async def test_confirm_order_v2_records_the_saga_s_references(orders: OrderFleet) -> None:
    order_id = await orders.place(place_command(saga="orchestration"))
    payment_id = new_id()
    command = ConfirmOrder(order_id=order_id, payment_id=payment_id, tracking_number="TN-9")
    await orders.wait_handled(await orders.send(command, "confirm_order"))
    async with orders.fleet.connection("order") as conn:
        stored = await event_store.load(conn, order_id)
    assert stored[-1].message == OrderConfirmed(
        order_id=order_id, payment_id=payment_id, tracking_number="TN-9", saga="orchestration"
    )


async def test_in_orchestration_shipment_created_is_left_to_the_orchestrator(
    orders: OrderFleet,
) -> None:
    order_id = await orders.place(place_command(saga="orchestration"))
    created = ShipmentCreated(
        order_id=order_id, shipment_id=new_id(), tracking_number="TN-2", saga="orchestration"
    )
    await orders.send_ignored(created, "confirm_order")
    assert await orders.stream(order_id) == [(1, "order.placed", 2)]
    loaded = await orders.load(order_id)
    assert loaded.order is not None and loaded.order.status is Status.PENDING


@pytest.mark.parametrize(
    "failure",
    [
        lambda order_id, saga: StockReservationFailed(
            order_id=order_id, reason="out of stock: sku-a", saga=saga
        ),
        lambda order_id, saga: PaymentFailed(
            order_id=order_id, reason="insufficient funds", saga=saga
        ),
        lambda order_id, saga: ShipmentFailed(
            order_id=order_id, reason="blocked country", saga=saga
        ),
    ],
)
async def test_in_choreography_a_failure_event_rejects_the_order_with_its_reason(
    orders: OrderFleet, failure: Any
) -> None:
    choreographed = await orders.place(place_command(saga="choreography"))
    orchestrated = await orders.place(place_command(saga="orchestration"))
    await orders.send_ignored(failure(orchestrated, "orchestration"), "reject_order")
    await orders.wait_handled(
        await orders.send(failure(choreographed, "choreography"), "reject_order")
    )
    event = failure(choreographed, "choreography")
    loaded = await orders.load(choreographed)
    assert loaded.order is not None
    assert (loaded.order.status, loaded.order.rejection_reason) == (Status.REJECTED, event.reason)
    assert await orders.outbox_types(choreographed) == ["order.placed", "order.rejected"]
    ignored = await orders.load(orchestrated)
    assert ignored.order is not None and ignored.order.status is Status.PENDING
