"""`fleet view rebuild` on the real servers: the order service replays its event store to the
view, which then equals, row for row, the view built live from every service's events.

Every service runs as its own process; 300 orders of both saga styles (a fifth of them
refused in each way) go through the whole saga. Replays are paged small here so that a
replay is many pages (many transactions, many continuation commands).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from contracts import (
    Envelope,
    OrderConfirmedV1,
    OrderLineV1,
    OrderPlacedV1,
    OutgoingMessage,
    encode_message,
)
from contracts.envelope import STREAM_VERSION_HEADER
from db import event_store
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.sagas import SagaFleet
from tests.integration.support import Fleet, scalar, wait_for
from workers.orchestrator.settings import OrchestratorSettings
from workers.order.settings import OrderSettings
from workers.order_view import store as view_store
from workers.runtime import catalog

pytestmark = pytest.mark.integration

ORDERS = 300
PAGE_SIZE = 40
OLD_PLACED_AT = datetime(2023, 3, 1, 9, 30, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def saga_fleet(server_urls: tuple[str, str]) -> AsyncIterator[SagaFleet]:
    settings = namespace_settings(server_urls, max_attempts=6)
    sections = [
        OrchestratorSettings(step_timeout_seconds=10.0),
        OrderSettings(replay_page_size=PAGE_SIZE),
    ]
    async with namespaced_fleet(settings, sections) as fleet:
        sagas = SagaFleet(fleet)
        await asyncio.gather(*(sagas.start(service) for service in catalog.SERVICES))
        yield sagas
        for process in sagas.workers.values():
            assert await process.terminate() == 0


async def view_rows(fleet: Fleet) -> list[dict[str, Any]]:
    async with fleet.engine("order_view").connect() as conn:
        rows = await conn.execute(
            sa.select(view_store.order_summaries).order_by(view_store.order_summaries.c.order_id)
        )
        return [row._asdict() for row in rows]


async def view_caught_up(fleet: Fleet) -> bool:
    view = catalog.load("order_view")
    for spec in view.queue_specs(fleet.ns):
        if not await fleet.queue_empty(spec.name):
            return False
    pending = await scalar(
        fleet.engine("order_view"),
        "SELECT count(*) FROM order_summaries WHERE status IS DISTINCT FROM 'CONFIRMED'"
        " AND status IS DISTINCT FROM 'REJECTED'",
    )
    return int(pending) == 0


async def store_size(fleet: Fleet) -> int:
    return int(await scalar(fleet.engine("order"), "SELECT count(*) FROM events"))


async def an_order_from_before_v2(fleet: Fleet) -> str:
    """An order whose stream holds order.placed v1 and order.confirmed v1 (JSON-number prices,
    no references), as an old order service stored and sent them: in the order's store, and
    through the view's live queue."""
    order_id = str(uuid.uuid4())
    placed_at = OLD_PLACED_AT
    confirmed_at = datetime(2023, 3, 1, 9, 30, 5, tzinfo=UTC)
    history = [
        (
            OrderPlacedV1(
                order_id=order_id,
                customer_id="old-customer",
                items=[OrderLineV1(sku="OLD-SKU", quantity=3, unit_price=4.1)],
                total=12.3,
                country="DE",
            ),
            placed_at,
        ),
        (OrderConfirmedV1(order_id=order_id), confirmed_at),
    ]
    envelopes = [
        Envelope(
            message_id=str(uuid.uuid4()),
            type=message.TYPE,
            version=message.VERSION,
            correlation_id=order_id,
            causation_id=None,
            occurred_at=at,
            producer="order",
        )
        for message, at in history
    ]
    async with fleet.transaction("order") as conn:
        await event_store.append(
            conn,
            order_id,
            0,
            [message for message, _ in history],
            [
                {
                    "message_id": envelope.message_id,
                    "correlation_id": order_id,
                    "occurred_at": envelope.occurred_at.isoformat(),
                }
                for envelope in envelopes
            ],
        )
    async with fleet.publisher() as publisher:
        for version, ((message, _), envelope) in enumerate(
            zip(history, envelopes, strict=True), start=1
        ):
            await publisher.publish(
                OutgoingMessage.of(
                    envelope,
                    exchange="",
                    routing_key=f"{fleet.ns}.order_view.project",
                    body=encode_message(message),
                    headers={STREAM_VERSION_HEADER: version},
                )
            )
    return order_id


