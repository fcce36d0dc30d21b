"""Database per service: each service's role and database, created and migrated.

An admin (superuser) connection creates, for every service, a login role and a database
owned by it that only this role may connect to; then the service's migrations run as the
service's own role, so it owns its tables. Running it again changes nothing.

Least privilege: a service's role owns its database and nothing else. It is no superuser,
creates no database and no role, and cannot connect to any other service's database. A
database may also have read-only login roles (``readers``, the HTTP API's on the view):
they connect and SELECT, and nothing more.

A service whose database is on MariaDB gets its database and users there
(``db.provision_mariadb``, which shares this module's names, results and errors), and here a
login role of the same name with no database: its worker appends its breaker's trips to the
operations database's audit log as that role (``provision_login_roles``, ``grant_appending``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from db.engine import POSTGRESQL, asyncpg_url
from db.migrate import upgrade_async

# Names reach SQL as identifiers (quoted by the server's format('%I')); longer than 63
# bytes, PostgreSQL would silently truncate them and two services could collide.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ProvisioningError(Exception):
    """PostgreSQL or MariaDB refused or could not be reached; the message is one line for
    the CLI."""


# What every role made here is refused, said again on every run (ALTER ROLE) so that a
# role someone widened by hand is narrowed back.
_NO_PRIVILEGES = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


@dataclass(frozen=True)
class DatabaseRoles:
    """A database and its login roles, by name: what ``drop`` removes."""

    name: str  # the database's and its owner role's name
    # Login roles that may read every table of it and write none.
    readers: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ServiceDatabase(DatabaseRoles):
    """A database as ``provision`` makes it: its roles, their passwords, its migrations."""

    service: str
    url: str = field(repr=False)  # how the service connects, as its own role
    # Each login role's own password, by role name: the owner's and every reader's.
    passwords: Mapping[str, str] = field(repr=False)

    def password(self, role: str) -> str:
        try:
            return self.passwords[role]
        except KeyError:
            raise ValueError(f"no password given for role {role}") from None


@dataclass(frozen=True)
class ProvisionResult:
    service: str
    name: str
    created_role: bool
    created_database: bool
    migrated_from: str | None  # None: the database had no migrations applied
    migrated_to: str
    readers: tuple[str, ...] = ()  # its read-only roles
    created_readers: tuple[str, ...] = ()  # those of them created by this run
    engine: str = POSTGRESQL  # the server the database is on

    @property
    def changed(self) -> bool:
        return (
            self.created_role
            or self.created_database
            or self.migrated_from != self.migrated_to
            or bool(self.created_readers)
        )


async def provision(admin_url: str, databases: Sequence[ServiceDatabase]) -> list[ProvisionResult]:
    for database in databases:
        for name in (database.name, *database.readers):
            check_name(name)
            database.password(name)  # each one's, before anything is made
    connection = await _connect_admin(admin_url)
    try:
        created = [await _create_role_and_database(connection, db) for db in databases]
        created_readers = [await _create_readers(connection, db) for db in databases]
    finally:
        await connection.close()
    results = []
    for database, (created_role, created_database), new_readers in zip(
        databases, created, created_readers, strict=True
    ):
        before, after = await migrate(database)
        if database.readers:
            # After the migrations: the tables they made exist, to be granted.
            await _grant_reading(admin_url, database)
        results.append(
            ProvisionResult(
                service=database.service,
                name=database.name,
                created_role=created_role,
                created_database=created_database,
                migrated_from=before,
                migrated_to=after,
                readers=database.readers,
                created_readers=new_readers,
            )
        )
    return results


async def drop(admin_url: str, databases: Sequence[DatabaseRoles]) -> list[str]:
    """Drops the databases and roles that exist (a namespace torn down), read-only roles
    included; their sessions are ended. Returns the names of those that existed (a
    database, its role, or both; a read-only role)."""
    for database in databases:
        for name in (database.name, *database.readers):
            check_name(name)
    connection = await _connect_admin(admin_url)
    dropped = []
    try:
        for database in databases:
            existed = await connection.fetchval(
                "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)"
                " OR EXISTS (SELECT FROM pg_roles WHERE rolname = $1)",
                database.name,
            )
            # WITH (FORCE) terminates the database's backends itself, atomically with the
            # drop, so a pooled client that reconnects in between cannot make it fail.
            await _execute(connection, "DROP DATABASE IF EXISTS %I WITH (FORCE)", database.name)
            await _execute(connection, "DROP ROLE IF EXISTS %I", database.name)
            if existed:
                dropped.append(database.name)
            # Their privileges went with the database, so nothing holds the roles now.
            for reader in database.readers:
                if await _role_exists(connection, reader):
                    await _execute(connection, "DROP ROLE %I", reader)
                    dropped.append(reader)
    except asyncpg.PostgresError as exc:
        raise ProvisioningError(f"dropping failed: {one_line(exc)}") from exc
    finally:
        await connection.close()
    return dropped


async def provision_login_roles(admin_url: str, passwords: Mapping[str, str]) -> tuple[str, ...]:
    """Login roles with no database of their own, by name with each one's password (the
    roles of the services on MariaDB, which only append to the audit log here): created,
    or their password and restrictions set again. Returns those created."""
    for name in passwords:
        check_name(name)
    connection = await _connect_admin(admin_url)
    created = []
    try:
        for name, password in passwords.items():
            if not await _login_role(connection, name, password):
                created.append(name)
    except asyncpg.PostgresError as exc:
        raise ProvisioningError(f"provisioning role {name} failed: {one_line(exc)}") from exc
    finally:
        await connection.close()
    return tuple(created)


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"invalid database/role name {name!r}: must match {_NAME.pattern}")


async def _connect_admin(admin_url: str, database: str | None = None) -> asyncpg.Connection:
    """To the admin URL's database, or to ``database`` as the admin."""
    # asyncpg runs each statement on its own (autocommit): CREATE DATABASE needs that.
    try:
        return await asyncpg.connect(asyncpg_url(admin_url), database=database, timeout=10)
    # OSError covers refused connections and timeouts, ValueError a malformed URL.
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ProvisioningError(
            f"cannot reach PostgreSQL at {where(admin_url)}: {one_line(exc)}"
        ) from exc


