"""Database per service against the real PostgreSQL: roles, databases, isolation, migrations."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from db import migrate
from db import tables as messaging
from db.engine import asyncpg_url, create_engine
from db.provision import ProvisioningError, ProvisionResult, ServiceDatabase, drop, provision
from tests.integration.conftest import secrets_file
from tests.integration.leftovers import created_namespaces
from workers.inventory import store as inventory_store
from workers.operations import namespace
from workers.orchestrator import store as orchestrator_store
from workers.order import store as order_store
from workers.order_view import store as order_view_store
from workers.payment import store as payment_store
from workers.runtime.catalog import SERVICES
from workers.runtime.settings import Settings
from workers.shipping import store as shipping_store

pytestmark = pytest.mark.integration

ADMIN_URL = os.environ.get("FLEET_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

MESSAGING_TABLES = {"outbox", "inbox"}
INVENTORY_TABLES = {"stock", "reservations", "reservation_lines", "stock_ledger"}
# Each service's own tables, next to its outbox and inbox.
SERVICE_TABLES = {
    "inventory": INVENTORY_TABLES,
    "order": {"events", "snapshots"},
    "payment": {"accounts", "payments", "payment_ledger"},
    "shipping": {"shipments"},
    "orchestrator": {"sagas", "saga_log"},
    "order_view": {"order_summaries", "rebuilds"},
}
# Each service's own tables, as its code declares them.
SERVICE_METADATA = {
    "inventory": inventory_store.metadata,
    "order": order_store.metadata,
    "payment": payment_store.metadata,
    "shipping": shipping_store.metadata,
    "orchestrator": orchestrator_store.metadata,
    "order_view": order_view_store.metadata,
}


def service_databases(services: Sequence[str]) -> list[ServiceDatabase]:
    """The services' databases in a namespace of their own, so runs never collide (and the
    run's closing check sees that they were dropped, and their secrets forgotten)."""
    name = f"t{secrets.token_hex(4)}"
    settings = Settings(
        namespace=name, pg_admin_url=ADMIN_URL, db_urls={}, secrets_file=secrets_file(name)
    )
    created_namespaces.append(settings)
    return [db for db in namespace.service_databases(settings) if db.service in services]


async def drop_all(databases: Sequence[ServiceDatabase]) -> None:
    """The databases and roles dropped, and the secrets kept for their namespace forgotten
    (each of these namespaces has its own file)."""
    await drop(ADMIN_URL, databases)
    for settings in created_namespaces:
        if any(database.name == settings.database_name(database.service) for database in databases):
            settings.secrets_path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
async def provisioned() -> AsyncIterator[tuple[list[ServiceDatabase], list[ProvisionResult]]]:
    databases = service_databases(SERVICES)
    try:
        yield databases, await provision(ADMIN_URL, databases)
    finally:
        await drop_all(databases)


def by_service(databases: list[ServiceDatabase]) -> dict[str, ServiceDatabase]:
    return {database.service: database for database in databases}


async def test_provision_creates_every_database_and_role_with_its_tables(
    provisioned: tuple[list[ServiceDatabase], list[ProvisionResult]],
) -> None:
    databases, results = provisioned
    assert [result.service for result in results] == list(SERVICES)
    for result in results:
        assert result.created_role and result.created_database
        assert (result.migrated_from, result.migrated_to) == (None, migrate.head(result.service))

    for database in databases:
        expected = (
            MESSAGING_TABLES | {"alembic_version"} | SERVICE_TABLES.get(database.service, set())
        )
        # Connected as the service's own role: it owns its database and every table in it.
        connection = await asyncpg.connect(asyncpg_url(database.url))
        try:
            owners = dict(
                await connection.fetch(
                    "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"
                )
            )
            database_owner = await connection.fetchval(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
            )
        finally:
            await connection.close()
        assert owners == dict.fromkeys(expected, database.name)
        assert database_owner == database.name


