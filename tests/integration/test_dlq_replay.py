"""``fleet dlq replay``, ``edit`` and ``pending`` on the real servers: a group replayed ten
at a time at a rate, nothing twice; what fails during a run is not part of it; a run
killed for real and started again; ``--to``; an invalid order fixed by an edit and
processed, an invalid edit refused; replays followed until applied or failed again."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from contracts import Envelope, OrderConfirmed, OutgoingMessage, RejectOrder, ReserveStock
from contracts.routing import commands_exchange
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.faults import cut_broker_connections, needs_rabbitmqctl
from tests.integration.support import Fleet, FleetProcess, new_id, outgoing, wait_for
from workers.operations import dead_letters, ops_db, orders, replays
from workers.runtime import catalog

pytestmark = pytest.mark.integration

INVALID_BODIES = 25  # undecodable reserve_stock commands: the group replayed ten at a time
UNKNOWN_VERSIONS = 3  # in the same DLQ, another group: moved aside, never replayed
UNHANDLED = 10  # order.confirmed sent to charge_payment: the group of the killed run
NEVER_PLACED = 4  # rejections of orders never placed: they fail again when replayed
CUT_RUN = 12  # letters of a run whose broker connection is cut midway


def not_json(queue: str) -> OutgoingMessage:
    envelope = Envelope.new(ReserveStock.TYPE, ReserveStock.VERSION, "tests", new_id())
    return OutgoingMessage.of(envelope, b"{not json", exchange="", routing_key=queue)


def unknown_version(queue: str) -> OutgoingMessage:
    envelope = Envelope.new(ReserveStock.TYPE, 99, "tests", new_id())
    return OutgoingMessage.of(envelope, b"{}", exchange="", routing_key=queue)


class Failed:
    """The module's fleet and its dead letters' queues and groups."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        ns = fleet.ns
        self.reserve = f"{ns}.inventory.reserve_stock"
        self.charge = f"{ns}.payment.charge_payment"
        self.reject = f"{ns}.order.reject_order"
        self.place = f"{ns}.order.place_order"
        self.groups: dict[str, str] = {}  # kind -> signature


@pytest.fixture(scope="module")
async def failed(server_urls: tuple[str, str]) -> AsyncIterator[Failed]:
    async with namespaced_fleet(namespace_settings(server_urls)) as fleet:
        made = Failed(fleet)
        bad = [not_json(made.reserve) for _ in range(INVALID_BODIES)]
        versions = [unknown_version(made.reserve) for _ in range(UNKNOWN_VERSIONS)]
        # The other group's letters in between, so that a group replay passes them.
        reserve = bad[:10] + versions[:1] + bad[10:20] + versions[1:2] + bad[20:] + versions[2:]
        messages = (
            reserve
            + [
                outgoing(OrderConfirmed(order_id=new_id()), queue=made.charge)
                for _ in range(UNHANDLED)
            ]
            + [
                outgoing(RejectOrder(order_id=new_id(), reason="never placed"), queue=made.reject)
                for _ in range(NEVER_PLACED)
            ]
        )
        async with fleet.publisher() as publisher:
            await publisher.publish_many(messages)
        expected = {
            f"{made.reserve}.dlq": INVALID_BODIES + UNKNOWN_VERSIONS,
            f"{made.charge}.dlq": UNHANDLED,
            f"{made.reject}.dlq": NEVER_PLACED,
        }
        async with (
            fleet.worker(catalog.load("inventory"), with_relay=False),
            fleet.worker(catalog.load("payment"), with_relay=False),
            fleet.worker(catalog.load("order"), with_relay=False),
        ):

            async def all_dead() -> bool:
                return await dead_letters.depths(fleet.settings, list(expected)) == expected

            await wait_for(all_dead, timeout=60)
        found = await dead_letters.groups(fleet.settings)

        def group(error: str, queue: str) -> str:
            return next(g.key for g in found if error in g.key and g.queues == (f"{queue}.dlq",))

        made.groups = {
            "reserve": group("InvalidBody", made.reserve),
            "version": group("UnknownContractVersion", made.reserve),
            "charge": group("ContractError", made.charge),
            "reject": group("PermanentError", made.reject),
        }
        yield made


