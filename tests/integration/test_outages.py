"""Outages without dead letters: a service's database, or the broker, down for far longer
than every retry delay together, while orders of both saga styles keep coming.

The service's breaker (``workers.runtime.breaker``) stops its consuming while what it depends
on is away and resumes it after: no message is dead-lettered, every order ends (no
orchestrated saga gives up because of the outage: its step's deadline is extended while the
step's service is tripped), ``fleet verify`` passes, and the audit log has the trip and the
resume. With the breaker off, the same outage dead-letters messages: the test bites.

The server that goes down is a private one the test starts itself (``pg_server``,
``rabbit_nodes``); the inventory service alone has its database on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from contracts import OrderConfirmed
from db.provision import provision
from tests.integration import probes
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.pg_server import PrivateServer, needs_postgresql_binaries
from tests.integration.rabbit_nodes import RabbitNode, needs_rabbitmq_server, private_nodes
from tests.integration.support import Fleet, new_id, not_json, outgoing, wait_for
from tests.integration.under_fire import (
    FAULT_TOLERANT,
    OrderStream,
    every_order_ended,
    forget_namespace,
    nothing_lost,
    running_workers,
    seed,
)
from workers.operations import dead_letters, namespace, ops_db
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime import catalog, connections, control, topology
from workers.runtime.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# FAULT_TOLERANT's retry delays add up to about 12 s before a message would be
# dead-lettered; the outage lasts several times that, and several step timeouts.
OUTAGE = 45.0
STEP_TIMEOUT = 10.0
PLACE_EVERY = 0.25
PUBLISH_TIMEOUT = 30
BREAKER: dict[str, object] = {"breaker_probe_seconds": 1.0}  # probe often: a short test


@dataclass
class InventoryApart:
    """A namespace whose inventory database lives on a PostgreSQL server of its own."""

    fleet: Fleet
    server: PrivateServer


@pytest.fixture
async def inventory_apart(
    request: pytest.FixtureRequest, server_urls: tuple[str, str]
) -> AsyncIterator[InventoryApart]:
    """Every service on the shared PostgreSQL but inventory, on a private server; the
    breaker settings the test's parameter gives."""
    amqp_url, pg_admin_url = server_urls
    overrides: dict[str, object] = getattr(request, "param", {})
    async with PrivateServer() as server:
        made = namespace_settings((amqp_url, pg_admin_url), **FAULT_TOLERANT, **overrides)
        role = made.database_name("inventory")
        settings = made.model_copy(
            update={"db_urls": {"inventory": f"postgresql://{role}@127.0.0.1:{server.port}/{role}"}}
        )
        try:
            # Its role and database on the private server first: ``fleet db init`` migrates
            # each service's database where the service's URL says.
            [inventory] = [
                database
                for database in namespace.service_databases(settings)
                if database.service == "inventory"
            ]
            await provision(server.admin_url, [inventory])
            sections = [OrchestratorSettings(step_timeout_seconds=STEP_TIMEOUT)]
            async with namespaced_fleet(settings, sections) as fleet:
                await seed(settings)
                yield InventoryApart(fleet, server)
        finally:
            await forget_namespace(made)  # (as the session's list of namespaces has it)


def order_stream(settings: Settings) -> OrderStream:
    return OrderStream(settings, every=PLACE_EVERY, publish_timeout=PUBLISH_TIMEOUT)


async def consumers(settings: Settings, queue: str) -> int:
    connection = await connections.connect(settings.broker_urls)
    try:
        state = (await topology.queue_states(connection, [queue]))[queue]
    finally:
        await connection.close()
    assert state is not None, f"{queue} does not exist"
    return state.consumers


async def tripped(settings: Settings) -> dict[str, dict[str, object]]:
    connection = await connections.connect(settings.broker_urls)
    try:
        return await control.tripped_services(connection, settings.namespace, catalog.SERVICES)
    finally:
        await connection.close()


async def breaker_history(settings: Settings) -> list[tuple[str, str, str]]:
    """The breaker's lines of the audit log, oldest first: (operator, action, target)."""
    entries = await ops_db.history(settings, action="breaker", limit=100)
    return [(e.operator, e.action, e.target) for e in reversed(entries)]


