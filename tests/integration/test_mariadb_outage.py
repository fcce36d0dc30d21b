"""Payment's MariaDB down for far longer than every retry delay together, while orders of
both saga styles keep coming: payment's breaker stops its consuming and resumes it after, no
message is dead-lettered, every order ends and the audit log has the trip and the resume,
as with a service on PostgreSQL (``test_outages``). The server that goes down is a private
MariaDB the test starts itself (``mariadb_server``); payment alone has its database there."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.mariadb_server import PrivateMariaDB, needs_mariadb_binaries
from tests.integration.support import wait_for
from tests.integration.test_outages import (
    BREAKER,
    OUTAGE,
    STEP_TIMEOUT,
    breaker_history,
    consumers,
    order_stream,
    tripped,
)
from tests.integration.under_fire import (
    FAULT_TOLERANT,
    every_order_ended,
    forget_namespace,
    nothing_lost,
    running_workers,
    seed,
)
from workers.orchestrator.settings import OrchestratorSettings

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@needs_mariadb_binaries
async def test_payments_mariadb_down_for_minutes_makes_no_dead_letter(
    server_urls: tuple[str, str],
) -> None:
    async with PrivateMariaDB() as server:
        settings = namespace_settings(
            server_urls,
            engines={"payment": "mariadb"},
            mariadb_admin_url=server.admin_url,
            **FAULT_TOLERANT,
            **BREAKER,
        )
        charge = f"{settings.namespace}.payment.charge_payment"
        try:
            sections = [OrchestratorSettings(step_timeout_seconds=STEP_TIMEOUT)]
            async with namespaced_fleet(settings, sections) as fleet:
                await seed(settings)
                async with running_workers(fleet) as workers:
                    payment = workers["payment"]
                    async with order_stream(settings) as stream:
                        await stream.wait_placed(20)
                        outage = asyncio.create_task(server.restart(down_for=OUTAGE))
                        await payment.wait_for_line("database unreachable since", timeout=OUTAGE)

                        async def marked() -> bool:
                            return "payment" in await tripped(settings)

                        await wait_for(marked, timeout=10)
                        assert await consumers(settings, charge) == 0
                        await outage
                        await payment.wait_for_line("resumed at full speed", timeout=120)
                        assert await consumers(settings, charge) == 1
                        await stream.wait_placed(len(stream.placed) + 20)
                    await every_order_ended(settings, stream.placed, timeout=240)
                    await nothing_lost(settings)
                assert payment.count("database unreachable since") == 1, payment.lines[-40:]
                history = await breaker_history(settings)
                assert history == [
                    ("fleet", "breaker.trip", "payment"),
                    ("fleet", "breaker.resume", "payment"),
                ], history
                print(
                    f"payment's MariaDB down {OUTAGE:.0f} s: {len(stream.placed)} orders,"
                    " no dead letter"
                )
        finally:
            await forget_namespace(settings)
