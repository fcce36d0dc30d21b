"""Least privilege on the real PostgreSQL: every role ``fleet db init`` makes (each
service's, the operations role ``<ns>_ops``, the API's read-only ``<ns>_order_view_reader``)
is refused what is not its business, and the HTTP API reads the view as a role that cannot
write it."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import asyncpg
import httpx
import pytest

from db.engine import asyncpg_url
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.faults import client_ports
from tests.integration.leftovers import leftovers
from tests.integration.support import Fleet
from workers.operations import namespace
from workers.runtime import catalog, control, topology
from workers.runtime.settings import Settings

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Role:
    name: str
    password: str
    database: str  # the one database it may connect to


def roles(settings: Settings) -> list[Role]:
    """Every login role of the namespace, each with its own database."""
    found = []
    for database in namespace.service_databases(settings):
        found.append(Role(database.name, database.password(database.name), database.name))
        found += [
            Role(reader, database.password(reader), database.name) for reader in database.readers
        ]
    return found


@pytest.fixture(scope="module")
async def fleet(server_urls: tuple[str, str]) -> AsyncIterator[Fleet]:
    settings = namespace_settings(server_urls)
    ns = settings.namespace
    async with namespaced_fleet(settings) as fleet:
        yield fleet
        # A paused handler's marker, as `fleet pause` leaves it.
        paused = catalog.load("inventory").queue_specs(ns)[0].name
        connection = await aio_pika.connect(settings.amqp_url)
        try:
            await control.set_paused(await connection.channel(), paused, True)
        finally:
            await connection.close()
        # The run's closing check sees every kind of thing a namespace has...
        before = set(await leftovers([settings]))
        expected = {
            f"database {ns}_ops",
            f"role {ns}_ops",
            f"role {namespace.reader_role(settings)}",
            f"queue {control.pause_marker(paused)}",
            f"exchange {topology.control_exchange(ns)}",
        }
        assert expected <= before, expected - before
    # ... and teardown removes them all, the read-only role with the view's database.
    assert await leftovers([settings]) == []


@contextlib.asynccontextmanager
async def connected(
    settings: Settings, role: Role, database: str | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """A connection as ``role`` to ``database`` (its own unless given), on the admin URL's
    server."""
    connection = await asyncpg.connect(
        asyncpg_url(settings.pg_admin_url),
        user=role.name,
        password=role.password,
        database=database or role.database,
    )
    try:
        yield connection
    finally:
        await connection.close()


async def admin_fetch(settings: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(asyncpg_url(settings.pg_admin_url))
    try:
        rows: list[asyncpg.Record] = await connection.fetch(sql, *args)
        return rows
    finally:
        await connection.close()


async def test_every_role_has_no_power_beyond_its_own_database(fleet: Fleet) -> None:
    settings = fleet.settings
    every = roles(settings)
    assert {role.name for role in every} >= {
        settings.database_name("ops"),
        namespace.reader_role(settings),
    }
    attributes = await admin_fetch(
        settings,
        "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,"
        " rolcanlogin FROM pg_roles WHERE rolname = ANY($1::text[]) ORDER BY rolname",
        [role.name for role in every],
    )
    assert len(attributes) == len(every)
    for row in attributes:
        assert dict(row) == {
            "rolname": row["rolname"],
            "rolsuper": False,
            "rolcreatedb": False,
            "rolcreaterole": False,
            "rolreplication": False,
            "rolbypassrls": False,
            "rolcanlogin": True,
        }
    # Members of no role (pg_read_all_data and the like would undo all of this).
    memberships = await admin_fetch(
        settings,
        "SELECT member::regrole::text FROM pg_auth_members"
        " WHERE member::regrole::text = ANY($1::text[])",
        [role.name for role in every],
    )
    assert memberships == []

    for role in every:
        async with connected(settings, role) as conn:
            assert await conn.fetchval("SELECT current_user") == role.name
            for statement in (
                f"CREATE DATABASE {role.name}_extra",
                f"CREATE ROLE {role.name}_extra",
                f"ALTER ROLE {role.name} CREATEDB",
                f"ALTER ROLE {role.name} SUPERUSER",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)


async def test_no_role_connects_to_another_service_s_database(fleet: Fleet) -> None:
    settings = fleet.settings
    every = roles(settings)
    databases = sorted({role.database for role in every})
    ops = settings.database_name("ops")
    for role in every:
        for database in databases:
            if database == role.database or (database == ops and _appends_audit(settings, role)):
                continue  # (a service's role connects to ops to append to the audit log)
            with pytest.raises(
                asyncpg.InsufficientPrivilegeError, match="permission denied for database"
            ):
                async with connected(settings, role, database):
                    pass


async def test_no_role_reads_another_service_s_tables_even_if_it_could_connect(
    fleet: Fleet,
) -> None:
    """The second wall behind CONNECT: another service's tables grant nothing to anyone
    (CONNECT is granted to PUBLIC here for the test only, then revoked again)."""
    settings = fleet.settings
    every = roles(settings)
    admin = await asyncpg.connect(asyncpg_url(settings.pg_admin_url))
    try:
        for database in sorted({role.database for role in every}):
            owner = next(role for role in every if role.name == database)
            async with connected(settings, owner) as conn:
                tables = [
                    row[0]
                    for row in await conn.fetch(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    )
                ]
            assert len(tables) > 1, (database, tables)  # alembic_version and its own
            await admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO PUBLIC')
            try:
                for role in every:
                    if role.database == database:
                        continue
                    async with connected(settings, role, database) as conn:
                        for table in tables:
                            if table == "audit" and _appends_audit(settings, role):
                                continue  # test_a_service_only_appends_to_the_audit_log
                            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                                await conn.fetch(f'SELECT * FROM "{table}" LIMIT 1')
                            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                                await conn.execute(f'INSERT INTO "{table}" DEFAULT VALUES')
            finally:
                await admin.execute(f'REVOKE CONNECT ON DATABASE "{database}" FROM PUBLIC')
    finally:
        await admin.close()


async def test_the_reader_reads_every_view_table_now_and_after_a_migration_but_writes_none(
    fleet: Fleet,
) -> None:
    settings = fleet.settings
    reader = asyncpg_url(settings.reader_url("order_view"))
    async with fleet.connection("order_view") as owner:
        # A table made later by the view's own role (as its next migration would) is readable.
        await owner.execute("CREATE TABLE later_table (id int)")
    try:
        connection = await asyncpg.connect(reader)
        try:
            assert await connection.fetchval("SELECT current_user") == namespace.reader_role(
                settings
            )
            for table in ("order_summaries", "rebuilds", "inbox", "outbox", "later_table"):
                await connection.fetch(f"SELECT * FROM {table} LIMIT 1")
            for statement in (
                "INSERT INTO order_summaries (order_id) VALUES ('x')",
                "UPDATE order_summaries SET status = 'CONFIRMED'",
                "DELETE FROM order_summaries",
                "TRUNCATE order_summaries",
                "INSERT INTO rebuilds (rebuild_id) VALUES ('x')",
                "DELETE FROM inbox",
                "INSERT INTO later_table VALUES (1)",
                "CREATE TABLE mine (id int)",
                "DROP TABLE later_table",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await connection.execute(statement)
        finally:
            await connection.close()
    finally:
        async with fleet.connection("order_view") as owner:
            await owner.execute("DROP TABLE later_table")


async def test_a_second_db_init_keeps_the_reader_as_it_is(fleet: Fleet) -> None:
    results = await namespace.init_databases(fleet.settings)
    view = next(result for result in results if result.service == "order_view")
    assert view.readers == (namespace.reader_role(fleet.settings),)
    assert not any(result.changed for result in results), results


async def test_the_api_reads_the_view_as_the_reader_and_cannot_write_it(fleet: Fleet) -> None:
    settings = fleet.settings
    order_id = str(uuid.uuid4())
    async with fleet.connection("order_view") as owner:
        await owner.execute(
            "INSERT INTO order_summaries (order_id, status, customer_id, item_count, saga,"
            " created_at, updated_at, last_version)"
            " VALUES ($1, 'CONFIRMED', 'privileged', 1, 'orchestration', now(), now(), 1)",
            order_id,
        )
    process = await fleet.spawn("api", "--port", "0")
    try:
        line = await process.wait_for_line("listening on http://")
        found = re.search(r"http://\S+", line)
        assert found is not None, line
        async with httpx.AsyncClient(base_url=found.group(0), timeout=30) as http:
            listing = await http.get("/orders", params={"customer": "privileged"})
            assert listing.status_code == 200, listing.text
            assert [order["order_id"] for order in listing.json()["orders"]] == [order_id]
            one = await http.get(f"/orders/{order_id}")
            assert one.status_code == 200, one.text

        # The API's own sessions on the view's database are the reader's.
        ports = client_ports(process.process.pid)
        sessions = await admin_fetch(
            settings,
            "SELECT usename, client_port FROM pg_stat_activity WHERE datname = $1",
            settings.database_name("order_view"),
        )
        api_users = {row["usename"] for row in sessions if row["client_port"] in ports}
        assert api_users == {namespace.reader_role(settings)}, sessions
    finally:
        assert await process.terminate() == 0, "\n".join(process.lines[-20:])

    # And that role, through the very URL the API uses, cannot change the view.
    connection = await asyncpg.connect(asyncpg_url(settings.reader_url("order_view")))
    try:
        for statement, args in (
            ("INSERT INTO order_summaries (order_id) VALUES ($1)", [str(uuid.uuid4())]),
            ("UPDATE order_summaries SET status = 'REJECTED' WHERE order_id = $1", [order_id]),
            ("DELETE FROM order_summaries WHERE order_id = $1", [order_id]),
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement, *args)
    finally:
        await connection.close()
    row = await fleet.row(
        "order_view", "SELECT status FROM order_summaries WHERE order_id = :id", id=order_id
    )
    assert row == {"status": "CONFIRMED"}


def _appends_audit(settings: Settings, role: Role) -> bool:
    """A service's own role: its worker appends its breaker's trips to the audit log."""
    return role.name in {settings.database_name(service) for service in catalog.SERVICES}


async def test_a_service_only_appends_to_the_audit_log(fleet: Fleet) -> None:
    """A service's role may add a line to the operations database's audit log (what its
    breaker did) and nothing else there: not read it, not change it, no other table."""
    settings = fleet.settings
    ops = settings.database_name("ops")
    service_roles = [role for role in roles(settings) if _appends_audit(settings, role)]
    assert len(service_roles) == len(catalog.SERVICES)
    for role in service_roles:
        async with connected(settings, role, ops) as conn:
            await conn.execute(
                "INSERT INTO audit (operator, action, target, count) VALUES ('fleet', $1, $2, 0)",
                "breaker.trip",
                role.name,
            )
            for statement in (
                "SELECT * FROM audit LIMIT 1",
                "UPDATE audit SET operator = 'someone'",
                "DELETE FROM audit",
                "SELECT * FROM archived_letters LIMIT 1",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
    admin = await asyncpg.connect(asyncpg_url(settings.pg_admin_url), database=ops)
    try:
        written = await admin.fetch(
            "SELECT target FROM audit WHERE action = 'breaker.trip' ORDER BY target"
        )
    finally:
        await admin.close()
    assert [row["target"] for row in written] == sorted(role.name for role in service_roles)
