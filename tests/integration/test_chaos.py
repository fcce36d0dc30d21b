"""``fleet chaos`` against a real ``fleet up``: faults injected for real (workers SIGKILLed,
their broker connections closed by the broker, their database backends terminated, and a
private broker node's application restarted), then the invariants judged; and a fleet
whose books were cooked on purpose fails the run, naming what broke."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.faults import needs_rabbitmqctl
from tests.integration.rabbit_nodes import RABBITMQ_BIN, needs_rabbitmq_server, private_nodes
from tests.integration.support import Fleet, FleetProcess
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime import catalog

pytestmark = pytest.mark.integration

# Enough attempts that a message whose database was cut from under it twice still gets
# through (what exhausts them would be a finding of the run, not of the test).
CHAOS_SETTINGS: dict[str, Any] = {
    "max_attempts": 6,
    "delivery_limit": 10,
    "retry_delays_ms": [300, 900, 2000],
}


@pytest.fixture(scope="module")
async def up(server_urls: tuple[str, str]) -> AsyncIterator[tuple[Fleet, FleetProcess]]:
    settings = namespace_settings(server_urls, **CHAOS_SETTINGS)
    async with namespaced_fleet(settings, [OrchestratorSettings()]) as fleet:
        process = await _fleet_up(fleet)
        yield fleet, process
        assert await process.terminate(timeout=60) == 0


async def _fleet_up(fleet: Fleet, **env: Any) -> FleetProcess:
    process = await fleet.spawn("up", **env)
    for service in catalog.SERVICES:
        await process.wait_for_line(f"{service} worker consuming", timeout=90)
    return process


async def run_chaos(
    fleet: Fleet, *args: str, environment: dict[str, str] | None = None, timeout: float = 400
) -> tuple[int, dict[str, Any], str]:
    """``fleet chaos --json *args`` to its end: exit code, its report, everything it said."""
    handle = await fleet.spawn("chaos", "--json", *args, environment=environment)
    code = await asyncio.wait_for(handle.process.wait(), timeout)
    assert handle.reader is not None
    await handle.reader
    output = "\n".join(handle.lines)
    start = max(i for i, line in enumerate(handle.lines) if line == "{")
    return code, json.loads("\n".join(handle.lines[start:])), output


async def _add_to_stock(fleet: Fleet, units: int) -> None:
    async with fleet.engine("inventory").begin() as conn:
        await conn.execute(
            sa.text("UPDATE stock SET available = available + :units WHERE sku = 'LOAD-SKU'"),
            {"units": units},
        )


def failed(report: dict[str, Any]) -> list[str]:
    return [check["invariant"] for check in report["invariants"] if not check["passed"]]


@needs_rabbitmqctl
async def test_every_kind_of_fault_twice_and_every_invariant_holds(
    up: tuple[Fleet, FleetProcess],
) -> None:
    fleet, supervisor = up
    code, report, output = await run_chaos(
        fleet,
        *("--duration", "40", "--kill-every", "5", "--rate", "4"),
        *("--faults", "kill,connections,database"),
    )
    assert code == 0, output
    injected = report["faults_injected"]
    assert all(injected.get(kind, 0) >= 2 for kind in ("kill", "connections", "database")), output
    orders = report["orders"]
    assert orders["placed"] >= 100 and orders["ended"] == orders["placed"], output
    assert orders["confirmed"] > 0 and orders["rejected"] > 0
    assert report["invariants"] and not failed(report), output
    # The kills were real: fleet up saw its workers die (SIGKILL) and restarted them.
    assert supervisor.count("died (exit -9)") >= injected["kill"]
    code, verified = await fleet.cli("verify")
    assert code == 0, verified


async def test_a_broken_invariant_fails_the_run_and_is_named(
    up: tuple[Fleet, FleetProcess],
) -> None:
    fleet, _ = up
    # Seven units appear from nowhere: available + held no longer adds up to what was seeded.
    await _add_to_stock(fleet, 7)
    try:
        code, report, output = await run_chaos(
            fleet, "--duration", "6", "--kill-every", "3", "--rate", "2", "--faults", "database"
        )
    finally:
        await _add_to_stock(fleet, -7)
    assert code == 1, output
    assert report["passed"] is False
    broken = failed(report)
    assert len(broken) == 1 and broken[0].startswith("stock"), broken
    stock = next(check for check in report["invariants"] if check["invariant"] == broken[0])
    assert any("LOAD-SKU" in problem for problem in stock["problems"])
    # The orders themselves were fine: placed, all ended.
    assert report["orders"]["ended"] == report["orders"]["placed"] > 0


async def test_chaos_refuses_a_namespace_with_no_fleet_up(up: tuple[Fleet, FleetProcess]) -> None:
    fleet, _ = up
    code, output = await fleet.cli("chaos", "--duration", "1", namespace="nofleetup")
    assert code == 1 and "no 'fleet up' worker of namespace 'nofleetup'" in output
    code, output = await fleet.cli("chaos", "--faults", "kill,flood")
    assert code == 2 and "unknown fault(s) flood" in output


@pytest.mark.faults
@needs_rabbitmq_server
async def test_broker_restarts_of_a_private_node_under_orders(
    server_urls: tuple[str, str], tmp_path: Path
) -> None:
    """The broker fault, aimed at a private node of the test's own (never the shared one)."""
    async with private_nodes(tmp_path) as nodes:
        node = await nodes.start("chaos")
        settings = namespace_settings((node.amqp_url, server_urls[1]), **CHAOS_SETTINGS)
        # rabbitmqctl reaches the private node with its cookie (HOME) and files.
        ctl_environment = {
            key: value
            for key, value in node._environment().items()
            if key == "HOME" or key.startswith(("RABBITMQ_", "ERL_"))
        }
        async with namespaced_fleet(settings, [OrchestratorSettings()]) as fleet:
            supervisor = await _fleet_up(fleet)
            code, report, output = await run_chaos(
                fleet,
                *("--duration", "30", "--kill-every", "7", "--rate", "3"),
                *("--faults", "broker,kill", "--rabbitmq-node", node.node),
                *("--rabbitmqctl", str(RABBITMQ_BIN / "rabbitmqctl")),
                environment=ctl_environment,
            )
            assert await supervisor.terminate(timeout=60) == 0
        assert code == 0, output
        assert report["faults_injected"].get("broker", 0) >= 2, output
        assert report["orders"]["ended"] == report["orders"]["placed"] > 0
        assert not failed(report), output
        # Its own publishing rode out the restarts.
        assert report["reconnects"]["broker"] >= 1, output