@needs_postgresql_binaries
@pytest.mark.parametrize("inventory_apart", [BREAKER], indirect=True)
async def test_a_service_database_down_for_minutes_makes_no_dead_letter(
    inventory_apart: InventoryApart,
) -> None:
    fleet, server = inventory_apart.fleet, inventory_apart.server
    settings = fleet.settings
    ns = settings.namespace
    release = f"{ns}.inventory.release_stock"
    reserve = f"{ns}.inventory.reserve_stock"
    async with running_workers(fleet) as workers:
        inventory = workers["inventory"]
        async with order_stream(settings) as stream:
            # An operator's pause, before the outage, must outlive the breaker's resume.
            code, output = await fleet.cli("pause", "inventory.release_stock")
            assert code == 0, output
            await inventory.wait_for_line(f"{release}: paused by an operator")
            await stream.wait_placed(20)

            outage = asyncio.create_task(server.restart("fast", down_for=OUTAGE))
            await inventory.wait_for_line("database unreachable since", timeout=OUTAGE)
            placed_in_outage = len(stream.placed)
            # Seen: the trip marker, fleet status, and fleet resume refused with the reason.

            async def marked() -> bool:  # the marker goes up right after the line
                return "inventory" in await tripped(settings)

            await wait_for(marked, timeout=10)
            assert await consumers(settings, reserve) == 0
            code, output = await fleet.cli("status")
            assert code == 1, output
            assert f"{reserve}: paused (auto: database unreachable since" in output, output
            code, output = await fleet.cli("resume", "inventory")
            assert code == 2, output
            assert "inventory is paused automatically: database unreachable since" in output, output
            await outage

            await inventory.wait_for_line("resumed at full speed", timeout=120)
            assert await consumers(settings, reserve) == 1
            assert await consumers(settings, release) == 0, (
                "the breaker resumed an operator's pause"
            )
            assert "inventory" not in await tripped(settings)
            code, output = await fleet.cli("resume", "inventory.release_stock")
            assert code == 0, output
            await stream.wait_placed(len(stream.placed) + 20)
            placed_during = len(stream.placed) - placed_in_outage

        # The workers still running: every order placed ends, nothing is dead-lettered.
        await every_order_ended(settings, stream.placed, timeout=240)
        await nothing_lost(settings)
    # One line when it tripped and one when it resumed, not one per message.
    assert inventory.count("database unreachable since") == 1, inventory.lines[-40:]
    assert inventory.count("resuming one delivery at a time") == 1, inventory.lines[-40:]
    orchestrator = workers["orchestrator"]
    assert orchestrator.count("deadline(s) extended: inventory") > 0, "no deadline was due"
    timed_out = [line for line in orchestrator.lines if "timed out" in line]
    breaker = [line for line in inventory.lines if "fleet.breaker" in line]
    assert not timed_out, "\n".join([*timed_out[:3], *timed_out[-3:], *breaker])
    history = await breaker_history(settings)
    assert history == [
        ("fleet", "breaker.trip", "inventory"),
        ("fleet", "breaker.resume", "inventory"),
    ], history
    print(
        f"database outage of {OUTAGE:.0f} s: {len(stream.placed)} orders"
        f" ({placed_during} placed from the trip on), no dead letter"
    )


@needs_postgresql_binaries
@pytest.mark.parametrize("inventory_apart", [{"breaker_enabled": False}], indirect=True)
async def test_without_the_breaker_the_same_outage_dead_letters(
    inventory_apart: InventoryApart,
) -> None:
    fleet, server = inventory_apart.fleet, inventory_apart.server
    settings = fleet.settings
    queues = dead_letters.dead_letter_queues(settings, catalog.load_all())

    async def some_dead_letters() -> bool:
        return sum((d or 0) for d in (await dead_letters.depths(settings, queues)).values()) > 0

    async with running_workers(fleet), order_stream(settings) as stream:
        await stream.wait_placed(10)
        outage = asyncio.create_task(server.restart("fast", down_for=OUTAGE))
        try:
            await wait_for(some_dead_letters, timeout=OUTAGE)
        finally:
            await outage
    assert await breaker_history(settings) == []