async def take_all(fleet: Fleet, queue: str) -> list[str]:
    """The message ids of everything in ``queue``, taken for good (no worker reads it)."""
    connection = await aio_pika.connect(fleet.settings.amqp_url)
    ids: list[str] = []
    try:
        channel = await connection.channel()
        source = await channel.declare_queue(queue, passive=True)
        while (message := await source.get(no_ack=False, fail=False)) is not None:
            ids.append(str(message.message_id))
            await message.ack()
    finally:
        await connection.close()
    return ids


async def letter_ids(fleet: Fleet, dlq: str) -> list[str]:
    return [
        str(letter.message_id) for letter in await dead_letters.browse(fleet.settings, dlq, 1000)
    ]


async def recorded(fleet: Fleet, from_queue: str) -> int:
    async with ops_db.connect(fleet.settings) as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM replays WHERE from_queue = $1", from_queue
        )
    return count


async def cli(fleet: Fleet, *args: str) -> tuple[int, str]:
    return await fleet.cli(*args)


async def spawn(
    fleet: Fleet, *args: str, environment: dict[str, str] | None = None
) -> FleetProcess:
    return await fleet.spawn(*args, environment=environment)


def answer(output: str) -> Any:
    """The JSON a command printed (after any log lines)."""
    return json.loads(output[output.index("{") :])


async def finished(handle: FleetProcess) -> tuple[int, str]:
    code = await asyncio.wait_for(handle.process.wait(), 60)
    assert handle.reader is not None
    await handle.reader
    return code, "\n".join(handle.lines)


async def test_a_dry_run_says_what_it_would_replay_and_changes_nothing(failed: Failed) -> None:
    fleet = failed.fleet
    dlq = f"{failed.reserve}.dlq"
    before = await letter_ids(fleet, dlq)
    code, output = await cli(
        fleet,
        "dlq",
        "replay",
        "--group",
        failed.groups["reserve"],
        "--limit",
        "3",
        "--dry-run",
        "--json",
    )
    assert code == 0, output
    report = answer(output)
    assert report["dry_run"] is True and len(report["replayed"]) == 3
    assert set(report["replayed"]) <= set(before)
    assert await letter_ids(fleet, dlq) == before  # same letters, same order
    assert await fleet.queue_depth(failed.reserve) == 0
    assert await recorded(fleet, dlq) == 0


async def test_a_group_replay_with_a_limit_and_a_rate_takes_ten_then_the_next_ten(
    failed: Failed,
) -> None:
    fleet = failed.fleet
    dlq = f"{failed.reserve}.dlq"
    group = failed.groups["reserve"]
    runs: list[list[str]] = []
    for _ in range(2):
        code, output = await cli(
            fleet, "dlq", "replay", "--group", group, "--limit", "10", "--rate", "20", "--json"
        )
        assert code == 0, output
        report = answer(output)
        assert len(report["replayed"]) == 10 and report["skipped"] == []
        assert list(report["queues"]) == [dlq]
        # What reached the handler's queue (its worker is not running): exactly these.
        assert sorted(await take_all(fleet, failed.reserve)) == sorted(report["replayed"])
        runs.append(report["replayed"])
    assert not set(runs[0]) & set(runs[1])  # the next ten: nothing replayed twice
    left = await dead_letters.browse(fleet.settings, dlq, 1000)
    assert Counter(letter.signature for letter in left) == {
        group: INVALID_BODIES - 20,
        failed.groups["version"]: UNKNOWN_VERSIONS,
    }
    assert await recorded(fleet, dlq) == 20


async def test_to_sends_to_another_queue_which_must_exist(failed: Failed) -> None:
    fleet = failed.fleet
    dlq = f"{failed.reserve}.dlq"
    other = f"{fleet.ns}.inventory.release_stock"
    group = failed.groups["reserve"]
    code, output = await cli(fleet, "dlq", "replay", "--group", group, "--to", "nosuch.queue")
    assert code == 1 and "no queue named nosuch.queue" in output, output
    code, output = await cli(fleet, "dlq", "replay", "--group", group, "--to", other, "--json")
    assert code == 0, output
    report = answer(output)
    assert len(report["replayed"]) == INVALID_BODIES - 20 and report["to"] == other
    assert report["moved_aside"] >= UNKNOWN_VERSIONS
    assert sorted(await take_all(fleet, other)) == sorted(report["replayed"])
    assert await fleet.queue_depth(failed.reserve) == 0
    left = await dead_letters.browse(fleet.settings, dlq, 1000)
    assert {letter.signature for letter in left} == {failed.groups["version"]}


