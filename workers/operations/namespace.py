"""A namespace of the fleet: each service's role and database, the exchanges and every
service's queues, set up together and torn down together.

    await set_up(settings)      # fleet up, the tests, the benchmarks (idempotent)
    removed = await tear_down(settings)     # fleet teardown --namespace NS --yes

Every login role has a secret of its own (``role_secrets``): ``fleet db init`` takes the one
the operator gave, or generates one and keeps it in the namespace's secrets file; teardown
forgets the secrets it kept.

AMQP cannot list queues, so tearing down removes the names the namespace's declarations
give (every service's queues and DLQs, the delay tiers of ``FLEET_RETRY_DELAYS_MS``, and
the handlers' own retry queues of before the tiers), plus any ``extra_queues`` the caller
made itself. A name that is not there is
skipped, so a namespace set up only in part is torn down all the same.

A service on MariaDB (``FLEET_ENGINES``) has its database and user there
(``db.provision_mariadb``), and on PostgreSQL only a login role of the same name and secret,
which may append to the operations database's audit log like every service's role.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from aio_pika.abc import AbstractConnection
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity

from db import provision_mariadb
from db.engine import MARIADB
from db.provision import (
    DatabaseRoles,
    ProvisionResult,
    ServiceDatabase,
    drop,
    grant_appending,
    provision,
    provision_login_roles,
)
from workers.operations import InvalidRequest, ops_db
from workers.runtime import catalog, connections, control, role_secrets, topology
from workers.runtime.service import Service
from workers.runtime.settings import Settings
from workers.runtime.worker import declare_topology

log = logging.getLogger("fleet.namespace")


# The HTTP API reads this service's database as a read-only role of its own,
# ``<namespace>_order_view_reader`` (``Settings.reader_url``), which cannot write it.
API_READS = "order_view"


def reader_role(settings: Settings, service: str = API_READS) -> str:
    """The name of the read-only role of ``service``'s database."""
    return settings.database_name(f"{service}_reader")


def _reader_keys(service: str) -> tuple[str, ...]:
    """The keys of a service's read-only roles: the view's database has the API's."""
    return (f"{service}_reader",) if service == API_READS else ()


def role_keys() -> list[str]:
    """Every login role of a namespace, by the key ``FLEET_DB_URLS`` and
    ``FLEET_DB_SECRETS`` name it with (the role is ``<namespace>_<key>``): each service's,
    the view's read-only role, the operations role."""
    keys = [key for service in catalog.SERVICES for key in (service, *_reader_keys(service))]
    return [*keys, ops_db.OPS]


def keep_secrets(settings: Settings) -> list[str]:
    """A secret for every role of the namespace: the one given, else the one kept in the
    secrets file, generated there where none is yet (idempotent). Refuses a secret given to
    a role that does not exist, and one secret for two roles. Returns the roles whose secret
    was generated now."""
    keys = role_keys()
    unknown = sorted(set(settings.db_secrets) - set(keys))
    if unknown:
        raise role_secrets.SecretsError(
            f"FLEET_DB_SECRETS names no role of the fleet: {', '.join(unknown)}"
            f" (its keys: {', '.join(keys)})"
        )
    not_given = [settings.database_name(k) for k in keys if settings.given_secret(k) is None]
    generated = role_secrets.ensure(settings.secrets_path, not_given)
    role_secrets.check_distinct({settings.database_name(k): settings.secret_for(k) for k in keys})
    return generated


def database_roles(settings: Settings) -> list[DatabaseRoles]:
    """Every database of the namespace and its login roles, by name (no secret read)."""
    return [
        DatabaseRoles(
            settings.database_name(service),
            tuple(settings.database_name(key) for key in _reader_keys(service)),
        )
        for service in catalog.SERVICES
    ] + [DatabaseRoles(settings.database_name(ops_db.OPS))]


def service_databases(settings: Settings) -> list[ServiceDatabase]:
    """Every service's database and role, and the operations database (archived dead
    letters, the audit log), as ``fleet db init`` makes them, each role with its own secret
    (``keep_secrets`` first); the view's database also has the API's read-only role."""
    keep_secrets(settings)
    return [
        ServiceDatabase(
            name=settings.database_name(service),
            readers=tuple(settings.database_name(key) for key in _reader_keys(service)),
            service=service,
            url=settings.database_url(service),
            passwords={
                settings.database_name(key): settings.secret_for(key)
                for key in (service, *_reader_keys(service))
            },
        )
        for service in catalog.SERVICES
    ] + [ops_db.database(settings)]


def on_mariadb(settings: Settings) -> list[str]:
    """The services whose database is on MariaDB. Refuses an engine given to a name that
    is no service (the operations database is on PostgreSQL, always)."""
    unknown = sorted(set(settings.engines) - set(catalog.SERVICES))
    if unknown:
        raise InvalidRequest(
            f"FLEET_ENGINES names no service of the fleet: {', '.join(unknown)}"
            f" (services: {', '.join(catalog.SERVICES)})"
        )
    return [service for service in catalog.SERVICES if settings.engine(service) == MARIADB]


