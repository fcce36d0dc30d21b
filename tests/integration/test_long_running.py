"""Long-running commands ride out lost connections as the workers do: ``fleet load``,
``fleet view rebuild`` and ``fleet status --watch`` run as processes while the test
terminates their own database backends (``pg_terminate_backend``, only the backends whose
client port is one of the command's sockets) and cuts their broker connection (a TCP proxy
of the test's own between the command and the broker). Each finishes with exit 0 and says
how often it reconnected. The shared servers are never restarted.

To keep a command waiting (and reading) while the test strikes, a service it waits for is
not started until the strikes are done: payment for ``load``, the view for ``rebuild``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from db.engine import asyncpg_url
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.support import Fleet, FleetProcess, wait_for
from tests.integration.tcp_proxy import TcpProxy
from workers.operations.chaos import client_ports
from workers.orchestrator.settings import OrchestratorSettings

pytestmark = pytest.mark.integration

# Everything but payment and the view: orders wait at the payment step, a rebuild for the view.
WITHOUT_PAYMENT_AND_VIEW = "inventory,shipping,order,orchestrator"
STRIKES = 3


@pytest.fixture(scope="module")
async def fleet(server_urls: tuple[str, str]) -> AsyncIterator[Fleet]:
    settings = namespace_settings(server_urls, max_attempts=6)
    # No saga may time out while payment is away: the orders must all confirm.
    async with namespaced_fleet(
        settings, [OrchestratorSettings(step_timeout_seconds=600)]
    ) as fleet:
        up = await fleet.spawn("up", "--services", WITHOUT_PAYMENT_AND_VIEW)
        for service in WITHOUT_PAYMENT_AND_VIEW.split(","):
            await up.wait_for_line(f"{service} worker consuming", timeout=90)
        yield fleet
        assert await up.terminate(timeout=60) == 0


async def strike_database(fleet: Fleet, process: FleetProcess, service: str) -> int:
    """Terminate ``process``'s backends on ``service``'s database as they appear, STRIKES
    times (it opens one per read); how many backends were terminated."""
    admin = await asyncpg.connect(asyncpg_url(fleet.settings.pg_admin_url))
    terminated = 0
    try:
        while terminated < STRIKES:
            assert process.process.returncode is None, "\n".join(process.lines[-20:])
            ports = list(client_ports(process.process.pid))
            terminated += await admin.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND client_port = ANY($2::int[])",
                fleet.settings.database_name(service),
                ports,
            )
            await asyncio.sleep(0.01)
    finally:
        await admin.close()
    return terminated


async def finish(process: FleetProcess, timeout: float = 120) -> tuple[int, dict[str, Any]]:
    code = await asyncio.wait_for(process.process.wait(), timeout)
    assert process.reader is not None
    await process.reader
    starts = [i for i, line in enumerate(process.lines) if line == "{"]
    assert starts, f"exit {code}, no report:\n" + "\n".join(process.lines[-30:])
    start = starts[-1]
    return code, json.loads("\n".join(process.lines[start:]))


async def test_fleet_load_rides_out_lost_database_and_broker_connections(fleet: Fleet) -> None:
    broker = fleet.settings.amqp_url.split("@")[-1].split("/")[0].split(":")
    proxy = TcpProxy(broker[0], int(broker[1]) if len(broker) > 1 else 5672)
    await proxy.start()
    payment: FleetProcess | None = None
    try:
        # Held from the start: the load's first broker connection hangs in its handshake...
        proxy.pause(to_client=True, to_server=False)
        load = await fleet.spawn(
            *("load", "--orders", "60", "--saga", "mixed", "--timeout", "240", "--json"),
            amqp_url=proxy.url_for(fleet.settings.amqp_url),
        )
        await wait_for(lambda: _live(proxy), timeout=60)
        # ... and is cut there; the load connects again and places its orders.
        assert proxy.cut() == 1
        proxy.resume()
        await load.wait_for_line("RabbitMQ: connection lost", timeout=30)
        # Now it waits for orders that cannot end (no payment) and reads the order database
        # again and again: its connections are terminated under it.
        assert await strike_database(fleet, load, "order") >= STRIKES
        await load.wait_for_line("order database: connection lost", timeout=30)
        payment = await fleet.spawn("worker", "payment")
        code, report = await finish(load, timeout=240)
    finally:
        await proxy.close()
        if payment is not None:
            await payment.terminate(timeout=60)
    assert code == 0, "\n".join(load.lines[-30:])
    assert report["ended"] == report["orders"] == 60
    assert report["confirmed"] == 60 and report["unexpected_outcomes"] == 0
    assert report["reconnects"]["broker"] >= 1
    assert report["reconnects"]["database"] >= 1
    # Nothing applied twice (the orders of the lost connection were placed once): verify's
    # checks of the orders, stock, money and shipments pass (the view is not running yet,
    # so its queue is not drained: the message check waits for the rebuild test).
    _, output = await fleet.cli("verify", "--json")
    checks = json.loads(output[output.index("[") :])
    assert [c["invariant"] for c in checks if not c["passed"]] == [
        "every message published was consumed or sits in a DLQ"
    ], output


async def test_view_rebuild_rides_out_lost_database_connections(fleet: Fleet) -> None:
    rebuild = await fleet.spawn("view", "rebuild", "--timeout", "180", "--json")
    await rebuild.wait_for_line("nothing consumes", timeout=60)  # the view is not running
    view: FleetProcess | None = None
    try:
        assert await strike_database(fleet, rebuild, "order_view") >= STRIKES
        await rebuild.wait_for_line("view: connection lost", timeout=30)
        view = await fleet.spawn("worker", "order_view")
        code, report = await finish(rebuild, timeout=180)
    finally:
        if view is not None:
            await view.terminate(timeout=60)
    assert code == 0, "\n".join(rebuild.lines[-30:])
    assert report["reconnects"]["database"] >= 1
    assert report["orders"] >= 60  # every order of the load above, rebuilt from its events

    async def verified() -> bool:
        return (await fleet.cli("verify"))[0] == 0

    await wait_for(verified, timeout=90, interval=1)  # now the view has drained its queue too


async def test_status_watch_keeps_drawing_while_its_connections_are_terminated(
    fleet: Fleet,
) -> None:
    status = await fleet.spawn("status", "--watch", "--interval", "0.3", "--json")
    await status.wait_for_line('"services"', timeout=60)
    assert await strike_database(fleet, status, "inventory") >= STRIKES
    screens = len(status.lines)
    await wait_for(lambda: _more_lines(status, screens + 3), timeout=60)
    assert status.process.returncode is None, "\n".join(status.lines[-10:])
    status.process.send_signal(2)  # Ctrl-C
    await asyncio.wait_for(status.process.wait(), 30)


async def _live(proxy: TcpProxy) -> bool:
    return proxy.live > 0


async def _more_lines(process: FleetProcess, count: int) -> bool:
    return len(process.lines) >= count