# --- The broker down ------------------------------------------------------------------


@pytest.fixture
async def private_broker(
    server_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[RabbitNode, Fleet]]:
    """A RabbitMQ node of the test's own (and a PostgreSQL server: a fleet holds tens of
    connections, the shared server's 100 are shared), a namespace on them."""
    async with (
        PrivateServer() as databases,
        private_nodes(tmp_path_factory.mktemp("rabbit")) as nodes,
    ):
        node = await nodes.start("outage")
        settings = namespace_settings(
            (node.amqp_url, databases.admin_url), **FAULT_TOLERANT, **BREAKER
        )
        sections = [OrchestratorSettings(step_timeout_seconds=STEP_TIMEOUT)]
        try:
            async with namespaced_fleet(settings, sections) as fleet:
                await seed(settings)
                yield node, fleet
        finally:
            await forget_namespace(settings, broker=node)


@needs_rabbitmq_server
@needs_postgresql_binaries
async def test_the_broker_down_for_minutes_makes_no_dead_letter_and_no_saga_gives_up(
    private_broker: tuple[RabbitNode, Fleet],
) -> None:
    node, fleet = private_broker
    settings = fleet.settings
    async with running_workers(fleet) as workers:
        async with order_stream(settings) as stream:
            await stream.wait_placed(20)
            await node.stop_app()  # every connection closed, nothing answers
            await asyncio.sleep(OUTAGE)
            await node.start_app()
            for worker in workers.values():
                await worker.wait_for_line("broker unreachable since", timeout=60)
            await workers["inventory"].wait_for_line("resuming one delivery", timeout=120)
            await stream.wait_placed(len(stream.placed) + 20, timeout=120)
        # The workers still running: every order placed ends, nothing is dead-lettered.
        await every_order_ended(settings, stream.placed, timeout=240)
        await nothing_lost(settings)
    orchestrator = workers["orchestrator"]
    assert orchestrator.count("timed out") == 0, [
        line for line in orchestrator.lines if "timed out" in line
    ][:5]
    history = await breaker_history(settings)
    for service in catalog.SERVICES:
        assert ("fleet", "breaker.trip", service) in history, history
        assert ("fleet", "breaker.resume", service) in history, history


# --- The breaker does not hide a bad message or a bug ---------------------------------


async def test_a_poison_message_and_a_handler_failing_while_its_database_answers_are_dead_lettered(
    fleet: Fleet,
) -> None:
    """With the breaker on: an undecodable message goes to the DLQ at once; a handler that
    fails every message with what looks like a refused connection trips nothing, since
    the probe finds its database answering: its messages take the retry and dead-letter
    path."""
    queue = f"{fleet.ns}.inventory.probe_effects"
    refused = [new_id() for _ in range(fleet.settings.breaker_failures + 2)]
    probes.script.refused.update(refused)
    async with fleet.worker(probes.probe, with_relay=False) as worker, fleet.publisher() as out:
        await out.publish(not_json(queue))
        for order_id in refused:
            await out.publish(outgoing(OrderConfirmed(order_id=order_id), queue=queue))

        async def all_dead() -> bool:
            letters = await dead_letters.browse(fleet.settings, f"{queue}.dlq", 50)
            return len(letters) >= len(refused) + 1

        await wait_for(all_dead, timeout=90)
        assert worker.breaker is not None and worker.breaker.state.status == "closed"
    letters = await dead_letters.browse(fleet.settings, f"{queue}.dlq", 50)
    mine = [letter for letter in letters if any(o.encode() in letter.body for o in refused)]
    assert len(mine) == len(refused), [letter.reason for letter in letters]
    assert all(letter.headers["x-error-type"] == "ConnectionRefusedError" for letter in mine)
    assert all(letter.headers["x-attempts"] == fleet.settings.max_attempts for letter in mine)
    assert any(letter.headers.get("x-attempts") == 1 for letter in letters if letter not in mine)
    assert await breaker_history(fleet.settings) == []
