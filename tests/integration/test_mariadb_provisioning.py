"""The payment service on MariaDB, against the real servers: ``fleet db init`` makes its
database and user there (and its tables nowhere else), a second run changes nothing, its
user is refused every other database, its PostgreSQL role may only append to the audit
log, teardown removes all of it, and failures are one line."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncmy
import asyncpg
import pytest
from asyncmy.errors import OperationalError, ProgrammingError

from db import migrate, provision_mariadb
from db.engine import MARIADB, asyncpg_url
from tests.integration.conftest import namespace_settings
from tests.integration.leftovers import leftovers
from tests.integration.support import Fleet
from workers.operations import namespace, ops_db
from workers.runtime import catalog
from workers.runtime.settings import Settings

pytestmark = pytest.mark.integration

ON_MARIADB = {"payment": MARIADB}
PAYMENT_TABLES = {"outbox", "inbox", "order_locks", "accounts", "payments", "payment_ledger"}
# MariaDB's errors: access denied to a database, to a table, to a global privilege.
DB_ACCESS_DENIED, TABLE_ACCESS_DENIED, SPECIFIC_ACCESS_DENIED = 1044, 1142, 1227


@pytest.fixture(scope="module")
async def initialised(server_urls: tuple[str, str]) -> AsyncIterator[tuple[Fleet, list[Any]]]:
    """A namespace with payment on MariaDB, made by ``fleet db init`` (its JSON kept), and
    removed by ``fleet teardown``, which must leave nothing on either server."""
    settings = namespace_settings(server_urls, engines=ON_MARIADB)
    fleet = Fleet(settings)
    try:
        code, output = await fleet.cli("db", "init", "--json")
        assert code == 0, output
        yield fleet, json.loads(output)
        found = await leftovers([settings])
        name = settings.database_name("payment")
        assert {f"mariadb database {name}", f"mariadb user {name}@%", f"role {name}"} <= set(found)
        code, output = await fleet.cli("teardown", "--namespace", settings.namespace, "--yes")
        assert code == 0, output
        assert await leftovers([settings]) == []
    finally:
        await fleet.close()
        await namespace.tear_down(settings)  # whatever a failed test left


@contextlib.asynccontextmanager
async def mariadb_as(settings: Settings, user: str, password: str, **options: Any) -> Any:
    """A connection to the MariaDB server as ``user``."""
    admin = urlsplit(settings.mariadb_admin_url)
    connection = await asyncmy.connect(
        host=admin.hostname, port=admin.port or 3306, user=user, password=password, **options
    )
    try:
        yield connection
    finally:
        await connection.ensure_closed()


async def fetch(connection: Any, sql: str, *arguments: object) -> list[tuple[Any, ...]]:
    async with connection.cursor() as cursor:
        await cursor.execute(sql, arguments or None)
        return list(await cursor.fetchall())


async def test_db_init_makes_payment_s_database_on_mariadb_and_a_second_run_changes_nothing(
    initialised: tuple[Fleet, list[Any]],
) -> None:
    fleet, first = initialised
    settings = fleet.settings
    by_service = {result["service"]: result for result in first}
    assert list(by_service) == [*catalog.SERVICES, ops_db.OPS]
    payment = by_service["payment"]
    assert payment["engine"] == MARIADB
    assert payment["created_role"] and payment["created_database"]
    head = migrate.head("payment", MARIADB)
    assert (payment["migrated_from"], payment["migrated_to"]) == (None, head)
    assert all(by_service[s]["engine"] == "postgresql" for s in by_service if s != "payment")

    code, output = await fleet.cli("db", "init", "--json")
    assert code == 0, output
    for result in json.loads(output):
        assert not (result["created_role"] or result["created_database"]), result
        assert result["migrated_from"] == result["migrated_to"], result
        assert not result["created_readers"], result

    name = settings.database_name("payment")
    secret = settings.secret_for("payment")
    # As payment's own user: its tables, InnoDB, case-sensitive, at head.
    async with mariadb_as(settings, name, secret, database=name) as conn:
        tables = dict(
            await fetch(
                conn,
                "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = DATABASE()",
            )
        )
        assert tables == dict.fromkeys(PAYMENT_TABLES | {"alembic_version"}, "InnoDB")
        assert await fetch(conn, "SELECT version_num FROM alembic_version") == [(head,)]
        assert await fetch(
            conn,
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
            " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = DATABASE()",
        ) == [("utf8mb4", "utf8mb4_bin")]
        checks = {
            row[0]
            for row in await fetch(
                conn,
                "SELECT CONSTRAINT_NAME FROM information_schema.CHECK_CONSTRAINTS"
                " WHERE CONSTRAINT_SCHEMA = DATABASE() AND CONSTRAINT_NAME LIKE 'ck\\_%'",
            )
        }
        assert checks == {
            "ck_accounts_balance_not_negative",
            "ck_accounts_seeded_not_negative",
            "ck_payments_status",
            "ck_payments_charged_is_complete",
            "ck_payments_amount_not_negative",
            "ck_payment_ledger_kind",
            "ck_payment_ledger_amount_not_negative",
            "ck_payment_ledger_order_unless_seed",
        }

    # On PostgreSQL: no database of payment's, its tables nowhere; only its role.
    admin = await asyncpg.connect(asyncpg_url(settings.pg_admin_url))
    try:
        assert not await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1", name)
        role = await admin.fetchrow(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication,"
            " rolbypassrls FROM pg_roles WHERE rolname = $1",
            name,
        )
        assert role is not None and tuple(role) == (True, False, False, False, False, False)
    finally:
        await admin.close()
    for service in (s for s in catalog.SERVICES if s != "payment"):
        connection = await asyncpg.connect(asyncpg_url(settings.database_url(service)))
        try:
            found = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE tablename = ANY($1::text[])",
                ["accounts", "payments", "payment_ledger", "order_locks"],
            )
        finally:
            await connection.close()
        assert found == [], service


async def test_the_payment_user_is_refused_every_other_database(
    initialised: tuple[Fleet, list[Any]],
) -> None:
    settings = initialised[0].settings
    name, secret = settings.database_name("payment"), settings.secret_for("payment")
    other = settings.database_name("other")
    admin = await provision_mariadb.connect_admin(settings.mariadb_admin_url)
    try:
        await fetch(admin, f"CREATE DATABASE `{other}`")
        await fetch(admin, f"CREATE TABLE `{other}`.t (x INT)")
        async with mariadb_as(settings, name, secret, database=name) as conn:
            visible = {row[0] for row in await fetch(conn, "SHOW DATABASES")}
            assert visible == {"information_schema", name}
            for statement, refused in (
                ("USE mysql", DB_ACCESS_DENIED),
                (f"USE `{other}`", DB_ACCESS_DENIED),
                ("SELECT * FROM mysql.user", TABLE_ACCESS_DENIED),
                ("SELECT * FROM mysql.global_priv", TABLE_ACCESS_DENIED),
                (f"SELECT * FROM `{other}`.t", TABLE_ACCESS_DENIED),
                (f"CREATE DATABASE `{name}_extra`", DB_ACCESS_DENIED),
                (f"CREATE USER '{name}_extra'@'%'", SPECIFIC_ACCESS_DENIED),
                (f"GRANT ALL ON `{other}`.* TO '{name}'@'%'", DB_ACCESS_DENIED),
            ):
                with pytest.raises((OperationalError, ProgrammingError)) as refusal:
                    await fetch(conn, statement)
                assert refusal.value.args[0] == refused, (statement, refusal.value)
        for database in ("mysql", other):
            with pytest.raises(OperationalError) as refusal:
                async with mariadb_as(settings, name, secret, database=database):
                    pass
            assert refusal.value.args[0] == DB_ACCESS_DENIED, database
    finally:
        await fetch(admin, f"DROP DATABASE IF EXISTS `{other}`")
        await admin.ensure_closed()


async def test_payment_s_postgresql_role_may_only_append_to_the_audit_log(
    initialised: tuple[Fleet, list[Any]],
) -> None:
    settings = initialised[0].settings
    name, secret = settings.database_name("payment"), settings.secret_for("payment")
    # Every other database of the namespace refuses it.
    for service in (s for s in catalog.SERVICES if s != "payment"):
        database = settings.database_name(service)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await asyncpg.connect(
                asyncpg_url(settings.pg_admin_url), user=name, password=secret, database=database
            )
    # In the operations database, as the breaker connects: INSERT into audit, nothing else.
    connection = await asyncpg.connect(asyncpg_url(settings.audit_url("payment")))
    try:
        assert await connection.fetchval("SELECT current_user") == name
        await connection.execute(
            "INSERT INTO audit (operator, action, target, count)"
            " VALUES ('breaker', 'breaker.trip', 'payment', 0)"
        )
        for statement in (
            "SELECT * FROM audit",
            "UPDATE audit SET count = 1",
            "DELETE FROM audit",
            "CREATE TABLE mine (x int)",
            f"CREATE DATABASE {name}_extra",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
    finally:
        await connection.close()


async def test_a_bad_engine_name_is_one_line_and_exit_2(
    initialised: tuple[Fleet, list[Any]],
) -> None:
    fleet = initialised[0]
    code, output = await fleet.cli("db", "init", engines={"payment": "oracle"})
    assert code == 2, output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("fleet: ") and "'oracle'" in output, output


async def test_an_unreachable_mariadb_is_one_line_and_exit_1_with_nothing_made(
    server_urls: tuple[str, str],
) -> None:
    settings = namespace_settings(
        server_urls, engines=ON_MARIADB, mariadb_admin_url="mysql://root:hush@127.0.0.1:1/"
    )
    fleet = Fleet(settings)
    try:
        code, output = await fleet.cli("db", "init")
        assert code == 1, output
        assert len(output.strip().splitlines()) == 1, output
        assert output.startswith("fleet: cannot reach MariaDB at 127.0.0.1:1: "), output
        assert "hush" not in output
        # MariaDB's part comes first: nothing was made on PostgreSQL (only the secrets file
        # generated for the next run is there).
        assert {line.split()[0] for line in await leftovers([settings])} == {"secret"}
    finally:
        await fleet.close()
        settings.secrets_path.unlink(missing_ok=True)
