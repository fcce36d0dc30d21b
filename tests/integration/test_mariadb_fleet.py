"""The whole fleet with payment on MariaDB (``FLEET_ENGINES={"payment": "mariadb"}``), run
by ``fleet up``: both saga styles, refusals and compensations (a refund on MariaDB), ``fleet
load``, ``verify``, ``status``, the console, ``fleet dlq pending``, and ``fleet chaos`` whose
database fault kills payment's MariaDB connections (``KILL CONNECTION``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from contracts import ChargePayment, Envelope, OutgoingMessage
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.faults import needs_rabbitmqctl
from tests.integration.sagas import SagaFleet
from tests.integration.support import Fleet, FleetProcess, new_id, start_api, wait_for
from tests.integration.test_chaos import CHAOS_SETTINGS, failed, run_chaos
from workers.operations import dead_letters
from workers.orchestrator.settings import OrchestratorSettings
from workers.payment import public as payment
from workers.runtime import catalog

pytestmark = pytest.mark.integration

ENGINES = {"payment": "mariadb"}
STYLES = ("orchestration", "choreography")


class MixedFleet:
    def __init__(self, fleet: Fleet, sagas: SagaFleet, up: FleetProcess) -> None:
        self.fleet, self.sagas, self.up = fleet, sagas, up


@pytest.fixture(scope="module")
async def mixed(server_urls: tuple[str, str]) -> AsyncIterator[MixedFleet]:
    settings = namespace_settings(server_urls, engines=ENGINES, **CHAOS_SETTINGS)
    async with namespaced_fleet(settings, [OrchestratorSettings()]) as fleet:
        sagas = SagaFleet(fleet)
        await sagas.seed(
            {"WIDGET": 100_000, "RARE": 1, "LOAD-SKU": 1_000_000},
            {"rich": "1000000.00", "poor": "1.00"},
        )
        up = await fleet.spawn("up")
        for service in catalog.SERVICES:
            await up.wait_for_line(f"{service} worker consuming", timeout=90)
        yield MixedFleet(fleet, sagas, up)
        assert await up.terminate(timeout=60) == 0, "\n".join(up.lines[-30:])


async def test_payment_is_on_mariadb_and_the_others_on_postgresql(mixed: MixedFleet) -> None:
    fleet = mixed.fleet
    assert (await fleet.store("payment")).engine == "mariadb"
    assert (await fleet.store("order")).engine == "postgresql"


@pytest.mark.parametrize("style", STYLES)
async def test_an_order_is_confirmed_and_charged_on_mariadb(mixed: MixedFleet, style: str) -> None:
    order_id = await mixed.sagas.place("rich", ("WIDGET", 2, "9.90"), saga=style)
    status = await mixed.sagas.ended(order_id)
    assert status["status"] == "CONFIRMED", status
    charges = [e for e in await payment.ledger(mixed.fleet.settings) if e.order_id == order_id]
    assert [(e.kind, e.amount) for e in charges] == [("charge", Decimal("19.80"))]


@pytest.mark.parametrize("style", STYLES)
async def test_a_refusal_of_payment_on_mariadb_rejects_the_order(
    mixed: MixedFleet, style: str
) -> None:
    order_id = await mixed.sagas.place("poor", ("WIDGET", 1, "5.00"), saga=style)
    status = await mixed.sagas.ended(order_id)
    assert status["status"] == "REJECTED", status
    assert "insufficient funds" in str(status["reason"])


@pytest.mark.parametrize("style", STYLES)
async def test_a_failed_shipment_refunds_the_charge_on_mariadb(
    mixed: MixedFleet, style: str
) -> None:
    order_id = await mixed.sagas.place("rich", ("WIDGET", 3, "2.00"), country="XX", saga=style)
    status = await mixed.sagas.ended(order_id)
    assert status["status"] == "REJECTED", status

    async def refunded() -> list[tuple[str, Decimal]] | None:
        entries = [e for e in await payment.ledger(mixed.fleet.settings) if e.order_id == order_id]
        moved: list[tuple[str, Decimal]] = sorted((e.kind, e.amount) for e in entries)
        return moved if ("refund", Decimal("6.00")) in moved else None

    assert await wait_for(refunded, timeout=30) == [
        ("charge", Decimal("6.00")),
        ("refund", Decimal("6.00")),
    ]
    await mixed.sagas.quiet_and_verified()


async def test_fleet_load_and_verify(mixed: MixedFleet) -> None:
    fleet = mixed.fleet
    code, output = await fleet.cli(
        *("load", "--orders", "60", "--saga", "mixed", "--refusals", "0.2"),
        *("--timeout", "240", "--json"),
    )
    assert code == 0, output
    result = json.loads(output[output.index("{") :])
    assert result["ended"] == 60 and result["unexpected_outcomes"] == 0, result
    assert result["confirmed"] > 0 and result["rejected"] > 0

    async def verified() -> bool:
        code, _ = await fleet.cli("verify")
        return code == 0

    await wait_for(verified, timeout=60, interval=1)


async def test_status_reads_payments_outbox_and_relay_on_mariadb(mixed: MixedFleet) -> None:
    async def payment_status() -> dict[str, Any] | None:
        _, output = await mixed.fleet.cli("status", "--json")  # its exit says healthy or not
        services = json.loads(output[output.index("{") :])["services"]
        found: dict[str, Any] = next(s for s in services if s["service"] == "payment")
        return found if found["outbox"] and found["outbox"]["relay_active"] else None

    found = await wait_for(payment_status, timeout=30, interval=1)
    assert found["database"] == {"reachable": True, "error": None}
    assert found["outbox"]["unpublished"] == 0


async def test_the_console_shows_a_choreographed_saga_with_payments_events(
    mixed: MixedFleet,
) -> None:
    order_id = await mixed.sagas.place("rich", ("WIDGET", 1, "3.00"), saga="choreography")
    assert (await mixed.sagas.ended(order_id))["status"] == "CONFIRMED"
    api, url = await start_api(mixed.fleet)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            home = await http.get("/console")
            assert home.status_code == 200, home.text
            saga = await http.get(f"/console/sagas/{order_id}")
            assert saga.status_code == 200, saga.text
            assert "payment.completed" in saga.text  # read from payment's outbox on MariaDB
            assert (await http.get("/console/pending")).status_code == 200
    finally:
        assert await api.terminate() == 0, "\n".join(api.lines[-20:])


async def test_dlq_pending_settles_a_replay_of_a_payment_dead_letter(mixed: MixedFleet) -> None:
    fleet = mixed.fleet
    queue = f"{fleet.ns}.payment.charge_payment"
    dlq = f"{queue}.dlq"
    envelope = Envelope.new(ChargePayment.TYPE, ChargePayment.VERSION, "tests", new_id())
    async with fleet.publisher() as publisher:
        await publisher.publish_many(
            [OutgoingMessage.of(envelope, b"{not json", exchange="", routing_key=queue)]
        )

    async def dead() -> bool:
        depths = await dead_letters.depths(fleet.settings, [dlq])
        return depths[dlq] == 1

    await wait_for(dead, timeout=60)
    code, output = await fleet.cli("dlq", "replay", dlq, "--json")
    assert code == 0, output

    async def settled() -> dict[str, Any] | None:
        code, output = await fleet.cli("dlq", "pending", "--json")
        assert code == 0, output
        mine = [p for p in json.loads(output) if p["message_id"] == envelope.message_id]
        return mine[0] if mine and mine[0]["state"] != "pending" else None

    # Undecodable again: back in its DLQ, and pending (having asked payment's inbox on
    # MariaDB whether it was applied) says it failed.
    assert (await wait_for(settled, timeout=60, interval=1))["state"] == "failed"


@needs_rabbitmqctl
async def test_chaos_with_payments_mariadb_connections_killed_keeps_every_invariant(
    mixed: MixedFleet,
) -> None:
    fleet = mixed.fleet
    code, report, output = await run_chaos(
        fleet,
        *("--duration", "30", "--kill-every", "4", "--rate", "4"),
        *("--faults", "kill,connections,database", "--databases", "payment"),
    )
    assert code == 0, output
    database_faults = [f for f in report["faults"] if f["kind"] == "database" and f["injected"]]
    assert len(database_faults) >= 2, output
    assert all("payment's database" in f["target"] for f in database_faults), output
    assert report["orders"]["ended"] == report["orders"]["placed"], output
    assert report["invariants"] and not failed(report), output
