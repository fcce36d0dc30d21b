from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from functools import cache
from pathlib import Path

import pytest

from tests.integration.leftovers import broker_health, created_namespaces, leftovers
from tests.integration.support import Fleet
from workers.operations import namespace
from workers.runtime.settings import ServiceSettings, Settings

pytestmark = pytest.mark.integration


@cache
def secrets_directory() -> Path:
    """Where the run's namespaces keep their generated secrets: a directory of this run's
    own (0700, as mkdtemp makes it), never the real ~/.config; removed when the run ends."""
    return Path(tempfile.mkdtemp(prefix="fleet-test-secrets-"))


def secrets_file(namespace_name: str) -> Path:
    """The secrets file of a test namespace (FLEET_SECRETS_FILE of its processes)."""
    return secrets_directory() / f"{namespace_name}.secrets.json"


def namespace_settings(server_urls: tuple[str, str], **overrides: object) -> Settings:
    """The runtime's settings for a namespace of the test's own, its secrets kept in the
    run's own directory; a service's own knobs go in its section
    (``namespaced_fleet(settings, sections=...)``). A service on MariaDB:
    ``engines={"payment": "mariadb"}``, on the server of ``FLEET_MARIADB_ADMIN_URL`` (read
    from the environment as any setting) or the local default; ``mariadb_admin_url=`` too."""
    unknown = set(overrides) - set(Settings.model_fields)
    if unknown:  # Settings ignores unknown fields: a knob given here would be lost silently
        raise TypeError(f"not runtime settings (a service's section?): {sorted(unknown)}")
    amqp_url, pg_admin_url = server_urls
    name = str(overrides.get("namespace") or f"t{secrets.token_hex(4)}")
    # Short delays and limits so retries and dead-lettering happen within a test.
    values: dict[str, object] = {
        "amqp_url": amqp_url,
        "pg_admin_url": pg_admin_url,
        "namespace": name,
        "secrets_file": secrets_file(name),
        "retry_delays_ms": [300, 900],
        "max_attempts": 3,
        "delivery_limit": 5,
        "prefetch": 20,
        "relay_poll_interval": 0.5,
        "relay_lock_retry": 0.3,
        # No fixed /metrics ports: two fleets of tests (or a developer's) must not clash.
        "metrics_port": 0,
        **overrides,
    }
    settings = Settings(**values)  # type: ignore[arg-type]
    created_namespaces.append(settings)
    return settings


@contextlib.asynccontextmanager
async def namespaced_fleet(
    settings: Settings, sections: Sequence[ServiceSettings] = ()
) -> AsyncIterator[Fleet]:
    """Databases and topology of their own, torn down afterwards as `fleet teardown` does."""
    await namespace.set_up(settings)
    fleet = Fleet(settings, sections)
    try:
        yield fleet
    finally:
        await fleet.close()
        await namespace.tear_down(settings, extra_services=fleet.extra_services)


@pytest.fixture(scope="session", autouse=True)
async def no_namespace_left_behind(server_urls: tuple[str, str]) -> AsyncIterator[None]:
    """After every integration test: nothing of a namespace the run made is left on the
    broker or the database server, and the broker still declares a quorum queue, confirms
    a persistent message and delivers it (set up first, so it is torn down last)."""
    yield
    problems = []
    left = await leftovers(created_namespaces)
    if left:
        problems.append("test namespaces left behind:\n" + "\n".join(left))
    unhealthy = await broker_health(server_urls[0])
    if unhealthy:
        problems.append(f"the broker is not healthy after the tests: {unhealthy}")
    shutil.rmtree(secrets_directory(), ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def settings(server_urls: tuple[str, str]) -> Settings:
    return namespace_settings(server_urls)


@pytest.fixture(scope="session")
async def fleet(settings: Settings) -> AsyncIterator[Fleet]:
    """The session's namespace, shared by the tests of single services."""
    async with namespaced_fleet(settings) as fleet:
        yield fleet