async def test_migrated_schema_matches_the_code_s_tables(
    provisioned: tuple[list[ServiceDatabase], list[ProvisionResult]],
) -> None:
    databases, _ = provisioned
    for database in databases:
        expected = sa.MetaData()
        for table in messaging.metadata.tables.values():
            table.to_metadata(expected)
        if database.service in SERVICE_METADATA:
            for table in SERVICE_METADATA[database.service].tables.values():
                table.to_metadata(expected)
        differences = await schema_differences(database.url, expected)
        assert differences == [], database.service


async def test_second_provision_creates_nothing_and_stays_at_head(
    provisioned: tuple[list[ServiceDatabase], list[ProvisionResult]],
) -> None:
    databases, _ = provisioned
    again = await provision(ADMIN_URL, databases)
    for result in again:
        head = migrate.head(result.service)
        assert not result.changed
        assert (result.created_role, result.created_database) == (False, False)
        assert (result.migrated_from, result.migrated_to) == (head, head)


async def test_a_service_role_cannot_connect_to_another_service_s_database(
    provisioned: tuple[list[ServiceDatabase], list[ProvisionResult]],
) -> None:
    databases = by_service(provisioned[0])
    inventory, payment = databases["inventory"], databases["payment"]
    own = await asyncpg.connect(asyncpg_url(inventory.url))
    assert await own.fetchval("SELECT current_user") == inventory.name
    await own.close()

    # The inventory's credentials, the payment's database.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
        await asyncpg.connect(
            asyncpg_url(ADMIN_URL),
            user=inventory.name,
            password=inventory.password(inventory.name),
            database=payment.name,
        )


@pytest.mark.parametrize("service", sorted(SERVICE_TABLES))
async def test_migrations_downgrade_to_nothing_and_upgrade_again(service: str) -> None:
    databases = service_databases([service])
    (database,) = databases
    try:
        await provision(ADMIN_URL, databases)
        config = migrate.alembic_config(service, database.url)
        await asyncio.to_thread(command.downgrade, config, "base")
        assert await public_tables(database.url) == {"alembic_version"}
        head = ScriptDirectory.from_config(config).get_current_head()
        assert await migrate.upgrade_async(service, database.url) == (None, head)
        assert await public_tables(database.url) == (
            MESSAGING_TABLES | SERVICE_TABLES[service] | {"alembic_version"}
        )
    finally:
        await drop_all(databases)


async def test_an_unreachable_server_is_a_one_line_provisioning_error() -> None:
    databases = service_databases(["order"])
    try:
        with pytest.raises(
            ProvisioningError, match=r"^cannot reach PostgreSQL at 127\.0\.0\.1:1: "
        ) as e:
            await provision("postgresql://postgres:secret@127.0.0.1:1/postgres", databases)
        assert "\n" not in str(e.value) and "secret" not in str(e.value)
    finally:
        await drop_all(databases)


async def test_a_name_that_is_not_a_plain_identifier_is_refused() -> None:
    databases = service_databases(["order"])
    (database,) = databases
    bad_name = 'x"; DROP ROLE postgres; --'
    bad = ServiceDatabase(
        name=bad_name, service=database.service, url=database.url, passwords={bad_name: "p"}
    )
    try:
        with pytest.raises(ValueError, match="invalid database/role name"):
            await provision(ADMIN_URL, [bad])
    finally:
        await drop_all(databases)


async def public_tables(url: str) -> set[str]:
    connection = await asyncpg.connect(asyncpg_url(url))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


async def schema_differences(url: str, metadata: sa.MetaData) -> list[tuple[object, ...]]:
    """What autogenerate would change to make the database look like ``metadata``."""

    def not_alembic_version(obj: object, name: str | None, type_: str, *_: object) -> bool:
        return not (type_ == "table" and name == "alembic_version")

    def compare(connection: sa.Connection) -> list[tuple[object, ...]]:
        context = MigrationContext.configure(
            connection, opts={"include_object": not_alembic_version}
        )
        return list(compare_metadata(context, metadata))

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()
