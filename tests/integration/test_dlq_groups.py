"""``fleet dlq groups``: thirty dead letters of three kinds in three queues, grouped by
signature, type, queue and service, the queues left as they were."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from contracts import OrderConfirmed, RejectOrder
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.support import Fleet, new_id, not_json, outgoing, wait_for
from workers.operations import dead_letters
from workers.runtime import catalog

pytestmark = pytest.mark.integration

EACH = 10


@pytest.fixture(scope="module")
async def failed(server_urls: tuple[str, str]) -> AsyncIterator[Fleet]:
    """EACH undecodable reserve_stock commands, EACH messages of a type charge_payment has
    no handler for, EACH rejections of orders never placed; all dead-lettered."""
    async with namespaced_fleet(namespace_settings(server_urls)) as fleet:
        ns = fleet.ns
        queues = {
            "inventory": f"{ns}.inventory.reserve_stock",
            "payment": f"{ns}.payment.charge_payment",
            "order": f"{ns}.order.reject_order",
        }
        messages = (
            [not_json(queues["inventory"]) for _ in range(EACH)]
            + [
                outgoing(OrderConfirmed(order_id=new_id()), queue=queues["payment"])
                for _ in range(EACH)
            ]
            + [
                outgoing(
                    RejectOrder(order_id=new_id(), reason="never placed"), queue=queues["order"]
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
                depths = await dead_letters.depths(
                    fleet.settings, [f"{queue}.dlq" for queue in queues.values()]
                )
                return all(depth == EACH for depth in depths.values())

            await wait_for(all_dead, timeout=60)
        yield fleet


async def test_three_kinds_make_three_groups_with_their_counts(failed: Fleet) -> None:
    ns = failed.ns
    found = {group.key: group for group in await dead_letters.groups(failed.settings)}
    assert [group.count for group in found.values()] == [EACH] * 3, found
    signatures = set(found)
    assert signatures == {
        "InvalidBody at contracts.registry.Registry.decode",
        "ContractError at workers.runtime.consumer.Consumer._decode",
        "PermanentError at workers.order.domain._placed_order",
    }
    rejected = found["PermanentError at workers.order.domain._placed_order"]
    assert rejected.queues == (f"{ns}.order.reject_order.dlq",)
    assert "was never placed" in rejected.latest_reason
    assert rejected.example_message_id
    assert rejected.first_failed_at is not None and rejected.last_failed_at is not None
    assert rejected.first_failed_at <= rejected.last_failed_at
    # Read, not taken: every letter is still there.
    depths = await dead_letters.depths(failed.settings, list(dead_letters_of(failed)))
    assert sum(depth or 0 for depth in depths.values()) == 3 * EACH


def dead_letters_of(fleet: Fleet) -> list[str]:
    return dead_letters.dead_letter_queues(fleet.settings, catalog.load_all())


async def test_groups_by_type_queue_and_service(failed: Fleet) -> None:
    ns = failed.ns
    by_type = {g.key: g.count for g in await dead_letters.groups(failed.settings, "type")}
    assert by_type == {"InvalidBody": EACH, "ContractError": EACH, "PermanentError": EACH}
    by_queue = {g.key: g.count for g in await dead_letters.groups(failed.settings, "queue")}
    assert by_queue == {
        f"{ns}.inventory.reserve_stock.dlq": EACH,
        f"{ns}.payment.charge_payment.dlq": EACH,
        f"{ns}.order.reject_order.dlq": EACH,
    }
    by_service = {g.key: g.count for g in await dead_letters.groups(failed.settings, "service")}
    assert by_service == {"inventory": EACH, "payment": EACH, "order": EACH}


async def test_the_cli_lists_the_groups_and_refuses_an_unknown_key(failed: Fleet) -> None:
    code, output = await failed.cli("dlq", "groups", "--json")
    assert code == 0, output
    listed = json.loads(output[output.index("[") :])
    assert sorted(group["count"] for group in listed) == [EACH] * 3
    code, output = await failed.cli("dlq", "groups", "--by", "colour")
    assert code == 2 and "--by must be one of" in output