@pytest.fixture(scope="module")
async def live_view(saga_fleet: SagaFleet) -> list[dict[str, Any]]:
    """The view as built live after 300 orders (and one from before v2), at a quiet point."""
    fleet = saga_fleet.fleet
    load = await fleet.spawn(
        "load", "--orders", str(ORDERS), "--saga", "mixed", "--refusals", "0.2", "--json"
    )
    assert await asyncio.wait_for(load.process.wait(), 300) == 0, "\n".join(load.lines)
    assert load.reader is not None
    await load.reader
    report = json.loads("\n".join(load.lines[load.lines.index("{") :]))
    assert report["ended"] == ORDERS and report["unexpected_outcomes"] == 0, report
    await saga_fleet.quiet_and_verified()
    # Only in the order's stream and the view (the other services never saw it), so after
    # the invariants are checked.
    old_order = await an_order_from_before_v2(fleet)
    await wait_for(lambda: view_caught_up(fleet), timeout=120, interval=0.5)
    rows = await view_rows(fleet)
    assert len(rows) == ORDERS + 1
    statuses = {row["status"] for row in rows}
    sagas = {row["saga"] for row in rows}
    assert statuses == {"CONFIRMED", "REJECTED"} and sagas == {"orchestration", "choreography"}
    confirmed = [
        row for row in rows if row["status"] == "CONFIRMED" and row["order_id"] != old_order
    ]
    assert all(row["payment_id"] and row["tracking_number"] for row in confirmed)
    old = next(row for row in rows if row["order_id"] == old_order)
    # Upcast on the way in: v1's JSON-number prices become EUR decimals.
    assert (old["total_amount"], old["currency"], old["item_count"]) == (Decimal("12.30"), "EUR", 3)
    assert (old["status"], old["created_at"], old["payment_id"]) == (
        "CONFIRMED",
        OLD_PLACED_AT,
        None,
    )
    return rows


async def rebuild(fleet: Fleet, timeout: float = 300) -> dict[str, Any]:
    handle = await fleet.spawn("view", "rebuild", "--json", "--timeout", str(timeout))
    code = await asyncio.wait_for(handle.process.wait(), timeout + 30)
    assert handle.reader is not None
    await handle.reader
    assert code == 0, "\n".join(handle.lines)
    result: dict[str, Any] = json.loads("\n".join(handle.lines[handle.lines.index("{") :]))
    return result


async def damage(fleet: Fleet) -> None:
    """What a rebuild must repair: rows lost, rows wrong, a row that should not be there."""
    async with fleet.engine("order_view").begin() as conn:
        await conn.execute(
            sa.text(
                "DELETE FROM order_summaries WHERE order_id IN"
                " (SELECT order_id FROM order_summaries ORDER BY order_id LIMIT 10)"
            )
        )
        await conn.execute(
            sa.text(
                "UPDATE order_summaries SET status = 'PENDING', payment_id = NULL WHERE order_id"
                " IN (SELECT order_id FROM order_summaries ORDER BY order_id DESC LIMIT 5)"
            )
        )
        await conn.execute(
            sa.insert(view_store.order_summaries).values(
                order_id=str(uuid.uuid4()), status="CONFIRMED", last_version=2
            )
        )


async def test_rebuild_after_300_orders_equals_the_live_view_row_for_row(
    saga_fleet: SagaFleet, live_view: list[dict[str, Any]]
) -> None:
    fleet = saga_fleet.fleet
    await damage(fleet)
    assert await view_rows(fleet) != live_view

    result = await rebuild(fleet)

    events = await store_size(fleet)
    assert events == 2 * (ORDERS + 1)  # placed, then confirmed or rejected
    assert (result["events"], result["orders"]) == (events, ORDERS + 1)
    assert await view_rows(fleet) == live_view
    async with fleet.connection("order_view") as conn:
        status = await view_store.rebuild_status(conn, result["rebuild_id"])
    assert status is not None and status.finished_at is not None
    assert (status.expected_events, status.applied_events, status.sent_events) == (
        events,
        events,
        events,
    )


async def test_a_rebuild_survives_the_view_being_killed_mid_replay(
    saga_fleet: SagaFleet, live_view: list[dict[str, Any]]
) -> None:
    fleet = saga_fleet.fleet
    handle = await fleet.spawn("view", "rebuild", "--json", "--timeout", "300")

    async def under_way() -> bool:
        applied = await scalar(
            fleet.engine("order_view"),
            "SELECT coalesce(max(applied_events), 0) FROM rebuilds WHERE finished_at IS NULL",
        )
        return 0 < int(applied) < await store_size(fleet) // 2

    await wait_for(under_way, timeout=60, interval=0.05)
    await saga_fleet.kill("order_view")  # SIGKILL, with replayed events unacked
    await saga_fleet.start("order_view")

    code = await asyncio.wait_for(handle.process.wait(), 330)
    assert handle.reader is not None
    await handle.reader
    assert code == 0, "\n".join(handle.lines)
    result = json.loads("\n".join(handle.lines[handle.lines.index("{") :]))
    assert result["events"] == await store_size(fleet)
    assert await view_rows(fleet) == live_view


async def test_rebuild_without_an_order_worker_warns_and_times_out_with_one_line(
    saga_fleet: SagaFleet, live_view: list[dict[str, Any]]
) -> None:
    fleet = saga_fleet.fleet
    await saga_fleet.kill("order")
    try:
        code, output = await fleet.cli("view", "rebuild", "--timeout", "2")
        assert code == 1
        assert f"nothing consumes {fleet.ns}.order.replay_events yet" in output
        assert "not finished after 2 s: 0 of ? events applied" in output
        assert "Traceback" not in output
    finally:
        await saga_fleet.start("order")
    # The replay was only waiting: the order service takes it up when it is back.
    await wait_for(
        lambda: scalar(
            fleet.engine("order_view"),
            "SELECT count(*) = 0 FROM rebuilds WHERE finished_at IS NULL",
        ),
        timeout=120,
        interval=0.5,
    )
    assert await view_rows(fleet) == live_view
