"""A namespace of the fleet: each service's role and database, the exchanges and every
service's queues, set up together and torn down together.

    await set_up(settings)      # fleet up, the tests, the benchmarks (idempotent)
    removed = await tear_down(settings)     # fleet teardown --namespace NS --yes

AMQP cannot list queues, so tearing down removes the names the namespace's declarations
give (every service's queues and DLQs, the delay tiers of ``FLEET_RETRY_DELAYS_MS``, and
the handlers' own retry queues of before the tiers), plus any ``extra_queues`` the caller
made itself. A name that is not there is
skipped, so a namespace set up only in part is torn down all the same.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from aio_pika.abc import AbstractConnection
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity

from db.provision import ProvisionResult, ServiceDatabase, drop, grant_appending, provision
from workers.operations import ops_db
from workers.runtime import catalog, connections, control, topology
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


def service_databases(settings: Settings) -> list[ServiceDatabase]:
    """Every service's database and role, and the operations database (archived dead
    letters, the audit log), as ``fleet db init`` makes them; the view's database also has
    the API's read-only role."""
    return [
        ServiceDatabase(
            service=service,
            name=settings.database_name(service),
            password=settings.db_password,
            url=settings.database_url(service),
            readers=(reader_role(settings),) if service == API_READS else (),
        )
        for service in catalog.SERVICES
    ] + [ops_db.database(settings)]


async def init_databases(settings: Settings) -> list[ProvisionResult]:
    """Each service's role and database, created if missing and migrated (idempotent);
    each service's role may append to the operations database's audit log (its worker's
    breaker writes its trips there), and do nothing else in it."""
    results = await provision(settings.pg_admin_url, service_databases(settings))
    await grant_appending(
        settings.pg_admin_url,
        settings.database_name(ops_db.OPS),
        "audit",
        [settings.database_name(service) for service in catalog.SERVICES],
    )
    return results


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
    databases = sorted(
        service_databases(settings), key=lambda database: database.service != ops_db.OPS
    )
    removed.databases = await drop(settings.pg_admin_url, databases)
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
