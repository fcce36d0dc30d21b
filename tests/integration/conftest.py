from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from cli.db import service_databases
from db.provision import drop, provision
from tests.integration.support import Fleet
from workers import services
from workers.runtime import declare_topology
from workers.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def settings(server_urls: tuple[str, str]) -> Settings:
    amqp_url, pg_admin_url = server_urls
    # Short delays and limits so retries and dead-lettering happen within a test.
    return Settings(
        amqp_url=amqp_url,
        pg_admin_url=pg_admin_url,
        namespace=f"t{secrets.token_hex(4)}",
        retry_delays_ms=[300, 900],
        max_attempts=3,
        delivery_limit=5,
        prefetch=20,
        relay_poll_interval=0.5,
        relay_lock_retry=0.3,
    )


@pytest.fixture(scope="session")
async def fleet(settings: Settings) -> AsyncIterator[Fleet]:
    """This test session's own databases and topology, removed afterwards."""
    databases = service_databases(settings)
    await provision(settings.pg_admin_url, databases)
    all_services = services.load_all()
    await declare_topology(settings, all_services)
    fleet = Fleet(settings)
    try:
        yield fleet
    finally:
        await fleet.close()
        await fleet.remove_topology(all_services)
        await drop(settings.pg_admin_url, databases)
