"""``fleet dlq archive``, ``archived`` and ``restore``: dead letters of three kinds, set
aside in the operations database and put back as they were; retention, the audit log, and
bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
import pytest

from contracts import Envelope, OrderConfirmed, OutgoingMessage, RejectOrder, ReserveStock
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.support import Fleet, new_id, outgoing, wait_for
from workers.operations import archive, dead_letters, ops_db
from workers.operations.dead_letters import Selection
from workers.runtime import catalog

pytestmark = pytest.mark.integration

EACH = 4
INVALID_BODY = "InvalidBody at contracts.registry.Registry.decode"


def not_json(queue: str) -> OutgoingMessage:
    envelope = Envelope.new(ReserveStock.TYPE, ReserveStock.VERSION, "tests", new_id())
    return OutgoingMessage.of(envelope, b"{not json", exchange="", routing_key=queue)


@pytest.fixture(scope="module")
async def failed(server_urls: tuple[str, str]) -> AsyncIterator[Fleet]:
    """EACH undecodable reserve_stock commands, EACH messages of a type charge_payment has
    no handler for, EACH rejections of orders never placed; all dead-lettered by workers."""
    async with namespaced_fleet(namespace_settings(server_urls)) as fleet:
        messages = (
            [not_json(queue_of(fleet, "inventory")) for _ in range(EACH)]
            + [
                outgoing(OrderConfirmed(order_id=new_id()), queue=queue_of(fleet, "payment"))
                for _ in range(EACH)
            ]
            + [
                outgoing(
                    RejectOrder(order_id=new_id(), reason="never placed"),
                    queue=queue_of(fleet, "order"),
                )
                for _ in range(EACH)
            ]
        )
        async with fleet.publisher() as publisher:
            await publisher.publish_many(messages)
        async with (
            fleet.worker(catalog.load("inventory"), with_relay=False),
            fleet.worker(catalog.load("payment"), with_relay=False),
            fleet.worker(catalog.load("order"), with_relay=False),
        ):

            async def all_dead() -> bool:
                return all([await depth(fleet, service) == EACH for service in QUEUES])

            await wait_for(all_dead, timeout=60)
        yield fleet


QUEUES = {
    "inventory": "inventory.reserve_stock",
    "payment": "payment.charge_payment",
    "order": "order.reject_order",
}


def queue_of(fleet: Fleet, service: str) -> str:
    return f"{fleet.ns}.{QUEUES[service]}"


def dlq_of(fleet: Fleet, service: str) -> str:
    return f"{queue_of(fleet, service)}.dlq"


async def depth(fleet: Fleet, service: str) -> int:
    return await fleet.queue_depth(dlq_of(fleet, service))


async def cli_json(fleet: Fleet, *args: str, **env: Any) -> Any:
    code, output = await fleet.cli(*args, "--json", **env)
    assert code == 0, output
    return json.loads(output[output.index(next(c for c in output if c in "[{")) :])


async def shown(fleet: Fleet, dlq: str) -> dict[str, dict[str, Any]]:
    """``fleet dlq show`` of a whole DLQ, by message id."""
    letters = await cli_json(fleet, "dlq", "show", dlq, "--limit", "100")
    return {letter["message_id"]: letter for letter in letters}


async def test_a_group_archived_and_restored_comes_back_as_it_was(failed: Fleet) -> None:
    inventory = dlq_of(failed, "inventory")
    before = await shown(failed, inventory)
    assert len(before) == EACH

    report = await cli_json(failed, "dlq", "archive", "--group", INVALID_BODY)
    assert report["archived"] == EACH
    assert sorted(report["message_ids"]) == sorted(before)
    assert await depth(failed, "inventory") == 0
    assert await depth(failed, "payment") == EACH and await depth(failed, "order") == EACH

    listed = await cli_json(failed, "dlq", "archived", "--group", INVALID_BODY)
    assert sorted(letter["message_id"] for letter in listed) == sorted(before)
    for letter in listed:
        assert letter["queue"] == inventory
        assert letter["signature"] == INVALID_BODY
        assert letter["reason"] == before[letter["message_id"]]["reason"]
        assert letter["reason"].startswith("InvalidBody: ")
    one = await cli_json(failed, "dlq", "archived", "--id", str(listed[0]["id"]))
    assert one["headers"] == before[one["message_id"]]["headers"]
    assert one["body"] == "{not json"

    # Two by id, then the rest by queue.
    two = [str(letter["id"]) for letter in listed[:2]]
    restored = await cli_json(failed, "dlq", "restore", "--id", two[0], "--id", two[1])
    assert restored["restored"] == 2
    assert await depth(failed, "inventory") == 2
    restored = await cli_json(failed, "dlq", "restore", "--queue", inventory)
    assert restored["restored"] == EACH - 2
    assert await depth(failed, "inventory") == EACH
    assert await cli_json(failed, "dlq", "archived", "--group", INVALID_BODY) == []

    after = await shown(failed, inventory)
    assert after == before  # reason, signature, every header, body


async def test_one_message_archived_restored_and_then_replayed(failed: Fleet) -> None:
    order_dlq = dlq_of(failed, "order")
    before = await shown(failed, order_dlq)
    message_id = sorted(before)[0]

    report = await cli_json(failed, "dlq", "archive", order_dlq, "--message-id", message_id)
    assert report["archived"] == 1 and report["message_ids"] == [message_id]
    assert await depth(failed, "order") == EACH - 1
    (listed,) = await cli_json(failed, "dlq", "archived", "--queue", order_dlq)
    assert listed["message_id"] == message_id
    assert listed["signature"] == "PermanentError at workers.order.domain._placed_order"
    assert "was never placed" in listed["reason"]

    restored = await cli_json(failed, "dlq", "restore", "--message-id", message_id)
    assert restored["restored"] == 1 and restored["message_ids"] == [message_id]
    assert await depth(failed, "order") == EACH
    assert (await shown(failed, order_dlq))[message_id] == before[message_id]

    # Restored, it is a dead letter like any other: a replay sends it to its queue.
    original = queue_of(failed, "order")
    code, output = await failed.cli("dlq", "replay", order_dlq, "--message-id", message_id)
    assert code == 0, output
    assert await depth(failed, "order") == EACH - 1
    assert await failed.queue_depth(original) == 1
    (replayed,) = await peek(failed, original)
    assert replayed.message_id == message_id
    assert replayed.body == before[message_id]["body"].encode()


async def peek(fleet: Fleet, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message of ``queue`` with its properties, the queue left as it was."""
    connection = await aio_pika.connect(fleet.settings.amqp_url)
    try:
        channel = await connection.channel()
        source = await channel.declare_queue(queue, passive=True)
        taken = []
        while (message := await source.get(no_ack=False, fail=False)) is not None:
            taken.append(message)
        await channel.close()  # all of them back, in place
        return taken
    finally:
        await connection.close()


