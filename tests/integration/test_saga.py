"""The order saga end to end, both styles, with every service in its own real process."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable

import pytest

from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.sagas import SagaFleet
from tests.integration.support import scalar, wait_for
from workers.operations.orders import order_status
from workers.orchestrator import domain
from workers.orchestrator.settings import OrchestratorSettings

pytestmark = pytest.mark.integration

RUNNING = ("inventory", "payment", "shipping", "order", "orchestrator")
# Short step deadlines, watched often, so that timeouts happen within a test.
ORCHESTRATOR = OrchestratorSettings(step_timeout_seconds=5.0, deadline_poll_seconds=0.3)
STYLES = ("orchestration", "choreography")


@pytest.fixture(scope="module")
async def sagas(server_urls: tuple[str, str]) -> AsyncIterator[SagaFleet]:
    settings = namespace_settings(server_urls, max_attempts=6)
    async with namespaced_fleet(settings, [ORCHESTRATOR]) as fleet:
        saga_fleet = SagaFleet(fleet)
        await saga_fleet.seed(
            {"WIDGET": 100_000, "RARE": 1}, {"rich": "1000000.00", "poor": "1.00"}
        )
        await asyncio.gather(*(saga_fleet.start(s) for s in (*RUNNING, "order_view")))
        yield saga_fleet
        for process in saga_fleet.workers.values():
            assert await process.terminate() == 0


@pytest.mark.parametrize("style", STYLES)
async def test_an_order_with_stock_money_and_a_reachable_country_is_confirmed(
    sagas: SagaFleet, style: str
) -> None:
    order_id = await sagas.place("rich", ("WIDGET", 2, "9.90"), saga=style)
    status = await sagas.ended(order_id)
    assert status["status"] == "CONFIRMED", status
    assert status["total"] == "19.80 EUR"
    await sagas.quiet_and_verified()


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    ("customer", "lines", "country", "reason"),
    [
        ("rich", [("WIDGET", 1, "5.00"), ("RARE", 5, "1.00")], "DE", "out of stock"),
        ("poor", [("WIDGET", 1, "5.00")], "DE", "insufficient funds"),
        ("rich", [("WIDGET", 3, "2.00")], "XX", "XX"),
    ],
    ids=["out-of-stock", "insufficient-funds", "blocked-country"],
)
async def test_a_refused_step_rejects_the_order_and_undoes_what_was_done(
    sagas: SagaFleet,
    style: str,
    customer: str,
    lines: list[tuple[str, int, str]],
    country: str,
    reason: str,
) -> None:
    order_id = await sagas.place(customer, *lines, country=country, saga=style)
    status = await sagas.ended(order_id)
    assert status["status"] == "REJECTED", status
    assert reason in str(status["reason"]), status
    await sagas.quiet_and_verified()  # stock released, payment refunded, nothing shipped


async def test_the_same_idempotency_key_placed_twice_makes_one_order(sagas: SagaFleet) -> None:
    key = f"client-key-{uuid.uuid4()}"
    first = await sagas.place("rich", ("WIDGET", 1, "1.00"), key=key)
    second = await sagas.place("rich", ("WIDGET", 1, "1.00"), key=key)
    assert first == second
    await sagas.ended(first)
    placed = "SELECT count(*) FROM events WHERE stream_id = :id AND type = 'order.placed'"
    assert await scalar(sagas.fleet.engine("order"), placed, id=first) == 1
    await sagas.quiet_and_verified()


async def test_a_step_deadline_compensates_and_a_late_reply_changes_nothing(
    sagas: SagaFleet,
) -> None:
    await sagas.kill("shipping")
    try:
        order_id = await sagas.place("rich", ("WIDGET", 4, "2.50"))
        status = await sagas.ended(order_id, timeout=30)
        assert status["status"] == "REJECTED"
        assert status["reason"] == "create_shipment timed out"
    finally:
        await sagas.start("shipping")
    # Shipping now finds the create and the cancel waiting; whatever it answers is late.
    await sagas.quiet_and_verified()
    after = await order_status(sagas.fleet.settings, order_id)
    assert after is not None and after["status"] == "REJECTED"
    entries = await scalar(
        sagas.fleet.engine("orchestrator"),
        "SELECT string_agg(entry, ' | ' ORDER BY id) FROM saga_log WHERE order_id = :id",
        id=order_id,
    )
    assert "create_shipment timed out" in entries
    assert "ignored" in entries  # the late reply, logged and acknowledged


@pytest.mark.parametrize("victim", RUNNING)
async def test_a_worker_killed_mid_run_and_restarted_leaves_every_order_ended(
    sagas: SagaFleet, victim: str
) -> None:
    ended = (
        "SELECT count(DISTINCT stream_id) FROM events"
        " WHERE type IN ('order.confirmed', 'order.rejected')"
    )
    engine = sagas.fleet.engine("order")
    ended_before: int = await scalar(engine, ended)
    placing = asyncio.gather(
        *(
            sagas.place(
                "rich" if n % 7 else "poor",
                ("WIDGET", 1 + n % 3, "3.00"),
                country="XX" if n % 11 == 0 else "DE",
                saga=STYLES[n % 2],
            )
            for n in range(100)
        )
    )

    async def under_way() -> bool:
        return bool(await scalar(engine, ended) > ended_before)

    # Killed once the first order of the run has ended, with the others still in flight.
    await wait_for(under_way, timeout=60, interval=0.05)
    await sagas.kill(victim)
    ended_at_kill = await scalar(engine, ended) - ended_before
    orders = await placing
    assert ended_at_kill < len(orders), "the victim was killed after the run, not mid-run"
    await asyncio.sleep(1.0)
    await sagas.start(victim)
    for order_id in orders:
        await sagas.ended(order_id, timeout=120)
    await sagas.quiet_and_verified(timeout=120)


async def test_a_deadline_still_fires_after_the_orchestrator_restarts(sagas: SagaFleet) -> None:
    await sagas.kill("shipping")
    try:
        order_id = await sagas.place("rich", ("WIDGET", 1, "7.00"))
        step = "SELECT step FROM sagas WHERE order_id = :id"
        engine = sagas.fleet.engine("orchestrator")
        await wait_for(lambda: _equals(scalar(engine, step, id=order_id), "create_shipment"))
        await sagas.kill("orchestrator")
        # The deadline passes while no orchestrator runs; it is a row, not a timer.
        await asyncio.sleep(ORCHESTRATOR.step_timeout_seconds + 1)
        assert (await order_status(sagas.fleet.settings, order_id) or {})["status"] == "PENDING"
        await sagas.start("orchestrator")
        status = await sagas.ended(order_id, timeout=30)
        assert status["status"] == "REJECTED" and status["reason"] == "create_shipment timed out"
    finally:
        if "shipping" not in sagas.workers:
            await sagas.start("shipping")
        if "orchestrator" not in sagas.workers:
            await sagas.start("orchestrator")
    await sagas.quiet_and_verified()


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_the_cli_places_orders_and_shows_where_they_and_their_sagas_stand(
    sagas: SagaFleet,
) -> None:
    fleet = sagas.fleet
    shown: dict[str, dict[str, object]] = {}
    for style in STYLES:
        code, output = await fleet.cli(
            "order",
            "place",
            "--customer",
            "rich",
            "--item",
            "WIDGET:2:3.10",
            "--item",
            "WIDGET:1:1.00",
            "--saga",
            style,
            "--wait",
            "60",
            "--json",
        )
        assert code == 0, output
        placed = json.loads(output[output.index("{") :])
        assert placed["order"]["status"] == "CONFIRMED" and placed["order"]["total"] == "7.20 EUR"
        code, output = await fleet.cli("order", "status", placed["order_id"], "--json")
        assert code == 0 and json.loads(output)["status"] == "CONFIRMED", output
        code, output = await fleet.cli("saga", "show", placed["order_id"], "--json")
        assert code == 0, output
        shown[style] = json.loads(output)
    orchestrated = shown["orchestration"]
    assert orchestrated["style"] == "orchestration" and orchestrated["status"] == "confirmed"
    assert orchestrated["completed"] == list(domain.ACTIONS)
    assert len(orchestrated["log"]) == 5  # type: ignore[arg-type]
    choreographed = shown["choreography"]
    assert choreographed["style"] == "choreography"
    seen = [event["type"] for event in choreographed["events"]]  # type: ignore[attr-defined]
    assert seen == [
        "order.placed",
        "stock.reserved",
        "payment.completed",
        "shipment.created",
        "order.confirmed",
    ]
    code, output = await fleet.cli("order", "status", str(uuid.uuid4()))
    assert code == 1 and output.startswith("fleet: no order") and len(output.splitlines()) == 1
    code, output = await fleet.cli("order", "place", "--customer", "rich", "--item", "WIDGET:x:1")
    assert code == 2 and "SKU:QTY:PRICE" in output and len(output.splitlines()) == 1