async def _create_role_and_database(
    connection: asyncpg.Connection, database: ServiceDatabase
) -> tuple[bool, bool]:
    name = database.name
    try:
        role_exists = await _login_role(connection, name, database.password(name))

        owner = await connection.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", name
        )
        if owner is None:
            await _execute(connection, "CREATE DATABASE %I OWNER %I", name, name)
        elif owner != name:
            # Its migrations run as the role: in someone else's database they would fail on
            # the public schema, so say why here instead.
            raise ProvisioningError(f"database {name} exists but is owned by {owner}, not {name}")

        # Every role may connect to a new database by default: only this one may.
        await _execute(connection, "REVOKE CONNECT ON DATABASE %I FROM PUBLIC", name)
        await _execute(connection, "GRANT CONNECT ON DATABASE %I TO %I", name, name)
    except asyncpg.PostgresError as exc:
        raise ProvisioningError(f"provisioning {name} failed: {one_line(exc)}") from exc
    return not role_exists, owner is None


async def _create_readers(
    connection: asyncpg.Connection, database: ServiceDatabase
) -> tuple[str, ...]:
    """The database's read-only roles, created if missing; they may connect to it. Returns
    those created."""
    created = []
    try:
        for reader in database.readers:
            if not await _login_role(connection, reader, database.password(reader)):
                created.append(reader)
            await _execute(connection, "GRANT CONNECT ON DATABASE %I TO %I", database.name, reader)
    except asyncpg.PostgresError as exc:
        raise ProvisioningError(
            f"provisioning {database.name}'s readers failed: {one_line(exc)}"
        ) from exc
    return tuple(created)


