"""What a test run left behind of the namespaces it made: queues, exchanges, databases, roles;
and whether the broker is still healthy once they are gone.

The broker is listed with ``rabbitmqctl`` where it answers (on the broker's own machine, as
here and on CI), so that a queue no declaration knows of is found too (pause markers
``<queue>.paused``, the ``<ns>.control`` exchange, anything named ``<ns>.``); elsewhere every
name the namespace's declarations give is looked for with passive declares. Databases and
roles are every one named ``<ns>_...``: the services', the operations ``<ns>_ops``, the API's
read-only ``<ns>_order_view_reader``; on MariaDB too, databases and users named ``<ns>_...``
(a service on MariaDB, ``FLEET_ENGINES``). Secrets are those the namespace's secrets file still
keeps for its roles.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from urllib.parse import unquote, urlsplit

import aio_pika
import asyncpg
from aiormq.exceptions import ChannelNotFoundEntity

from db import provision_mariadb
from db.engine import asyncpg_url
from db.provision import ProvisioningError
from workers.operations import namespace
from workers.runtime import catalog, control, role_secrets, topology
from workers.runtime.settings import Settings

# The session's last check waits this long at most for each of its two steps.
HEALTH_TIMEOUT = 10.0

# Every namespace the integration tests made in this run (tests.integration.conftest).
created_namespaces: list[Settings] = []


async def leftovers(namespaces: list[Settings]) -> list[str]:
    if not namespaces:
        return []
    found = await _broker_leftovers(namespaces)
    found += await _database_leftovers(namespaces)
    found += await _mariadb_leftovers(namespaces)
    found += _secret_leftovers(namespaces)
    return found


def _secret_leftovers(namespaces: list[Settings]) -> list[str]:
    found = []
    for settings in namespaces:
        prefix = f"{settings.namespace}_"
        kept = role_secrets.kept_roles(settings.secrets_path)
        found += [f"secret {role}" for role in kept if role.startswith(prefix)]
    return found


async def _rabbitmqctl(*arguments: str) -> list[str] | None:
    """The lines ``rabbitmqctl`` prints, or None when it cannot answer here."""
    if shutil.which("rabbitmqctl") is None:
        return None
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *arguments,
        "--no-table-headers",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        return None
    return [line.strip() for line in output.decode().splitlines() if line.strip()]


async def _broker_leftovers(namespaces: list[Settings]) -> list[str]:
    vhost = unquote(urlsplit(namespaces[0].amqp_url).path.lstrip("/")) or "/"
    queues = await _rabbitmqctl("list_queues", "-p", vhost, "name")
    exchanges = await _rabbitmqctl("list_exchanges", "-p", vhost, "name")
    prefixes = tuple(f"{settings.namespace}." for settings in namespaces)
    if queues is not None and exchanges is not None:
        return [f"queue {name}" for name in queues if name.startswith(prefixes)] + [
            f"exchange {name}" for name in exchanges if name.startswith(prefixes)
        ]
    found = []
    services = catalog.load_all()
    connection = await aio_pika.connect(namespaces[0].amqp_url)
    try:
        for settings in namespaces:
            names = [
                *namespace.queue_names(settings, services),
                *namespace.legacy_queue_names(settings, services),
                *(
                    control.pause_marker(spec.name)
                    for service in services
                    for spec in service.queue_specs(settings.namespace)
                ),
                *(control.trip_marker(settings.namespace, service.name) for service in services),
            ]
            states = await topology.queue_states(connection, names)
            found += [f"queue {name}" for name, state in states.items() if state is not None]
            for name in topology.exchanges(settings):
                if await _exchange_exists(connection, name):
                    found.append(f"exchange {name}")
    finally:
        await connection.close()
    return found


async def _exchange_exists(connection: aio_pika.abc.AbstractConnection, name: str) -> bool:
    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.get_exchange(name, ensure=True)  # a passive declare
    except ChannelNotFoundEntity:
        return False  # and the channel is closed
    await channel.close()
    return True


async def _database_leftovers(namespaces: list[Settings]) -> list[str]:
    connection = await asyncpg.connect(asyncpg_url(namespaces[0].pg_admin_url))
    try:
        found = []
        for settings in namespaces:
            pattern = f"{settings.namespace}\\_%"  # _ is a wildcard in LIKE
            for kind, sql in (
                ("database", "SELECT datname FROM pg_database WHERE datname LIKE $1"),
                ("role", "SELECT rolname FROM pg_roles WHERE rolname LIKE $1"),
            ):
                found += [f"{kind} {row[0]}" for row in await connection.fetch(sql, pattern)]
        return found
    finally:
        await connection.close()


async def _mariadb_leftovers(namespaces: list[Settings]) -> list[str]:
    """Databases and users named ``<ns>_...`` on each MariaDB server the namespaces name. A
    server that does not answer is skipped: where MariaDB does not run (or a test gave an
    unreachable address on purpose), nothing was made on it."""
    found = []
    for admin_url in dict.fromkeys(settings.mariadb_admin_url for settings in namespaces):
        on_it = [s for s in namespaces if s.mariadb_admin_url == admin_url]
        try:
            connection = await provision_mariadb.connect_admin(admin_url)
        except ProvisioningError:
            continue
        try:
            async with connection.cursor() as cursor:
                for settings in on_it:
                    pattern = f"{settings.namespace}\\_%"  # _ is a wildcard in LIKE
                    await cursor.execute(
                        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"
                        " WHERE SCHEMA_NAME LIKE %s",
                        (pattern,),
                    )
                    found += [f"mariadb database {row[0]}" for row in await cursor.fetchall()]
                    await cursor.execute(
                        "SELECT User, Host FROM mysql.user WHERE User LIKE %s", (pattern,)
                    )
                    found += [f"mariadb user {row[0]}@{row[1]}" for row in await cursor.fetchall()]
        finally:
            await connection.ensure_closed()
    return found


async def broker_health(amqp_url: str) -> str | None:
    """None when the broker still works as the fleet needs it: it declares a quorum queue,
    takes a persistent message into it with a publisher confirm and delivers it to a
    consumer, each within seconds; else what failed. The queue is deleted either way."""
    queue_name = f"fleet-tests.health.{secrets.token_hex(4)}"
    body = secrets.token_bytes(16)
    step = "to accept a connection"
    problem = None
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            connection = await aio_pika.connect(amqp_url)
            try:
                channel = await connection.channel(publisher_confirms=True)
                step = "to declare a quorum queue"
                queue = await channel.declare_queue(
                    queue_name, durable=True, arguments={"x-queue-type": "quorum"}
                )
                step = "to confirm a persistent message"
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue_name,
                    mandatory=True,
                )
                step = "to deliver the message to a consumer"
                async with queue.iterator() as deliveries:
                    async for delivery in deliveries:
                        await delivery.ack()
                        if delivery.body == body:
                            break
            finally:
                await connection.close()
    except (Exception, TimeoutError) as error:
        problem = f"the broker failed {step}: {type(error).__name__}: {error}"
    # On a connection of its own: the probe's may be the broken thing.
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            connection = await aio_pika.connect(amqp_url)
            try:
                channel = await connection.channel()
                await channel.queue_delete(queue_name)
            finally:
                await connection.close()
    except (Exception, TimeoutError) as error:
        problem = problem or f"the broker failed to delete a queue: {type(error).__name__}: {error}"
    return problem
