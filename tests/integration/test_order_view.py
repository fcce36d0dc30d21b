"""The read model on the real servers: an order's events in any order, repeated, give one row;
the CLI reads that row (and only the view's database)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from contracts import (
    Envelope,
    Message,
    Money,
    OrderConfirmed,
    OrderLine,
    OrderPlacedV2,
    OrderRejected,
    OutgoingMessage,
    PaymentCompleted,
    ShipmentCreated,
    encode_message,
)
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.sagas import SagaFleet
from tests.integration.support import Fleet, new_id, scalar, wait_for
from workers.orchestrator.settings import OrchestratorSettings
from workers.order_view import store
from workers.runtime import catalog

pytestmark = pytest.mark.integration

PLACED_AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
PAID_AT = datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
SHIPPED_AT = datetime(2024, 5, 1, 12, 0, 2, tzinfo=UTC)
DECIDED_AT = datetime(2024, 5, 1, 12, 0, 3, tzinfo=UTC)
PAYMENT_ID = "0b1f6a64-8a0e-4d4e-9d59-7b2d7f7d2a11"
SHIPMENT_ID = "5c3e1f0a-2b4d-4e6f-8a9b-0c1d2e3f4a5b"
TRACKING = "TRK-0001"


@pytest.fixture(scope="module")
async def view(fleet: Fleet) -> AsyncIterator[Fleet]:
    """The order_view worker, in this process, for the whole module."""
    async with fleet.worker(catalog.load("order_view"), with_relay=False):
        yield fleet


def view_queue(fleet: Fleet) -> str:
    return f"{fleet.ns}.order_view.project"


def event(
    fleet: Fleet,
    message: Message,
    order_id: str,
    at: datetime,
    *,
    producer: str,
    stream_version: int | None = None,
) -> OutgoingMessage:
    """``message`` as its producer sends it: a fixed time, the order's correlation, and for
    order events the stream version header the order service sets."""
    envelope = Envelope(
        message_id=str(uuid.uuid4()),
        type=message.TYPE,
        version=message.VERSION,
        correlation_id=order_id,
        causation_id=None,
        occurred_at=at,
        producer=producer,
    )
    headers = {} if stream_version is None else {"x-stream-version": stream_version}
    return OutgoingMessage.of(
        envelope,
        exchange="",
        routing_key=view_queue(fleet),
        body=encode_message(message),
        headers=headers,
    )


def order_events(
    fleet: Fleet, order_id: str, *, rejected: bool = False, with_versions: bool = True
) -> dict[str, OutgoingMessage]:
    """The events of one order, as the order, payment and shipping services emit them."""
    items = [
        OrderLine(sku="WIDGET", quantity=2, unit_price=Money.of("9.90", "EUR")),
        OrderLine(sku="GADGET", quantity=1, unit_price=Money.of("5.25", "EUR")),
    ]
    total = Money.of("25.05", "EUR")
    placed = OrderPlacedV2(
        order_id=order_id,
        customer_id="view-customer",
        items=items,
        total=total,
        country="DE",
        saga="choreography",
    )
    decided: Message = (
        OrderRejected(order_id=order_id, reason="shipment cancelled late")
        if rejected
        else OrderConfirmed(order_id=order_id)
    )
    paid = PaymentCompleted(
        order_id=order_id,
        payment_id=PAYMENT_ID,
        amount=total,
        saga="choreography",
        country="DE",
        items=items,
    )
    shipped = ShipmentCreated(
        order_id=order_id, shipment_id=SHIPMENT_ID, tracking_number=TRACKING, saga="choreography"
    )
    return {
        "placed": event(
            fleet,
            placed,
            order_id,
            PLACED_AT,
            producer="order",
            stream_version=1 if with_versions else None,
        ),
        "paid": event(fleet, paid, order_id, PAID_AT, producer="payment"),
        "shipped": event(fleet, shipped, order_id, SHIPPED_AT, producer="shipping"),
        "decided": event(
            fleet,
            decided,
            order_id,
            DECIDED_AT,
            producer="order",
            stream_version=2 if with_versions else None,
        ),
    }


def again_with_a_new_id(message: OutgoingMessage) -> OutgoingMessage:
    """The same event under another message id: a repeat the inbox cannot recognise."""
    return dataclasses.replace(message, message_id=str(uuid.uuid4()))


async def project(fleet: Fleet, arrivals: Sequence[OutgoingMessage]) -> None:
    """Publish ``arrivals`` in this order, then wait until the view has handled every one."""
    async with fleet.publisher() as publisher:
        for message in arrivals:
            await publisher.publish(message)
    ids = sorted({str(message.message_id) for message in arrivals})

    async def all_handled() -> bool:
        count = await scalar(
            fleet.engine("order_view"),
            "SELECT count(*) FROM inbox WHERE consumer = 'order_view.project'"
            " AND message_id = ANY(:ids)",
            ids=ids,
        )
        return int(count) == len(ids)

    await wait_for(all_handled)


async def summary_row(fleet: Fleet, order_id: str) -> dict[str, Any] | None:
    async with fleet.engine("order_view").connect() as conn:
        row = (
            await conn.execute(
                sa.select(store.order_summaries).where(store.order_summaries.c.order_id == order_id)
            )
        ).first()
    if row is None:
        return None
    return {k: v for k, v in row._asdict().items() if k != "order_id"}


CONFIRMED_ROW = {
    "customer_id": "view-customer",
    "status": "CONFIRMED",
    "item_count": 3,
    "total_amount": Decimal("25.05"),
    "currency": "EUR",
    "saga": "choreography",
    "payment_id": PAYMENT_ID,
    "tracking_number": TRACKING,
    "rejection_reason": None,
    "created_at": PLACED_AT,
    "updated_at": DECIDED_AT,
    "last_version": 2,
}
REJECTED_ROW = {
    **CONFIRMED_ROW,
    "status": "REJECTED",
    "payment_id": None,
    "tracking_number": None,
    "rejection_reason": "shipment cancelled late",
}

ARRIVALS = {
    "stream order": ["placed", "paid", "shipped", "decided"],
    "reversed": ["decided", "shipped", "paid", "placed"],
    "decision first": ["decided", "placed", "paid", "shipped"],
    "placed last": ["paid", "decided", "shipped", "placed"],
    "with duplicates": ["shipped", "decided", "placed", "decided", "paid", "placed", "shipped"],
}


@pytest.mark.parametrize("rejected", [False, True], ids=["confirmed", "rejected"])
@pytest.mark.parametrize("arrival", list(ARRIVALS))
async def test_one_order_s_events_in_any_order_and_repeated_give_the_same_row(
    view: Fleet, arrival: str, rejected: bool
) -> None:
    order_id = new_id()
    events = order_events(view, order_id, rejected=rejected)
    arrivals = [events[name] for name in ARRIVALS[arrival]]
    # And each event once more under a new message id, in reverse: the rules, not the inbox,
    # must make these repeats harmless.
    arrivals += [again_with_a_new_id(m) for m in reversed(list(events.values()))]
    await project(view, arrivals)
    assert await summary_row(view, order_id) == (REJECTED_ROW if rejected else CONFIRMED_ROW)


async def test_random_arrival_orders_of_many_orders_at_once_give_the_same_rows(view: Fleet) -> None:
    rng = random.Random(20240501)
    orders = {new_id(): rng.random() < 0.5 for _ in range(12)}
    arrivals: list[OutgoingMessage] = []
    for order_id, rejected in orders.items():
        events = list(order_events(view, order_id, rejected=rejected).values())
        arrivals += events + rng.sample(events, 2)  # two of them delivered twice
    rng.shuffle(arrivals)
    await project(view, arrivals)
    for order_id, rejected in orders.items():
        assert await summary_row(view, order_id) == (REJECTED_ROW if rejected else CONFIRMED_ROW)


async def test_without_stream_version_headers_the_order_service_s_versions_are_assumed(
    view: Fleet,
) -> None:
    order_id = new_id()
    events = order_events(view, order_id, with_versions=False)
    await project(view, [events["decided"], events["paid"], events["placed"], events["shipped"]])
    assert await summary_row(view, order_id) == CONFIRMED_ROW


async def test_events_of_other_services_alone_make_a_row_with_no_status(view: Fleet) -> None:
    order_id = new_id()
    events = order_events(view, order_id)
    await project(view, [events["paid"], events["shipped"]])
    row = await summary_row(view, order_id)
    assert row is not None
    assert (row["status"], row["payment_id"], row["tracking_number"]) == (
        None,
        PAYMENT_ID,
        TRACKING,
    )
    # ... which the query side does not show.
    code, output = await view.cli("orders", "show", order_id)
    assert (code, output) == (1, f"fleet: no order {order_id} in the view")


# --- The query side: fleet orders list / show. ----------------------------------------


def of_customer(message: OutgoingMessage, customer: str) -> OutgoingMessage:
    body = json.loads(message.body)
    if "customer_id" not in body:
        return message
    return dataclasses.replace(message, body=json.dumps({**body, "customer_id": customer}).encode())


@pytest.fixture(scope="module")
async def listed(view: Fleet) -> dict[str, str]:
    """Three orders of one customer in the view: confirmed, rejected, pending."""
    customer = f"cli-{new_id()[:8]}"
    ids = {"confirmed": new_id(), "rejected": new_id(), "pending": new_id()}
    arrivals: list[OutgoingMessage] = []
    for kind, order_id in ids.items():
        events = {
            name: of_customer(message, customer)
            for name, message in order_events(view, order_id, rejected=kind == "rejected").items()
        }
        arrivals += [events["placed"]] if kind == "pending" else list(events.values())
    await project(view, arrivals)
    return {"customer": customer, **ids}


async def test_orders_list_filters_by_customer_and_status(
    view: Fleet, listed: dict[str, str]
) -> None:
    code, output = await view.cli("orders", "list", "--customer", listed["customer"], "--json")
    assert code == 0, output
    answer = json.loads(output)
    assert {order["order_id"] for order in answer["orders"]} == {
        listed["confirmed"],
        listed["rejected"],
        listed["pending"],
    }
    assert answer["lag"]["messages_waiting"] == 0
    assert answer["lag"]["last_update"] is not None

    code, output = await view.cli(
        "orders", "list", "--customer", listed["customer"], "--status", "REJECTED", "--json"
    )
    assert code == 0, output
    [rejected] = json.loads(output)["orders"]
    assert rejected["order_id"] == listed["rejected"]
    assert rejected["rejection_reason"] == "shipment cancelled late"
    assert rejected["total"] == "25.05 EUR"

    code, output = await view.cli(
        "orders", "list", "--customer", listed["customer"], "--limit", "1"
    )
    assert code == 0, output
    assert "1 order" in output and "message(s) waiting" in output


async def test_orders_show_prints_the_row(view: Fleet, listed: dict[str, str]) -> None:
    code, output = await view.cli("orders", "show", listed["confirmed"], "--json")
    assert code == 0, output
    order = json.loads(output)["order"]
    assert order["status"] == "CONFIRMED"
    assert (order["payment_id"], order["tracking_number"]) == (PAYMENT_ID, TRACKING)
    assert order["item_count"] == 3

    code, output = await view.cli("orders", "show", listed["pending"])
    assert code == 0, output
    assert "PENDING" in output and "message(s) waiting" in output


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["orders", "show", "no-such-order"], 1, "no order no-such-order in the view"),
        (["orders", "list", "--status", "LOST"], 2, "--status must be one of"),
        (["orders", "list", "--limit", "0"], 2, "--limit"),
    ],
)
async def test_orders_bad_input_gets_one_line_and_a_non_zero_exit(
    view: Fleet, args: list[str], code: int, words: str
) -> None:
    exit_code, output = await view.cli(*args)
    assert exit_code == code, output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("fleet: ") and words in output, output


# --- End to end: real orders through every service, each its own process. ---------------


@pytest.fixture(scope="module")
async def saga_fleet(server_urls: tuple[str, str]) -> AsyncIterator[SagaFleet]:
    settings = namespace_settings(server_urls, max_attempts=6)
    sections = [OrchestratorSettings(step_timeout_seconds=5.0)]
    async with namespaced_fleet(settings, sections) as fleet:
        sagas = SagaFleet(fleet)
        await sagas.seed({"WIDGET": 100_000}, {"rich": "1000000.00"})
        await asyncio.gather(*(sagas.start(service) for service in catalog.SERVICES))
        yield sagas
        for process in sagas.workers.values():
            assert await process.terminate() == 0


@pytest.mark.parametrize("style", ["orchestration", "choreography"])
async def test_real_orders_appear_in_the_view_as_they_ended(
    saga_fleet: SagaFleet, style: str
) -> None:
    fleet = saga_fleet.fleet
    confirmed = await saga_fleet.place("rich", ("WIDGET", 2, "9.90"), saga=style)
    rejected = await saga_fleet.place("rich", ("WIDGET", 3, "1.00"), country="XX", saga=style)
    for order_id in (confirmed, rejected):
        written = await saga_fleet.ended(order_id)

        async def projected(order_id: str = order_id) -> dict[str, Any] | None:
            row = await summary_row(fleet, order_id)
            return row if row is not None and row["status"] in ("CONFIRMED", "REJECTED") else None

        row = await wait_for(projected)
        assert row["status"] == written["status"]
        assert row["rejection_reason"] == written["reason"]
        assert row["saga"] == style and row["customer_id"] == "rich"
    await saga_fleet.quiet_and_verified()

    code, output = await fleet.cli("orders", "show", confirmed, "--json")
    assert code == 0, output
    shown = json.loads(output)
    assert shown["order"]["status"] == "CONFIRMED" and shown["order"]["total"] == "19.80 EUR"
    assert shown["order"]["item_count"] == 2
    assert shown["order"]["payment_id"] and shown["order"]["tracking_number"]
    assert shown["lag"]["messages_waiting"] == 0
    row = await summary_row(fleet, rejected)
    assert row is not None and (row["payment_id"], row["tracking_number"]) == (None, None)
