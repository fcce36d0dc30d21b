"""Long-running commands ride out a server restart as the workers do: ``fleet load``,
``fleet view rebuild`` and ``fleet status --watch`` run as processes while the test
restarts the namespace's PostgreSQL (a private server of the test's own, stopped with
``-m immediate`` and kept down for a while, STRIKES times) and cuts their broker connection
(a TCP proxy of the test's own between the command and the broker). Each finishes with exit
0 and says how often it reconnected. The shared servers are never restarted.

To keep a command waiting (and reading) while the test strikes, a service it waits for is
not started until the strikes are done: payment for ``load``, the view for ``rebuild``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.pg_server import PrivateServer, needs_postgresql_binaries
from tests.integration.support import Fleet, FleetProcess, scalar, wait_for
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.under_fire import forget_namespace
from workers.orchestrator.settings import OrchestratorSettings

pytestmark = [pytest.mark.integration, pytest.mark.faults, needs_postgresql_binaries]

# Everything but payment and the view: orders wait at the payment step, a rebuild for the view.
WITHOUT_PAYMENT_AND_VIEW = "inventory,shipping,order,orchestrator"
STRIKES = 3  # restarts of PostgreSQL per command
DOWN_FOR = 1.5  # seconds PostgreSQL stays down each time: every command reads 4 times a second


@pytest.fixture(scope="module")
async def database() -> AsyncIterator[PrivateServer]:
    async with PrivateServer() as server:
        yield server


@pytest.fixture(scope="module")
async def fleet(server_urls: tuple[str, str], database: PrivateServer) -> AsyncIterator[Fleet]:
    amqp_url, _ = server_urls
    settings = namespace_settings((amqp_url, database.admin_url), max_attempts=8)
    try:
        # No saga may time out while payment is away: the orders must all confirm.
        async with namespaced_fleet(
            settings, [OrchestratorSettings(step_timeout_seconds=600)]
        ) as fleet:
            up = await fleet.spawn("up", "--services", WITHOUT_PAYMENT_AND_VIEW)
            for service in WITHOUT_PAYMENT_AND_VIEW.split(","):
                await up.wait_for_line(f"{service} worker consuming", timeout=90)
            yield fleet
            assert await up.terminate(timeout=60) == 0
    finally:
        await forget_namespace(settings)  # checked here: the server goes with the module


async def restarts(database: PrivateServer, process: FleetProcess) -> None:
    """PostgreSQL restarted STRIKES times under ``process``, which must keep running."""
    for _ in range(STRIKES):
        assert process.process.returncode is None, "\n".join(process.lines[-20:])
        await database.restart("immediate", down_for=DOWN_FOR)
        await asyncio.sleep(1.0)  # it reads again, on the server that is back
    assert process.process.returncode is None, "\n".join(process.lines[-20:])


async def finish(process: FleetProcess, timeout: float = 120) -> tuple[int, dict[str, Any]]:
    code = await asyncio.wait_for(process.process.wait(), timeout)
    assert process.reader is not None
    await process.reader
    starts = [i for i, line in enumerate(process.lines) if line == "{"]
    assert starts, f"exit {code}, no report:\n" + "\n".join(process.lines[-30:])
    start = starts[-1]
    return code, json.loads("\n".join(process.lines[start:]))


async def test_fleet_load_rides_out_a_database_restart_and_a_lost_broker_connection(
    fleet: Fleet, database: PrivateServer
) -> None:
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
        # again and again: the server restarts under it.
        await wait_for(lambda: _all_placed(fleet, 60), timeout=90, interval=0.5)
        await restarts(database, load)
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


async def test_view_rebuild_rides_out_a_database_restart(
    fleet: Fleet, database: PrivateServer
) -> None:
    rebuild = await fleet.spawn("view", "rebuild", "--timeout", "180", "--json")
    await rebuild.wait_for_line("nothing consumes", timeout=60)  # the view is not running
    view: FleetProcess | None = None
    try:
        await restarts(database, rebuild)
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


async def test_status_watch_keeps_drawing_through_a_database_restart(
    fleet: Fleet, database: PrivateServer
) -> None:
    status = await fleet.spawn("status", "--watch", "--interval", "0.3", "--json")
    await status.wait_for_line('"services"', timeout=60)
    await restarts(database, status)
    screens = len(status.lines)
    await wait_for(lambda: _more_lines(status, screens + 3), timeout=60)
    assert status.process.returncode is None, "\n".join(status.lines[-10:])
    status.process.send_signal(2)  # Ctrl-C
    await asyncio.wait_for(status.process.wait(), 30)


async def _live(proxy: TcpProxy) -> bool:
    return proxy.live > 0


async def _more_lines(process: FleetProcess, count: int) -> bool:
    return len(process.lines) >= count


async def _all_placed(fleet: Fleet, count: int) -> bool:
    placed = "SELECT count(*) FROM events WHERE type = 'order.placed'"
    return bool(await scalar(fleet.engine("order"), placed) >= count)