async def _grant_reading(admin_url: str, database: ServiceDatabase) -> None:
    """SELECT on every table of the database's schema, now and (default privileges) on those
    its role's later migrations make; nothing else. Granted in the database itself, by the
    admin, since privileges on tables live there."""
    connection = await _connect_admin(admin_url, database=database.name)
    try:
        for reader in database.readers:
            await _execute(connection, "GRANT USAGE ON SCHEMA public TO %I", reader)
            await _execute(connection, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO %I", reader)
            await _execute(
                connection,
                "ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public"
                " GRANT SELECT ON TABLES TO %I",
                database.name,
                reader,
            )
    except asyncpg.PostgresError as exc:
        raise ProvisioningError(
            f"granting reads on {database.name} failed: {one_line(exc)}"
        ) from exc
    finally:
        await connection.close()


async def _login_role(connection: asyncpg.Connection, name: str, password: str) -> bool:
    """Creates the login role, or sets an existing one's password and privileges (it must
    log in with its own secret, whatever it was set to since). Returns whether it existed."""
    exists = await _role_exists(connection, name)
    verb = "ALTER" if exists else "CREATE"
    await _execute(
        connection,
        f"{verb} ROLE %I WITH LOGIN PASSWORD %L {_NO_PRIVILEGES}",
        name,
        scram_verifier(password) if password.isascii() else password,
    )
    return exists


SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password, made here as ``\\password`` in
    psql makes it: the statement setting a password then carries no password, so none
    reaches the server's log, pg_stat_activity or pg_stat_statements. For an ASCII password
    only: the server does not normalise those (SASLprep), so this equals its own."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def _role_exists(connection: asyncpg.Connection, name: str) -> bool:
    return bool(await connection.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", name))


async def _execute(connection: asyncpg.Connection, template: str, *arguments: str) -> None:
    # DDL takes no bind parameters: the server's format() quotes identifiers (%I) and
    # literals such as the password (%L), so no quoting is done by hand here.
    placeholders = "".join(f", ${index}::text" for index in range(2, len(arguments) + 2))
    statement = await connection.fetchval(f"SELECT format($1{placeholders})", template, *arguments)
    await connection.execute(statement)


async def migrate(database: ServiceDatabase) -> tuple[str | None, str]:
    """The database's migrations, as its own role, for the engine its URL names."""
    try:
        return await upgrade_async(database.service, database.url)
    # CommandError: e.g. the database is at a revision this code does not know.
    except (OSError, SQLAlchemyError, CommandError) as exc:
        raise ProvisioningError(f"migrating {database.name} failed: {one_line(exc)}") from exc


def where(url: str, default: str = "localhost:5432") -> str:
    """Host and port only, for a message: the URL may carry a password."""
    netloc = urlsplit(url).netloc
    return netloc.rpartition("@")[2] or default


def one_line(exc: BaseException) -> str:
    """An error's first line, for the CLI's one-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def grant_appending(admin_url: str, database: str, table: str, roles: Sequence[str]) -> None:
    """``roles`` may connect to ``database`` and INSERT into its ``table``, nothing else
    there (the services' workers append their breakers' trips to the operations database's
    audit log). Idempotent."""
    admin = await _connect_admin(admin_url)
    try:
        for role in roles:
            await _execute(admin, "GRANT CONNECT ON DATABASE %I TO %I", database, role)
    finally:
        await admin.close()
    connection = await _connect_admin(admin_url, database=database)
    try:
        for role in roles:
            await _execute(connection, "GRANT USAGE ON SCHEMA public TO %I", role)
            await _execute(connection, f"GRANT INSERT ON {table} TO %I", role)
    except asyncpg.PostgresError as exc:
        raise ProvisioningError(
            f"granting appends to {database}.{table} failed: {one_line(exc)}"
        ) from exc
    finally:
        await connection.close()
