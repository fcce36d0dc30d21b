"""The ``fleet`` command as operators use it: real processes against the real servers."""

from __future__ import annotations

import json
import signal

import pytest

from contracts import OrderConfirmed
from tests.integration import probes
from tests.integration.support import Fleet, new_id, outgoing, scalar, wait_for
from workers.runtime import catalog, topology

pytestmark = pytest.mark.integration


def probe_queue(fleet: Fleet) -> str:
    return f"{fleet.ns}.inventory.probe_effects"


async def fill_dlq(fleet: Fleet, count: int) -> list[str]:
    """``count`` messages the probe refuses for good, dead-lettered; their order ids."""
    orders = [new_id() for _ in range(count)]
    probes.script.permanent.update(orders)
    queue = probe_queue(fleet)
    dlq = topology.dead_letter_queue(queue)
    async with fleet.worker(probes.probe, with_relay=False), fleet.publisher() as publisher:
        before = await fleet.queue_depth(dlq)
        for order_id in orders:
            await publisher.publish(outgoing(OrderConfirmed(order_id=order_id), queue=queue))
        await wait_for(lambda: _depth_is(fleet, dlq, before + count))
    return orders


async def _depth_is(fleet: Fleet, queue: str, depth: int) -> bool:
    return await fleet.queue_depth(queue) == depth


async def show(fleet: Fleet, dlq: str) -> list[dict[str, object]]:
    code, output = await fleet.cli("dlq", "show", dlq, "--limit", "1000", "--json")
    assert code == 0, output
    letters: list[dict[str, object]] = json.loads(output)
    return letters


async def test_dlq_show_leaves_the_queue_exactly_as_it_was(fleet: Fleet) -> None:
    await fill_dlq(fleet, 3)
    dlq = topology.dead_letter_queue(probe_queue(fleet))
    depth = await fleet.queue_depth(dlq)
    first = await show(fleet, dlq)
    second = await show(fleet, dlq)
    assert len(first) == depth >= 3
    assert first == second  # same messages, same order, same headers
    assert await fleet.queue_depth(dlq) == depth
    assert all(
        letter["reason"] == "PermanentError: probe: this message can never succeed"
        for letter in first
    )
    code, text = await fleet.cli("dlq", "show", dlq, "--limit", "1")
    assert code == 0 and "x-error-type: PermanentError" in text and "body: {" in text


async def test_dlq_list_shows_every_dead_letter_queue_with_its_depth(fleet: Fleet) -> None:
    await fill_dlq(fleet, 1)
    code, output = await fleet.cli("dlq", "list", "--json")
    assert code == 0, output
    depths = {row["queue"]: row["depth"] for row in json.loads(output)}
    for service in catalog.load_all():
        for spec in service.queue_specs(fleet.ns):
            assert topology.dead_letter_queue(spec.name) in depths
    assert depths[topology.unrouted_queue(fleet.ns)] is not None


async def test_dlq_replay_moves_a_message_back_and_it_is_processed(fleet: Fleet) -> None:
    orders = await fill_dlq(fleet, 2)
    dlq = topology.dead_letter_queue(probe_queue(fleet))
    letters = {str(letter["body"]): letter for letter in await show(fleet, dlq)}
    chosen = next(letter for body, letter in letters.items() if orders[0] in body)
    depth = await fleet.queue_depth(dlq)
    probes.script.permanent.discard(orders[0])  # "fixed": it can succeed now

    async with fleet.worker(probes.probe, with_relay=False):
        code, output = await fleet.cli(
            "dlq", "replay", dlq, "--message-id", str(chosen["message_id"]), "--json"
        )
        assert code == 0, output
        assert json.loads(output)["replayed"] == [chosen["message_id"]]
        stock = "SELECT count(*) FROM stock WHERE sku = :sku"
        await wait_for(
            lambda: scalar(fleet.engine("inventory"), stock, sku=probes.probe_sku(orders[0]))
        )
    assert await fleet.queue_depth(dlq) == depth - 1
    remaining = [str(letter["body"]) for letter in await show(fleet, dlq)]
    assert not any(orders[0] in body for body in remaining)
    assert any(orders[1] in body for body in remaining)


async def test_dlq_replay_all_and_purge(fleet: Fleet) -> None:
    orders = await fill_dlq(fleet, 2)
    dlq = topology.dead_letter_queue(probe_queue(fleet))
    letters = await show(fleet, dlq)
    one = next(letter for letter in letters if orders[0] in str(letter["body"]))

    code, output = await fleet.cli("dlq", "purge", dlq, "--message-id", str(one["message_id"]))
    assert code == 2 and "--yes" in output  # refuses without confirmation
    code, output = await fleet.cli(
        "dlq", "purge", dlq, "--message-id", str(one["message_id"]), "--yes"
    )
    assert code == 0, output
    assert all(orders[0] not in str(letter["body"]) for letter in await show(fleet, dlq))

    # Still broken: replayed, they fail again and come back to the DLQ, never loop.
    depth = await fleet.queue_depth(dlq)
    async with fleet.worker(probes.probe, with_relay=False):
        code, output = await fleet.cli("dlq", "replay", dlq, "--all", "--json")
        assert code == 0, output
        assert len(json.loads(output)["replayed"]) == depth
        await wait_for(lambda: _depth_is(fleet, dlq, depth))
    code, output = await fleet.cli("dlq", "purge", dlq, "--all", "--yes", "--json")
    assert code == 0 and json.loads(output)["purged"] == depth
    assert await fleet.queue_depth(dlq) == 0