async def test_a_letter_recorded_by_an_interrupted_run_is_removed_not_sent_again(
    failed: Failed,
) -> None:
    """A run killed after recording a letter's replay, before its ack, left it in the DLQ:
    the next run acks it and does not send it again."""
    fleet = failed.fleet
    dlq = f"{failed.reserve}.dlq"
    chosen = (await dead_letters.browse(fleet.settings, dlq, 1))[0]
    async with ops_db.connect(fleet.settings) as conn:
        await conn.execute(
            "INSERT INTO replays (letter_key, message_id, from_queue, to_queue, run_id)"
            " VALUES ($1, $2, $3, $4, 'interrupted')",
            replays.letter_key(chosen),
            chosen.message_id,
            dlq,
            failed.reserve,
        )
    selection = dead_letters.Selection(queue=dlq, message_id=chosen.message_id)
    report = await replays.replay(fleet.settings, selection, operator="tests")
    assert report.replayed == [] and report.skipped == [chosen.message_id]
    assert await fleet.queue_depth(failed.reserve) == 0  # not sent
    assert chosen.message_id not in await letter_ids(fleet, dlq)  # removed
    assert len(await letter_ids(fleet, dlq)) == UNKNOWN_VERSIONS - 1


async def test_a_run_killed_midway_and_run_again_replays_every_letter_exactly_once(
    failed: Failed,
) -> None:
    fleet = failed.fleet
    dlq = f"{failed.charge}.dlq"
    letters = await letter_ids(fleet, dlq)
    assert len(letters) == UNHANDLED
    group = failed.groups["charge"]
    # Four a second, four at a time: killed after the first chunk is recorded.
    run = await spawn(fleet, "dlq", "replay", "--group", group, "--rate", "4", "--json")
    await wait_for(lambda: recorded(fleet, dlq), timeout=30, interval=0.05)
    await run.kill()
    assert run.process.returncode == -9
    done_before = await recorded(fleet, dlq)
    assert 0 < done_before < UNHANDLED, "the run was not interrupted midway"
    # Its lock went with its connection: a new run starts at once.
    code, output = await cli(fleet, "dlq", "replay", "--group", group, "--json")
    assert code == 0, output
    again = answer(output)
    assert len(again["replayed"]) + len(again["skipped"]) == UNHANDLED - done_before
    copies = await take_all(fleet, failed.charge)
    assert Counter(copies) == Counter(letters)  # every letter once, none twice
    assert await fleet.queue_depth(dlq) == 0
    assert await recorded(fleet, dlq) == UNHANDLED


def dead_letter_of(queue: str, index: int) -> OutgoingMessage:
    """A dead letter as the consumer writes one, put straight into ``queue``'s DLQ."""
    return OutgoingMessage(
        exchange="",
        routing_key=f"{queue}.dlq",
        body=b"{}",
        message_id=new_id(),
        type="shipping.create_shipment",
        correlation_id=None,
        timestamp=None,
        app_id="test",
        headers={
            "x-error-type": "PermanentError",
            "x-error-message": "made by the test",
            "x-error-signature": "PermanentError at tests.made",
            "x-original-queue": queue,
            "x-failed-at": f"2026-01-01T00:00:{index:02d}+00:00",
        },
    )