# What the broker itself writes when it dead-letters (x-death), and values JSON lacks.
ODD_HEADERS: dict[str, Any] = {
    "x-death": [
        {
            "count": 5,
            "reason": "delivery_limit",
            "queue": "somewhere",
            "time": datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC),
            "exchange": "",
            "routing-keys": ["somewhere"],
        }
    ],
    "amount": Decimal("19.80"),
    "raw": bytearray(b"\x00\xff"),
    "ratio": 0.5,
    "flag": True,
    "nested": {"$bytes": "a table, not a tag", "list": [1, "two", None]},
}


async def test_properties_and_broker_headers_survive_archive_and_restore(failed: Fleet) -> None:
    # A letter as the broker dead-letters one (x-death, no x-error-*), with every property.
    dlq = f"{failed.ns}.shipping.cancel_shipment.dlq"
    message_id = new_id()
    sent_at = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    connection = await aio_pika.connect(failed.settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(
                b'{"order_id": "x"}',
                headers=ODD_HEADERS,
                content_type="application/json",
                content_encoding="identity",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
                type="shipping.cancel_shipment",
                correlation_id="corr-1",
                timestamp=sent_at,
                app_id="tests",
                priority=3,
            ),
            dlq,
        )
    finally:
        await connection.close()
    (before,) = await peek(failed, dlq)

    report = await archive.archive(failed.settings, Selection(queue=dlq), operator="tester")
    assert report.archived == 1 and await failed.queue_depth(dlq) == 0
    (listed,) = await archive.archived(failed.settings, queue=dlq)
    assert listed.reason == "broker: delivery_limit (from somewhere)"
    assert listed.signature == "broker: delivery_limit from somewhere"
    assert listed.failed_at == datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC)
    detail = await archive.archived_letter(failed.settings, listed.id)
    assert detail.headers == before.headers
    assert detail.properties["priority"] == 3
    assert detail.properties["content_encoding"] == "identity"

    restored = await archive.restore(failed.settings, ids=[listed.id], operator="tester")
    assert restored.restored == 1
    (after,) = await peek(failed, dlq)
    assert after.headers == before.headers
    assert after.body == before.body
    for name in ("message_id", "type", "correlation_id", "timestamp", "app_id", "content_type"):
        assert getattr(after, name) == getattr(before, name), name
    assert after.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    letter = dead_letters.DeadLetter(after.message_id, after.type, dict(after.headers), after.body)
    assert letter.reason == listed.reason and letter.signature == listed.signature


