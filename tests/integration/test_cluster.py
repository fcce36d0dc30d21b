"""Private RabbitMQ nodes (tests.integration.rabbit_nodes) and the fleet on a cluster of
three of them, failing over when the node most clients use is stopped."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import pytest

from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.rabbit_nodes import (
    PrivateNodes,
    RabbitNode,
    needs_rabbitmq_server,
    private_nodes,
)
from tests.integration.support import Fleet, FleetProcess, wait_for
from tests.integration.under_fire import (
    FAULT_TOLERANT,
    OrderStream,
    every_order_ended,
    forget_namespace,
    seed,
    verified,
)
from workers.operations import dead_letters
from workers.runtime import catalog

pytestmark = [pytest.mark.integration, needs_rabbitmq_server]


@pytest.fixture(scope="module")
async def nodes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrivateNodes]:
    async with private_nodes(tmp_path_factory.mktemp("rabbit")) as started:
        yield started


@pytest.mark.faults
async def test_a_private_node_serves_and_leaves_nothing_behind(nodes: PrivateNodes) -> None:
    node = await nodes.start("smoke")
    assert node.port != 5672
    connection = await aio_pika.connect(node.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            "smoke", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await channel.default_exchange.publish(aio_pika.Message(b"hello"), routing_key="smoke")
        message = await queue.get(timeout=10)
        assert message is not None and message.body == b"hello"
        await message.ack()
    finally:
        await connection.close()
    listed = await node.rabbitmqctl("list_queues", "name", "type", "--no-table-headers")
    assert listed.split() == ["smoke", "quorum"]

    await node.stop()
    assert not await asyncio.to_thread(node.directory.exists)
    with pytest.raises((OSError, aio_pika.exceptions.AMQPError)):
        await aio_pika.connect(node.amqp_url, timeout=3)


# --- The fleet on a three-node cluster -------------------------------------------------

PLACE_EVERY = 0.1  # seconds between orders of the steady stream
PUBLISH_TIMEOUT = 10  # seconds for one publish: its node may go away mid-publish
AFTER_THE_STOP = 30  # orders placed, and ended, while the stopped node is down
ENDED_WITHIN = 120  # seconds for the orders placed to end


def node_of(pid: str) -> str:
    """The node of an Erlang pid as rabbitmqctl prints it: <hare0ab12@localhost.1.2.3>."""
    return pid.strip("<>").rsplit(".", 3)[0]


async def connections_per_node(node: RabbitNode) -> Counter[str]:
    listed = await node.rabbitmqctl("list_connections", "pid", "--no-table-headers")
    return Counter(node_of(pid) for pid in listed.split())


async def quorum_queues(node: RabbitNode, namespace: str) -> dict[str, tuple[str, list[str]]]:
    """The namespace's quorum queues: their leader and members, as the cluster sees them."""
    listed = await node.rabbitmqctl(
        "list_queues", "name", "type", "leader", "members", "--formatter", "json"
    )
    return {
        queue["name"]: (queue["leader"], sorted(queue["members"]))
        for queue in json.loads(listed)
        if queue["type"] == "quorum" and queue["name"].startswith(f"{namespace}.")
    }


async def classic_queue_homes(node: RabbitNode, namespace: str) -> dict[str, str]:
    """The namespace's classic queues (the DLQs) and the node each lives on."""
    listed = await node.rabbitmqctl("list_queues", "name", "type", "pid", "--no-table-headers")
    rows = [line.split() for line in listed.splitlines()]
    return {
        row[0]: node_of(row[2])
        for row in rows
        if len(row) == 3 and row[1] == "classic" and row[0].startswith(f"{namespace}.")
    }


@dataclass
class ClusterFleet:
    nodes: list[RabbitNode]
    fleet: Fleet
    workers: list[FleetProcess]


@pytest.fixture(scope="module")
async def cluster_fleet(
    nodes: PrivateNodes, server_urls: tuple[str, str]
) -> AsyncIterator[ClusterFleet]:
    """A fresh cluster of three private nodes, a namespace on it (the shared PostgreSQL for
    the databases), every service running on it as its own process.

    Every client has the three addresses, the first node first: that node has most
    connections. Quorum queues are spread over the nodes (``balanced``: each node leads
    some, all three hold a replica); the classic ones (the DLQs) live on the first node,
    through which the namespace was set up, and are unusable while it is down."""
    _, pg_admin_url = server_urls
    members = await nodes.cluster("hare", 3, config={"queue_leader_locator": "balanced"})
    first, second, third = members
    settings = namespace_settings(
        (first.amqp_url, pg_admin_url),
        amqp_urls=[second.amqp_url, third.amqp_url],
        **FAULT_TOLERANT,
    )
    try:
        async with namespaced_fleet(settings) as fleet:
            await seed(settings)
            workers = []
            for service in catalog.SERVICES:
                worker = await fleet.spawn("worker", service)
                await worker.wait_for_line("consuming", timeout=60)
                workers.append(worker)
            yield ClusterFleet(members, fleet, workers)
            for node in members:  # a test that failed midway may have left one stopped
                if not node.running:
                    await node.start()
            for service, worker in zip(catalog.SERVICES, workers, strict=True):
                code = await worker.terminate(timeout=60)
                assert code == 0, f"{service} exited {code}:\n" + "\n".join(worker.lines[-30:])
    finally:
        await forget_namespace(settings, broker=second)


