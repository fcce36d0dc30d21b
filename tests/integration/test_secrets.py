"""One secret per role, on a PostgreSQL server that asks for passwords (scram-sha-256 for
every role but the admin, tests/integration/pg_server.py): after ``fleet db init`` every
role of the namespace logs in with its own secret and is refused with any other role's; a
second ``db init`` keeps the secrets and repairs a role whose password drifted; a worker
given its own role's secret alone runs."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from db.engine import asyncpg_url
from tests.integration.conftest import namespace_settings
from tests.integration.pg_server import PrivateServer, needs_postgresql_binaries
from tests.integration.support import Fleet
from tests.integration.under_fire import forget_namespace
from workers.operations import namespace
from workers.runtime.settings import Settings

pytestmark = [pytest.mark.integration, needs_postgresql_binaries]

GIVEN = "operator-given-secret-of-payment"  # FLEET_DB_SECRETS: the one role not generated


@pytest.fixture(scope="module")
async def fleet(server_urls: tuple[str, str]) -> AsyncIterator[Fleet]:
    """A namespace on a private server with password authentication, not yet initialised;
    removed afterwards (databases, roles, queues, its secrets file), then the server."""
    amqp_url, _ = server_urls
    async with PrivateServer(password_auth=True) as server:
        settings = namespace_settings((amqp_url, server.admin_url), db_secrets={"payment": GIVEN})
        fleet = Fleet(settings)
        try:
            yield fleet
        finally:
            await fleet.close()
            await namespace.tear_down(settings)
            await forget_namespace(settings)  # checked while the private server runs


def role_urls(settings: Settings) -> dict[str, str]:
    """How each role of the namespace connects, by role name, as the fleet's code builds it."""
    urls = {
        settings.database_name(key): settings.database_url(key) for key in namespace.role_keys()
    }
    reader = namespace.reader_role(settings)
    urls[reader] = settings.reader_url(namespace.API_READS)
    return urls


async def logs_in_as(url: str, password: str | None = None) -> str:
    """The user a connection to ``url`` (with another ``password``, if given) runs as."""
    connection = await asyncpg.connect(asyncpg_url(url), password=password, timeout=10)
    try:
        user: str = await connection.fetchval("SELECT current_user")
        return user
    finally:
        await connection.close()


def secret_of(url: str) -> str:
    """The password of a URL the fleet built, as asyncpg reads it."""
    password = urlsplit(url).password
    assert password is not None, "every role's URL carries its secret"
    return unquote(password)


async def test_each_role_logs_in_with_its_own_secret_and_is_refused_with_another_s(
    fleet: Fleet,
) -> None:
    settings = fleet.settings
    code, output = await fleet.cli("db", "init", "--json")
    assert code == 0, output

    # Generated for every role but the one given, kept private.
    path = settings.secrets_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    kept = json.loads(path.read_text())
    every = {settings.database_name(key) for key in namespace.role_keys()}
    assert set(kept) == every - {settings.database_name("payment")}

    urls = role_urls(settings)
    secrets = {role: secret_of(url) for role, url in urls.items()}
    assert set(secrets) == every
    assert len(set(secrets.values())) == len(every), "two roles share a secret"
    assert secrets[settings.database_name("payment")] == GIVEN
    assert all(secrets[role] == kept[role] for role in kept)

    roles = sorted(urls)
    for index, role in enumerate(roles):
        assert await logs_in_as(urls[role]) == role
        # Every other role's secret is refused: holding one opens no other.
        for other in roles[index + 1 :] + roles[:index]:
            with pytest.raises(asyncpg.InvalidPasswordError):
                await logs_in_as(urls[role], password=secrets[other])


async def test_a_second_db_init_keeps_the_secrets_and_repairs_a_drifted_password(
    fleet: Fleet,
) -> None:
    settings = fleet.settings
    inventory = settings.database_name("inventory")
    before = settings.secrets_path.read_text()
    admin = await asyncpg.connect(asyncpg_url(settings.pg_admin_url))
    try:
        await admin.execute(f"ALTER ROLE {inventory} PASSWORD 'drifted-by-hand'")
    finally:
        await admin.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await logs_in_as(settings.database_url("inventory"))

    code, output = await fleet.cli("db", "init", "--json")
    assert code == 0, output
    assert not any(result["created_role"] for result in json.loads(output))
    assert settings.secrets_path.read_text() == before  # nothing generated again
    assert await logs_in_as(settings.database_url("inventory")) == inventory


async def test_a_worker_needs_its_own_role_s_secret_alone(fleet: Fleet, tmp_path: Path) -> None:
    settings = fleet.settings
    inventory = settings.database_name("inventory")
    own = tmp_path / "inventory.secrets.json"
    descriptor = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump({inventory: json.loads(settings.secrets_path.read_text())[inventory]}, file)
    try:
        # No other role's secret anywhere in its environment: not payment's, not the file's.
        worker = await fleet.spawn("worker", "inventory", secrets_file=own, db_secrets={})
        await worker.wait_for_line("worker consuming", timeout=60)
        assert await worker.terminate() == 0
    finally:
        own.unlink(missing_ok=True)
