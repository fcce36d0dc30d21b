"""``fleet up`` runs the whole fleet; ``fleet load`` and ``fleet verify`` drive and judge it."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.support import Fleet, FleetProcess, wait_for
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime import catalog

pytestmark = pytest.mark.integration

SERVICES = ("inventory", "payment", "shipping", "order", "orchestrator")


@pytest.fixture(scope="module")
async def up(server_urls: tuple[str, str]) -> AsyncIterator[tuple[Fleet, FleetProcess]]:
    settings = namespace_settings(server_urls, max_attempts=6, metrics_port=free_port_run(6))
    sections = [OrchestratorSettings(step_timeout_seconds=10.0)]
    async with namespaced_fleet(settings, sections) as fleet:
        process = await fleet.spawn("up")
        for service in SERVICES:
            await process.wait_for_line(f"{service} worker consuming", timeout=60)
        yield fleet, process
        assert await process.terminate(timeout=60) == 0
        for service in SERVICES:
            assert any(
                re.match(rf"{service}\s+\| stopped \(exit 0\)", line) for line in process.lines
            )


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now."""
    for base in range(20_000 + secrets.randbelow(20_000), 60_000, count):
        sockets = [socket.socket() for _ in range(count)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no run of free ports")


async def test_each_worker_serves_metrics_on_the_port_fleet_up_gave_it(
    up: tuple[Fleet, FleetProcess],
) -> None:
    fleet, process = up
    base = fleet.settings.metrics_port
    # fleet up starts every service, in the catalog's order, ports from the base upwards.
    for index, service in enumerate(catalog.SERVICES):
        port = base + index
        said = rf"{service}\s+\| started \(pid \d+\); metrics on http://127.0.0.1:{port}/metrics"
        assert any(re.match(said, line) for line in process.lines), process.lines[:20]
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert answer.status_code == 200
        assert f'fleet_relay_active{{service="{service}"}}' in answer.text


async def test_200_mixed_orders_through_fleet_up_all_end_and_verify_passes(
    up: tuple[Fleet, FleetProcess],
) -> None:
    fleet, _ = up
    code, output = await fleet.cli(
        "load",
        "--orders",
        "200",
        "--saga",
        "mixed",
        "--refusals",
        "0.2",
        "--timeout",
        "240",
        "--json",
    )
    assert code == 0, output
    result = json.loads(output[output.index("{") :])
    assert result["ended"] == 200
    assert result["unexpected_outcomes"] == 0
    assert result["rejected"] > 0 and result["confirmed"] > 0

    async def verified() -> bool:
        code, _ = await fleet.cli("verify")
        return code == 0

    await wait_for(verified, timeout=60, interval=1)
    code, output = await fleet.cli("verify", "--json")
    assert code == 0 and all(check["passed"] for check in json.loads(output))


async def test_fleet_up_restarts_a_worker_that_dies_and_says_so(
    up: tuple[Fleet, FleetProcess],
) -> None:
    _, process = up
    started = [
        line for line in process.lines if re.match(r"payment\s+\| started \(pid (\d+)\)", line)
    ]
    pid = int(re.findall(r"pid (\d+)", started[-1])[0])
    os.kill(pid, signal.SIGKILL)
    await process.wait_for_line("payment      | died (exit -9); restarting in 1s", timeout=20)
    await wait_for(lambda: _count(process, "payment worker consuming", 2), timeout=60)


async def _count(process: FleetProcess, text: str, n: int) -> bool:
    return process.count(text) >= n
