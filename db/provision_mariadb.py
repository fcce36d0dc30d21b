"""Database per service on MariaDB: a service's database and user there, created and migrated.

What ``db.provision`` does on PostgreSQL, for a service whose database is on MariaDB
(``FLEET_ENGINES``), with the same inputs and results: an admin connection creates the
database ``<ns>_<service>`` (utf8mb4, collation utf8mb4_bin: ids compare case-sensitively)
and the user of the same name, then the service's MariaDB migrations run as that user.
Running it again changes nothing but setting each user's password again.

Least privilege: MariaDB has no database owner nor CONNECT privilege, so the grants are the
isolation. The user exists at ``'%'`` and at ``'localhost'`` (a socket connection matches
only the latter) with ALL on its own database and nothing global: it creates no database
and no user, and cannot see another database. A read-only user has SELECT on it alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import asyncmy
from asyncmy.errors import MySQLError

from db.engine import MARIADB
from db.mariadb import Location
from db.provision import (
    DatabaseRoles,
    ProvisioningError,
    ProvisionResult,
    ServiceDatabase,
    check_name,
    migrate,
    where,
)

CHARSET, COLLATION = "utf8mb4", "utf8mb4_bin"

# Every user exists at both hosts: '%' for TCP, 'localhost' for the socket (where an
# anonymous ''@'localhost' would otherwise win over '%').
HOSTS = ("%", "localhost")


async def provision(admin_url: str, databases: Sequence[ServiceDatabase]) -> list[ProvisionResult]:
    """Each database and its users created if missing (passwords set again), then migrated
    as its own user; the read-only users granted SELECT on it."""
    for database in databases:
        for name in (database.name, *database.readers):
            check_name(name)
            database.password(name)  # each one's, before anything is made
    connection = await connect_admin(admin_url)
    try:
        created = [await _create_user_and_database(connection, db) for db in databases]
    finally:
        await connection.ensure_closed()
    results = []
    for database, (created_user, created_database, new_readers) in zip(
        databases, created, strict=True
    ):
        before, after = await migrate(database)
        results.append(
            ProvisionResult(
                service=database.service,
                name=database.name,
                created_role=created_user,
                created_database=created_database,
                migrated_from=before,
                migrated_to=after,
                readers=database.readers,
                created_readers=new_readers,
                engine=MARIADB,
            )
        )
    return results


async def drop(admin_url: str, databases: Sequence[DatabaseRoles]) -> list[str]:
    """Drops the databases and users that exist, read-only users included, their
    connections killed first. Returns the names of those that existed."""
    for database in databases:
        for name in (database.name, *database.readers):
            check_name(name)
    connection = await connect_admin(admin_url)
    dropped = []
    try:
        for database in databases:
            users = (database.name, *database.readers)
            hosts = {user: await _hosts_of(connection, user) for user in users}
            database_exists = await _database_exists(connection, database.name)
            # A transaction still open on its tables would hold DROP DATABASE up.
            await _kill_sessions(connection, users)
            # Only what exists: IF EXISTS on what does not makes the server send a note,
            # which the driver logs as a warning.
            if database_exists:
                await _execute(connection, f"DROP DATABASE IF EXISTS `{database.name}`")
            for user in users:
                for host in hosts[user]:
                    await _execute(connection, "DROP USER IF EXISTS %s@%s", user, host)
            if database_exists or hosts[database.name]:
                dropped.append(database.name)
            dropped += [reader for reader in database.readers if hosts[reader]]
    except MySQLError as exc:
        raise ProvisioningError(f"dropping on MariaDB failed: {_reason(exc)}") from exc
    finally:
        await connection.ensure_closed()
    return dropped


def native_password_hash(password: str) -> str:
    """What MariaDB stores for a mysql_native_password password (``PASSWORD('...')``), made
    here so that the statement setting a password carries none: nothing of it reaches the
    server's general log or its process list."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