async def test_letters_archived_longer_ago_than_the_retention_are_deleted_at_next_use(
    failed: Fleet,
) -> None:
    payment = dlq_of(failed, "payment")
    report = await archive.archive(
        failed.settings, Selection(queue=payment), limit=2, operator="tests"
    )
    assert report.archived == 2
    old, fresh = sorted(report.message_ids)
    async with ops_db.connect(failed.settings) as conn:
        await conn.execute(
            "UPDATE archived_letters SET archived_at = now() - interval '2 hours'"
            " WHERE message_id = $1",
            old,
        )
    # Under the default retention both stay.
    kept = await cli_json(failed, "dlq", "archived", "--queue", payment)
    assert sorted(letter["message_id"] for letter in kept) == [old, fresh]

    listed = await cli_json(failed, "dlq", "archived", "--queue", payment, archive_retention="1h")
    assert [letter["message_id"] for letter in listed] == [fresh]
    expired = await ops_db.history(failed.settings, action="dlq.expire")
    assert expired[0].count == 1 and expired[0].message_ids == [old]
    # The old letter is gone for good; the fresh one goes back.
    await archive.restore(failed.settings, queue=payment, operator="tests")
    assert await depth(failed, "payment") == EACH - 1


async def test_the_audit_log_has_the_archives_and_restores(failed: Fleet) -> None:
    queue = dlq_of(failed, "order")
    report = await archive.archive(failed.settings, Selection(queue=queue), operator="auditor")
    restored = await archive.restore(failed.settings, queue=queue, operator="auditor")
    assert restored.restored == report.archived > 0
    lines = await cli_json(failed, "history", "--action", "dlq")
    archived_line, restored_line = (
        next(line for line in lines if line["action"] == action and line["operator"] == "auditor")
        for action in ("dlq.archive", "dlq.restore")
    )
    assert archived_line["target"] == queue and restored_line["target"] == queue
    assert archived_line["count"] == restored_line["count"] == report.archived
    assert sorted(archived_line["message_ids"]) == sorted(report.message_ids)
    assert sorted(restored_line["message_ids"]) == sorted(report.message_ids)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["dlq", "restore"], 2, "choose what to restore"),
        (["dlq", "restore", "--id", "1", "--all"], 2, "choose what to restore"),
        (["dlq", "restore", "--id", "999999"], 1, "no archived letter with id 999999"),
        (["dlq", "restore", "--message-id", "nobody"], 1, "no archived letter with message id"),
        (["dlq", "archived", "--id", "999999"], 1, "no archived letter with id 999999"),
        (["dlq", "archive"], 2, "choose the dead letters"),
        (["dlq", "archive", "{ns}.order.reject_order.dlq", "--group", "X"], 2, "choose"),
        (["dlq", "archive", "{ns}.order.reject_order"], 2, "is not a dead-letter queue"),
        (
            ["dlq", "archive", "{ns}.order.reject_order.dlq", "--message-id", "nobody"],
            1,
            "no dead letter to archive",
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else str(value),
)
async def test_bad_input_is_refused_in_one_line(
    failed: Fleet, args: list[str], code: int, says: str
) -> None:
    before = {service: await depth(failed, service) for service in QUEUES}
    exit_code, output = await failed.cli(*(arg.format(ns=failed.ns) for arg in args))
    assert exit_code == code, output
    # One line of error (a progress bar may have been drawn before it, on stdout).
    errors = [line for line in output.splitlines() if line.startswith("fleet: ")]
    assert len(errors) == 1 and says in errors[0], output
    assert "Traceback" not in output, output
    assert {service: await depth(failed, service) for service in QUEUES} == before


async def test_a_letter_whose_dlq_is_gone_stays_in_the_archive(failed: Fleet) -> None:
    gone = f"{failed.ns}.nothing.here.dlq"
    async with ops_db.connect(failed.settings) as conn:
        letter_id = await conn.fetchval(
            "INSERT INTO archived_letters (queue, message_id, signature, reason, body)"
            " VALUES ($1, 'm-gone', 'sig', 'reason', 'body') RETURNING id",
            gone,
        )
    code, output = await failed.cli("dlq", "restore", "--id", str(letter_id))
    assert code == 1 and f"cannot restore to {gone}: no such queue" in output, output
    (kept,) = await archive.archived(failed.settings, queue=gone)
    assert kept.id == letter_id and kept.body == b"body"
    async with ops_db.connect(failed.settings) as conn:
        await conn.execute("DELETE FROM archived_letters WHERE id = $1", letter_id)
