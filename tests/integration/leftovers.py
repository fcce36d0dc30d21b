"""What a test run left behind of the namespaces it made: queues, exchanges, databases, roles.

The broker is listed with ``rabbitmqctl`` where it answers (on the broker's own machine, as
here and on CI), so that a queue no declaration knows of is found too; elsewhere every name
the namespace's declarations give is looked for with passive declares.
"""

from __future__ import annotations

import asyncio
import shutil
from urllib.parse import unquote, urlsplit

import aio_pika
import asyncpg

from db.engine import asyncpg_url
from workers.operations import namespace
from workers.runtime import catalog, topology
from workers.runtime.settings import Settings

# Every namespace the integration tests made in this run (tests.integration.conftest).
created_namespaces: list[Settings] = []


async def leftovers(namespaces: list[Settings]) -> list[str]:
    if not namespaces:
        return []
    found = await _broker_leftovers(namespaces)
    found += await _database_leftovers(namespaces)
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
    connection = await aio_pika.connect(namespaces[0].amqp_url)
    try:
        for settings in namespaces:
            names = namespace.queue_names(settings, catalog.load_all())
            states = await topology.queue_states(connection, names)
            found += [f"queue {name}" for name, state in states.items() if state is not None]
    finally:
        await connection.close()
    return found


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