async def init_databases(settings: Settings) -> list[ProvisionResult]:
    """Each service's role and database, created if missing and migrated (idempotent), on
    its engine's server; each service's role may append to the operations database's audit
    log (its worker's breaker writes its trips there), and do nothing else in it.

    MariaDB's part first: an unreachable or refusing MariaDB then leaves PostgreSQL as it
    was (the secrets file aside, which keeps the secrets generated for the next run)."""
    mariadb_services = set(on_mariadb(settings))
    databases = service_databases(settings)
    elsewhere = [db for db in databases if db.service in mariadb_services]
    results: dict[str, ProvisionResult] = {}
    if elsewhere:  # MariaDB is reached only when a service is on it
        for result in await provision_mariadb.provision(settings.mariadb_admin_url, elsewhere):
            results[result.service] = result
    results |= {
        result.service: result
        for result in await provision(
            settings.pg_admin_url, [db for db in databases if db.service not in mariadb_services]
        )
    }
    # A service on MariaDB appends to the audit log as a PostgreSQL role of its name.
    created_roles = await provision_login_roles(
        settings.pg_admin_url, {db.name: db.password(db.name) for db in elsewhere}
    )
    for db in elsewhere:
        if db.name in created_roles:
            results[db.service] = dataclasses.replace(results[db.service], created_role=True)
    await grant_appending(
        settings.pg_admin_url,
        settings.database_name(ops_db.OPS),
        "audit",
        [settings.database_name(service) for service in catalog.SERVICES],
    )
    return [results[db.service] for db in databases]


async def set_up(settings: Settings) -> list[ProvisionResult]:
    """Databases and roles, then the exchanges and every service's queues."""
    results = await init_databases(settings)
    await declare_topology(settings, catalog.load_all())
    return results


def queue_names(settings: Settings, services: Iterable[Service]) -> list[str]:
    """The queues the namespace's declarations give: each handler's queue and its DLQ, the
    delay tiers, and the DLQ of unroutable messages."""
    names = [
        name
        for service in services
        for spec in service.queue_specs(settings.namespace)
        for name in topology.queues_of(spec)
    ]
    return [*names, *topology.delay_tiers(settings), topology.unrouted_queue(settings.namespace)]


def legacy_queue_names(settings: Settings, services: Iterable[Service]) -> list[str]:
    """The handlers' own retry queues, which namespaces had before the shared delay tiers."""
    return [
        name
        for service in services
        for spec in service.queue_specs(settings.namespace)
        for name in topology.legacy_retry_queues(settings, spec)
    ]


@dataclass
class Removed:
    namespace: str
    queues: list[str] = field(default_factory=list)
    exchanges: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)  # each with its role; read-only roles
    secrets: list[str] = field(default_factory=list)  # roles whose kept secret was forgotten


async def tear_down(
    settings: Settings,
    *,
    extra_services: Iterable[Service] = (),
    extra_queues: Iterable[str] = (),
) -> Removed:
    """Remove the namespace's queues, exchanges, databases and roles; what did not exist is
    skipped. ``extra_services``: services declared outside the catalog (the tests' probes),
    whose queues go too; ``extra_queues``: queues the caller declared by itself."""
    removed = Removed(settings.namespace)
    mariadb_names = {settings.database_name(service) for service in on_mariadb(settings)}
    services = [*catalog.load_all(), *extra_services]
    queues = [*queue_names(settings, services), *legacy_queue_names(settings, services)]
    # The markers of paused handlers (``fleet pause``), which exist only while paused.
    queues += [
        control.pause_marker(spec.name)
        for service in services
        for spec in service.queue_specs(settings.namespace)
    ]
    # And those of tripped breakers (``workers.runtime.breaker``).
    queues += [control.trip_marker(settings.namespace, service.name) for service in services]
    connection = await connections.connect(settings.broker_urls)
    try:
        present = await topology.queue_states(connection, dict.fromkeys([*queues, *extra_queues]))
        for name, state in present.items():
            if state is not None and await _delete(connection, "queue_delete", name):
                removed.queues.append(name)
        for name in topology.exchanges(settings):
            if await _exchange_exists(connection, name) and await _delete(
                connection, "exchange_delete", name
            ):
                removed.exchanges.append(name)
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
    # The operations database first: the services' roles hold a privilege in it (they
    # append to its audit log), and a role is dropped only once nothing depends on it.
    # A service on MariaDB has only that role on PostgreSQL: dropping its "database" there
    # drops the role. MariaDB is reached only when a service is on it.
    ops = settings.database_name(ops_db.OPS)
    databases = sorted(database_roles(settings), key=lambda roles: roles.name != ops)
    dropped = await drop(settings.pg_admin_url, databases)
    if mariadb_names:
        elsewhere = [roles for roles in databases if roles.name in mariadb_names]
        dropped += await provision_mariadb.drop(settings.mariadb_admin_url, elsewhere)
    removed.databases = list(dict.fromkeys(dropped))
    # Last: with the roles gone, their secrets open nothing; kept, a namespace made again
    # under the same name would reuse them.
    removed.secrets = role_secrets.forget(
        settings.secrets_path, [settings.database_name(key) for key in role_keys()]
    )
    return removed


async def _exchange_exists(connection: AbstractConnection, name: str) -> bool:
    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.get_exchange(name, ensure=True)  # a passive declare
    except ChannelNotFoundEntity:
        return False  # and the channel is closed
    await channel.close()
    return True


async def _delete(connection: AbstractConnection, operation: str, name: str) -> bool:
    # A channel each: a refused operation closes its channel, not the others'.
    try:
        channel = await connection.channel(publisher_confirms=False)
        try:
            await getattr(channel, operation)(name)
        finally:
            if not channel.is_closed:
                await channel.close()
    except AMQPError as error:  # keep going: remove as much as possible, and say what stays
        log.warning("%s %s: %s", operation, name, error)
        return False
    return True
