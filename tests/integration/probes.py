"""A probe service for the tests: real handlers, run by the real runtime, whose behaviour a
test scripts per order id (fail transiently n times, fail for good, or succeed), so retries,
dead-lettering and rollback are exercised for real, with nothing mocked.

It is named "inventory" to use the inventory's database; its queues are
``<ns>.inventory.probe_*`` and tests publish to them directly (default exchange).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts import Message, OrderConfirmed, OrderPlacedV2, OrderRejected
from db.unit_of_work import UnitOfWork
from workers.inventory import store
from workers.runtime.errors import PermanentError, TransientError
from workers.runtime.service import Service


@dataclass
class Script:
    transient_failures: Counter[str] = field(default_factory=Counter)
    permanent: set[str] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)
    received: list[Message] = field(default_factory=list)
    received_headers: dict[str, Mapping[str, object]] = field(default_factory=dict)


script = Script()
probe = Service("inventory")


def probe_sku(order_id: str) -> str:
    return f"probe-{order_id}"


@probe.handler(name="probe_effects")
async def probe_effects(uow: UnitOfWork, message: OrderConfirmed) -> None:
    """Writes state and an outbox row, then fails if the script says so."""
    script.calls[message.order_id] += 1
    await store.seed(uow.conn, probe_sku(message.order_id), 1)
    uow.emit(OrderRejected(order_id=message.order_id, reason="probe effect"))
    await uow.flush()  # the outbox row is written before the failure, in the same transaction
    if script.transient_failures[message.order_id] > 0:
        script.transient_failures[message.order_id] -= 1
        raise TransientError("probe: the database hiccuped")
    if message.order_id in script.permanent:
        raise PermanentError("probe: this message can never succeed")


@probe.handler(name="probe_orders")
async def probe_orders(uow: UnitOfWork, message: OrderPlacedV2) -> None:
    script.received.append(message)
    assert uow.received is not None  # the runtime always says what is being handled
    script.received_headers[message.order_id] = uow.received.headers
