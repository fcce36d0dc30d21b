from __future__ import annotations

import contextlib
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


def namespace_settings(server_urls: tuple[str, str], **overrides: object) -> Settings:
    amqp_url, pg_admin_url = server_urls
    # Short delays and limits so retries and dead-lettering happen within a test.
    values: dict[str, object] = {
        "amqp_url": amqp_url,
        "pg_admin_url": pg_admin_url,
        "namespace": f"t{secrets.token_hex(4)}",
        "retry_delays_ms": [300, 900],
        "max_attempts": 3,
        "delivery_limit": 5,
        "prefetch": 20,
        "relay_poll_interval": 0.5,
        "relay_lock_retry": 0.3,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def namespaced_fleet(settings: Settings) -> AsyncIterator[Fleet]:
    """Databases and topology of their own, removed afterwards."""
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


@pytest.fixture(scope="session")
def settings(server_urls: tuple[str, str]) -> Settings:
    return namespace_settings(server_urls)


@pytest.fixture(scope="session")
async def fleet(settings: Settings) -> AsyncIterator[Fleet]:
    """The session's namespace, shared by the tests of single services."""
    async with namespaced_fleet(settings) as fleet:
        yield fleet