async def connect_admin(admin_url: str) -> Any:
    """An autocommit asyncmy connection as the admin (``?unix_socket=PATH`` for a socket);
    ProvisioningError when it cannot be had."""
    try:
        location = Location.of(admin_url)  # the URL read as the adapter reads it
        arguments = location.connect_arguments()
        return await asyncmy.connect(
            **{**arguments, "user": location.user or "root", "database": None},
            connect_timeout=10,
        )
    # OSError: refused or timed out before the driver wrapped it; ValueError: a bad port.
    except (MySQLError, OSError, ValueError) as exc:
        raise ProvisioningError(
            f"cannot reach MariaDB at {where(admin_url, 'localhost:3306')}: {_reason(exc)}"
        ) from exc


async def _create_user_and_database(
    connection: Any, database: ServiceDatabase
) -> tuple[bool, bool, tuple[str, ...]]:
    """Returns whether the user was created (at either host), whether the database was,
    and the read-only users created."""
    name = database.name
    try:
        collation = await _fetchval(
            connection,
            "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            name,
        )
        if collation is None:
            await _execute(
                connection, f"CREATE DATABASE `{name}` CHARACTER SET {CHARSET} COLLATE {COLLATION}"
            )
        elif collation != COLLATION:
            # Its tables would compare ids case-insensitively: say so rather than migrate.
            raise ProvisioningError(
                f"database {name} exists on MariaDB with collation {collation}, not {COLLATION}"
            )
        created_user = await _user(connection, name, database.password(name))
        await _grant(connection, "ALL PRIVILEGES", name, name)
        created_readers = []
        for reader in database.readers:
            if await _user(connection, reader, database.password(reader)):
                created_readers.append(reader)
            await _grant(connection, "SELECT", name, reader)
    except MySQLError as exc:
        raise ProvisioningError(f"provisioning {name} on MariaDB failed: {_reason(exc)}") from exc
    return created_user, collation is None, tuple(created_readers)


async def _user(connection: Any, name: str, password: str) -> bool:
    """The user at every host, created or its password set again (it must log in with its
    own secret, whatever it was set to since). Returns whether it was created anywhere."""
    hosts = await _hosts_of(connection, name)
    for host in HOSTS:
        verb = "ALTER" if host in hosts else "CREATE"
        await _execute(
            connection,
            f"{verb} USER %s@%s IDENTIFIED BY PASSWORD %s",
            name,
            host,
            native_password_hash(password),
        )
    return not set(HOSTS) <= hosts


async def _grant(connection: Any, privileges: str, database: str, user: str) -> None:
    for host in HOSTS:
        await _execute(connection, f"GRANT {privileges} ON `{database}`.* TO %s@%s", user, host)


async def _hosts_of(connection: Any, user: str) -> set[str]:
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT Host FROM mysql.user WHERE User = %s", (user,))
        return {row[0] for row in await cursor.fetchall()}


async def _database_exists(connection: Any, name: str) -> bool:
    found = await _fetchval(
        connection, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", name
    )
    return found is not None


async def _kill_sessions(connection: Any, users: Sequence[str]) -> None:
    async with connection.cursor() as cursor:
        await cursor.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER IN %s", (tuple(users),)
        )
        sessions = [row[0] for row in await cursor.fetchall()]
    for session in sessions:
        try:
            await _execute(connection, "KILL CONNECTION %s", session)
        except MySQLError as exc:
            if exc.args[0] != 1094:  # unknown thread: it ended by itself meanwhile
                raise


async def _fetchval(connection: Any, sql: str, *arguments: object) -> Any:
    async with connection.cursor() as cursor:
        await cursor.execute(sql, arguments)
        row = await cursor.fetchone()
    return None if row is None else row[0]


async def _execute(connection: Any, sql: str, *arguments: object) -> None:
    # Names reach SQL as identifiers only after check_name (backquoted); users, hosts and
    # password hashes as string literals, escaped by the driver.
    async with connection.cursor() as cursor:
        await cursor.execute(sql, arguments or None)


def _reason(exc: BaseException) -> str:
    """The driver's message without its error number's tuple, on one line."""
    args = exc.args
    text = str(args[1]) if len(args) == 2 and isinstance(args[0], int) else str(exc)
    text = text.strip()
    return text.splitlines()[0] if text else type(exc).__name__