@needs_rabbitmqctl
async def test_a_replay_whose_broker_connection_is_cut_goes_on_where_it_was(
    failed: Failed,
) -> None:
    fleet = failed.fleet
    queue = f"{fleet.ns}.shipping.create_shipment"  # no worker reads it here
    letters = [dead_letter_of(queue, index) for index in range(CUT_RUN)]
    async with fleet.publisher() as publisher:
        await publisher.publish_many(letters)
    dlq = f"{queue}.dlq"
    # Three a second, three at a time: cut from the broker after the first chunk.
    run = await spawn(fleet, "dlq", "replay", dlq, "--rate", "3", "--json")
    await wait_for(lambda: recorded(fleet, dlq), timeout=30, interval=0.05)
    assert await cut_broker_connections(run.process.pid, "cut by test_dlq_replay") >= 1
    code, output = await finished(run)
    assert code == 0, output
    report = answer(output)
    assert report["reconnects"] >= 1, "the cut did not reach the run"
    assert await fleet.queue_depth(dlq) == 0
    copies = await take_all(fleet, queue)
    # Every letter arrived. A cut between a publish and its confirm can send a chunk's
    # copies twice (the same message ids, which the inbox takes once), never more.
    assert set(copies) == {letter.message_id for letter in letters}
    assert len(copies) - len(set(copies)) <= 3
    assert await recorded(fleet, dlq) == CUT_RUN


async def test_what_is_dead_lettered_while_a_replay_runs_is_not_part_of_it(
    failed: Failed,
) -> None:
    fleet = failed.fleet
    dlq = f"{failed.reject}.dlq"
    first = await letter_ids(fleet, dlq)
    assert len(first) == NEVER_PLACED
    late_order = new_id()
    async with fleet.worker(catalog.load("order"), with_relay=False):
        # One a second: the run lasts several seconds; its copies fail again meanwhile.
        run = await spawn(
            fleet, "dlq", "replay", "--group", failed.groups["reject"], "--rate", "1", "--json"
        )
        await wait_for(lambda: recorded(fleet, dlq), timeout=30, interval=0.05)
        async with fleet.publisher() as publisher:
            late = outgoing(RejectOrder(order_id=late_order, reason="late"), queue=failed.reject)
            await publisher.publish(late)
        await wait_for(lambda: fleet.dead_letter(failed.reject, late_order), timeout=30)
        assert run.process.returncode is None, "the run ended before the late letter came"
        code, output = await finished(run)
        assert code == 0, output
        report = answer(output)
        assert sorted(report["replayed"]) == sorted(first)  # exactly the snapshot
        assert late.message_id not in report["replayed"]

        async def all_back() -> bool:  # the replayed copies failed again, the late one waits
            return await fleet.queue_depth(dlq) == NEVER_PLACED + 1

        await wait_for(all_back, timeout=30)
    assert late.message_id in await letter_ids(fleet, dlq)
    settled = {
        one.message_id: one.state
        for one in await replays.pending(fleet.settings)
        if one.from_queue == dlq
    }
    assert settled == {message_id: "failed" for message_id in first}


def invalid_order(order_id: str) -> dict[str, Any]:
    line = {"sku": "SKU-0001", "quantity": 0, "unit_price": {"amount": "9.90", "currency": "EUR"}}
    return {
        "idempotency_key": f"edit-{order_id}",
        "customer_id": "CUST-0001",
        "items": [line],
        "country": "DE",
        "saga": "orchestration",
        "order_id": order_id,
    }