async def test_publish_with_a_fixed_message_id_sends_duplicates_that_apply_once(
    fleet: Fleet,
) -> None:
    order_id = new_id()
    message_id = new_id()
    data = json.dumps({"order_id": order_id})
    code, output = await fleet.cli(
        "publish",
        "order.confirmed",
        "--data",
        data,
        "--message-id",
        message_id,
        "--count",
        "3",
        "--json",
    )
    # order.confirmed goes to the events exchange; the probe queue is bound to it.
    assert code == 0, output
    assert json.loads(output)["message_ids"] == [message_id] * 3
    async with fleet.worker(probes.probe, with_relay=False):
        stock = "SELECT count(*) FROM stock WHERE sku = :sku"
        await wait_for(
            lambda: scalar(fleet.engine("inventory"), stock, sku=probes.probe_sku(order_id))
        )
        await wait_for(lambda: _depth_is(fleet, probe_queue(fleet), 0))
    assert probes.script.calls[order_id] == 1


@pytest.mark.parametrize(
    ("args", "env", "code", "words"),
    [
        (["dlq", "replay"], {}, 2, "choose the dead letters"),
        (["dlq", "replay", "x.dlq", "--all", "--message-id", "m"], {}, 2, "--all means"),
        (["dlq", "show"], {}, 2, "Missing argument"),
        (["dlq", "show", "not-a-dlq"], {}, 1, "not a dead-letter queue"),
        (["dlq", "show", "nope.dlq"], {}, 1, "no queue named nope.dlq"),
        (["publish", "order.confirmed", "--data", "{oops"], {}, 2, "--data is not JSON"),
        (["publish", "order.confirmed", "--data", "{}"], {}, 2, "order_id"),
        (["publish", "no.such.type", "--data", "{}"], {}, 2, "unknown message type"),
        (["publish", "order.confirmed", "--data", "{}", "--count", "0"], {}, 2, "--count"),
        (["worker", "nosuch"], {}, 1, "unknown service 'nosuch'"),
        (["relay", "nosuch"], {}, 2, "unknown service"),
        (["nosuch"], {}, 2, "No such command"),
        (
            ["dlq", "list"],
            {"amqp_url": "amqp://guest:guest@127.0.0.1:1/"},
            1,
            "cannot reach RabbitMQ",
        ),
        (
            ["db", "init"],
            {"pg_admin_url": "postgresql://postgres@127.0.0.1:1/postgres"},
            1,
            "cannot reach PostgreSQL",
        ),
        (["dlq", "list"], {"namespace": "Not Valid"}, 2, "namespace"),
    ],
)
async def test_bad_input_and_unreachable_servers_get_one_line_and_a_non_zero_exit(
    fleet: Fleet, args: list[str], env: dict[str, str], code: int, words: str
) -> None:
    exit_code, output = await fleet.cli(*args, **env)
    assert exit_code == code, output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("fleet: ") and words in output, output
    assert "Traceback" not in output


async def test_db_init_twice_changes_nothing(fleet: Fleet) -> None:
    code, output = await fleet.cli("db", "init", "--json")
    assert code == 0, output
    results = json.loads(output)
    assert {result["service"] for result in results} >= {"inventory", "order", "payment"}
    assert not any(result["created_role"] or result["created_database"] for result in results)
    assert all(result["migrated_from"] == result["migrated_to"] for result in results)


async def test_a_worker_stops_gracefully_on_sigterm(fleet: Fleet) -> None:
    worker = await fleet.spawn("worker", "inventory")
    await worker.wait_for_line("consuming")
    assert await worker.terminate() == 0
    assert worker.count("worker stopped") == 1


async def test_a_worker_logs_json_lines_with_json(fleet: Fleet) -> None:
    worker = await fleet.spawn("worker", "inventory", "--json")
    line = await worker.wait_for_line("consuming")
    assert await worker.terminate() == 0
    record = json.loads(line)
    assert record["logger"] == "fleet.worker" and record["level"] == "INFO"


async def test_a_worker_logs_where_each_task_waits_on_sigusr1(fleet: Fleet) -> None:
    worker = await fleet.spawn("worker", "shipping")
    await worker.wait_for_line("consuming", timeout=60)
    worker.process.send_signal(signal.SIGUSR1)
    await worker.wait_for_line("tasks (SIGUSR1)", timeout=10)
    await worker.wait_for_line("Relay.run", timeout=10)  # the relay, waiting for work
    assert await worker.terminate() == 0