@pytest.mark.cluster
async def test_the_fleet_fails_over_when_a_cluster_node_stops_and_loses_nothing(
    cluster_fleet: ClusterFleet,
) -> None:
    first, second, third = cluster_fleet.nodes
    fleet = cluster_fleet.fleet
    clients = fleet.settings  # every address, the first node first
    everyone = sorted(node.node for node in cluster_fleet.nodes)

    queues = await quorum_queues(second, clients.namespace)
    assert queues, "no quorum queue in the namespace"
    assert all(members == everyone for _, members in queues.values()), queues
    led_by_first = [name for name, (leader, _) in queues.items() if leader == first.node]
    assert led_by_first, "the stopped node would lead no quorum queue"
    homes = await classic_queue_homes(second, clients.namespace)
    assert homes and set(homes.values()) == {first.node}, homes  # the DLQs go down with it

    async with OrderStream(clients, every=PLACE_EVERY, publish_timeout=PUBLISH_TIMEOUT) as stream:
        await stream.wait_placed(20)
        busiest, _ = (await connections_per_node(second)).most_common(1)[0]
        assert busiest == first.node, f"most clients are on {busiest}, not on {first.node}"

        await first.stop(keep_data=True)
        assert sorted(await second.running_nodes()) == sorted([second.node, third.node])
        stopped_at = len(stream.placed)
        # Publishing goes on, and so does consuming: orders placed with the node gone end.
        await stream.wait_placed(stopped_at + AFTER_THE_STOP, timeout=120)
        try:
            await every_order_ended(clients, stream.placed[stopped_at:], timeout=ENDED_WITHIN)
        except AssertionError as stuck:  # what the queues and the workers say, to find why
            raise AssertionError(f"{stuck}\n{await _whereabouts(cluster_fleet)}") from None
        after = await quorum_queues(second, clients.namespace)
        assert not any(leader == first.node for leader, _ in after.values())
        assert all(members == everyone for _, members in after.values())  # still 3 replicas
        assert first.node not in await connections_per_node(second)

        await first.start()
        await wait_for(lambda: _running(second, everyone), timeout=60)
        await stream.wait_placed(len(stream.placed) + 10)

    await every_order_ended(clients, stream.placed, timeout=ENDED_WITHIN)
    await verified(clients)
    code, output = await fleet.cli("verify")
    assert code == 0, output
    queues_now = dead_letters.dead_letter_queues(clients, catalog.load_all())
    depths = await dead_letters.depths(clients, queues_now)
    assert not any(depths.values()), f"dead letters: {depths}"
    reconnected = [w for w in cluster_fleet.workers if w.process.returncode is None]
    assert len(reconnected) == len(catalog.SERVICES), "a worker died with its node"
    print(
        f"cluster: {len(stream.placed)} orders, {stream.failed_publishes} publishes sent again,"
        f" {len(led_by_first)} of {len(queues)} quorum queues re-elected a leader"
    )


async def _whereabouts(cluster_fleet: ClusterFleet) -> str:
    """The namespace's queues (ready, unacked, consumers) and each worker's last lines."""
    namespace = cluster_fleet.fleet.settings.namespace
    running = next(node for node in cluster_fleet.nodes if node.running)
    listed = await running.rabbitmqctl(
        "list_queues",
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "--no-table-headers",
    )
    queues = [line for line in listed.splitlines() if line.startswith(f"{namespace}.")]
    for worker in cluster_fleet.workers:  # every task's stack in its log (task_dump)
        if worker.process.returncode is None:
            worker.process.send_signal(signal.SIGUSR1)
    await asyncio.sleep(2)
    # A worker's last lines but the duplicates it skipped (after a failover, those are
    # most of them and say nothing of why it stopped).
    tails = [
        f"--- {service}:\n"
        + "\n".join(
            [line for line in worker.lines if "acknowledged and skipped" not in line][-150:]
        )
        for service, worker in zip(catalog.SERVICES, cluster_fleet.workers, strict=True)
    ]
    return "queues (ready, unacked, consumers):\n" + "\n".join(queues) + "\n" + "\n".join(tails)


async def _running(node: RabbitNode, everyone: list[str]) -> bool:
    return sorted(await node.running_nodes()) == everyone


def _telling(lines: list[str]) -> list[str]:
    return [line for line in lines if "acknowledged and skipped" not in line]