async def test_an_edit_fixes_an_invalid_order_which_is_then_processed(
    failed: Failed, tmp_path: Path
) -> None:
    fleet = failed.fleet
    dlq = f"{failed.place}.dlq"
    order_id = new_id()
    body = invalid_order(order_id)
    envelope = Envelope.new("order.place_order", 1, "tests", order_id)
    placed = OutgoingMessage.of(
        envelope,
        json.dumps(body).encode(),
        exchange=commands_exchange(fleet.ns),
        routing_key="order.place_order",
    )
    async with fleet.worker(catalog.load("order"), with_relay=False):
        async with fleet.publisher() as publisher:
            await publisher.publish(placed)
        await wait_for(lambda: fleet.dead_letter(failed.place, order_id), timeout=30)
    assert await letter_ids(fleet, dlq) == [placed.message_id]

    # Still invalid: refused with the field named, nothing changed.
    code, output = await cli(
        fleet,
        "dlq",
        "edit",
        dlq,
        "--message-id",
        str(placed.message_id),
        "--data",
        json.dumps(body),
    )
    assert code == 2, output
    assert "not a valid order.place_order v1: items.0.quantity" in output
    assert len(output.strip().splitlines()) == 1
    # $EDITOR leaving the body as it was: nothing done either.
    unchanged = await spawn(
        fleet,
        "dlq",
        "edit",
        dlq,
        "--message-id",
        str(placed.message_id),
        environment={"EDITOR": "true"},
    )
    code, output = await finished(unchanged)
    assert code == 1 and "not changed" in output, output
    assert await letter_ids(fleet, dlq) == [placed.message_id]
    assert await fleet.queue_depth(failed.place) == 0

    # Fixed in $EDITOR (here: a copy of the fixed body over the file it opens).
    fixed = tmp_path / "fixed.json"
    body["items"][0]["quantity"] = 2
    fixed.write_text(json.dumps(body, indent=2))
    editing = await spawn(
        fleet,
        "dlq",
        "edit",
        dlq,
        "--message-id",
        str(placed.message_id),
        "--json",
        environment={"EDITOR": f"cp {fixed}"},
    )
    code, output = await finished(editing)
    assert code == 0, output
    edited = answer(output)
    assert edited["replay_of"] == placed.message_id
    assert edited["message_id"] != placed.message_id and edited["to_queue"] == failed.place
    assert await letter_ids(fleet, dlq) == []
    assert await fleet.queue_depth(failed.place) == 1

    assert await state_of(fleet, dlq) == "pending"  # its handler has not run yet
    async with fleet.worker(catalog.load("order"), with_relay=False):
        status = await wait_for(lambda: orders.order_status(fleet.settings, order_id), timeout=30)
        assert status["status"] == "PENDING", status

        async def applied() -> bool:
            return await state_of(fleet, dlq) == "applied"

        await wait_for(applied, timeout=30)
    code, output = await cli(fleet, "dlq", "pending", "--json")
    assert code == 0, output
    listed = json.loads(output)
    mine = next(p for p in listed if p["message_id"] == edited["message_id"])
    assert mine["replay_of"] == placed.message_id and mine["state"] == "applied"


async def state_of(fleet: Fleet, dlq: str) -> str | None:
    """The state ``fleet dlq pending`` gives the (one) replay from ``dlq``."""
    found = [one for one in await replays.pending(fleet.settings) if one.from_queue == dlq]
    return found[0].state if found else None


async def test_a_replay_of_a_dlq_another_action_holds_is_refused(failed: Failed) -> None:
    fleet = failed.fleet
    dlq = f"{failed.reserve}.dlq"
    before = await letter_ids(fleet, dlq)
    async with ops_db.connect(fleet.settings) as conn:  # as a replay running elsewhere holds it
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"ops:{dlq}")
        code, output = await cli(fleet, "dlq", "replay", dlq)
    assert code == 1 and f"another operator action on {dlq} is running" in output, output
    assert await letter_ids(fleet, dlq) == before


async def test_every_action_is_in_the_audit_log(failed: Failed) -> None:
    fleet = failed.fleet
    dlq = f"{failed.reserve}.dlq"
    code, output = await cli(fleet, "dlq", "purge", dlq, "--all", "--yes", "--json")
    assert code == 0, output
    lines = await ops_db.history(fleet.settings, action="dlq", limit=100)
    actions = Counter(line.action for line in lines)
    assert actions["dlq.edit"] == 1 and actions["dlq.purge"] == 1
    runs = [line for line in lines if line.action == "dlq.replay"]
    dry = [line for line in runs if line.detail["dry_run"]]
    assert len(dry) == 1 and dry[0].detail["limit"] == 3
    rated = [line for line in runs if line.detail["rate"] == 20]
    assert [line.count for line in rated] == [10, 10]
    assert all(line.target == f"group {failed.groups['reserve']}" for line in rated)
    edit = next(line for line in lines if line.action == "dlq.edit")
    assert edit.target == f"{failed.place}.dlq" and edit.count == 1
    purge = next(line for line in lines if line.action == "dlq.purge")
    assert purge.target == dlq and purge.count == UNKNOWN_VERSIONS - 1
    assert all(line.operator for line in lines)
