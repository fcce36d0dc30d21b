"""A probe service for the tests: real handlers, run by the real runtime, whose behaviour a
test scripts per order id (fail transiently n times, fail for good, fail after writing, or
succeed), so retries, dead-lettering and rollback are exercised for real, with nothing
mocked.

It is named "inventory" to use the inventory's database; its queues are
``<ns>.inventory.probe_*`` and tests publish to them directly (default exchange).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg

from contracts import Message, OrderConfirmed, OrderPlacedV2, OrderRejected, Received
from workers.inventory import store
from workers.runtime.decision import Decision
from workers.runtime.errors import PermanentError, TransientError
from workers.runtime.service import Service


@dataclass
class Script:
    transient_failures: Counter[str] = field(default_factory=Counter)
    permanent: set[str] = field(default_factory=set)
    # Fail every time as a refused connection would, while the database answers (a bug
    # that looks like an outage: the breaker must not hide it).
    refused: set[str] = field(default_factory=set)
    # Fail for good in write, once the state and the outbox rows are written.
    fail_after_write: set[str] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)
    received: list[Message] = field(default_factory=list)
    received_headers: dict[str, Mapping[str, object]] = field(default_factory=dict)


script = Script()
probe = Service("inventory")


def probe_sku(order_id: str) -> str:
    return f"probe-{order_id}"


@dataclass(frozen=True)
class Nothing:
    """The probe's state: it decides on the message alone."""

    def apply(self, change: str) -> Nothing:
        return self


async def load_nothing(conn: asyncpg.Connection, messages: Sequence[Message]) -> Nothing:
    return Nothing()


def probe_effects(state: Nothing, message: OrderConfirmed) -> Decision[str]:
    """A unit of the order's probe SKU and an order.rejected; fails as the script says."""
    script.calls[message.order_id] += 1
    if script.transient_failures[message.order_id] > 0:
        script.transient_failures[message.order_id] -= 1
        raise TransientError("probe: the database hiccuped")
    if message.order_id in script.permanent:
        raise PermanentError("probe: this message can never succeed")
    if message.order_id in script.refused:
        raise ConnectionRefusedError(111, "probe: refused, though the database answers")
    return Decision(
        changes=(message.order_id,),
        send=(OrderRejected(order_id=message.order_id, reason="probe effect"),),
    )


async def write_effects(conn: asyncpg.Connection, changes: Sequence[str]) -> None:
    for order_id in changes:
        await store.seed(conn, probe_sku(order_id), 1)
    for order_id in changes:
        if order_id in script.fail_after_write:
            raise PermanentError("probe: failed after writing its state and outbox rows")


def probe_orders(message: OrderPlacedV2, *, received: Received) -> Decision[str]:
    script.received.append(message)
    script.received_headers[message.order_id] = received.headers
    return Decision()


probe.handler(probe_effects, load=load_nothing, write=write_effects)
probe.handler(probe_orders)
