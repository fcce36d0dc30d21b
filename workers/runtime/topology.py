"""The broker topology: exchanges, one queue per handler and its DLQ, shared delay tiers.

    <ns>.events / <ns>.commands   topic exchanges the relay publishes to
    <ns>.replays                  direct exchange for event-store replays, keyed by read model
    <ns>.<service>.<handler>      a handler's quorum queue, bound to the types it handles
    <queue>.dlq                   messages that cannot succeed, with the reason in headers
    <ns>.dlx                      direct exchange routing dead letters to their <queue>.dlq
    <ns>.delay.<delay>ms          a delay tier: a fanout exchange and its TTL quorum queue,
                                  one per delay for the whole namespace
    <ns>.retries                  direct exchange the tiers dead-letter into: every handler
                                  queue is bound to it by its own name
    <ns>.unrouted.dlq             what reached an exchange with no queue bound for it
    <ns>.control                  fanout exchange announcing pauses and resumes to workers
                                  (``workers.runtime.control``)

A retry is published to its tier's exchange with the routing key of its queue's name; when
its delay has passed the tier dead-letters it, under that same routing key, to
``<ns>.retries``, which routes it back to its queue (NServiceBus's delay levels work so).
A delay is one queue for every handler, not one per handler: a namespace has a third of
the quorum queues it would otherwise. ``<ns>.retries`` and both topic exchanges have
``<ns>.unrouted`` as their alternate exchange: an event nobody subscribes to yet, a
command for a service never started, or a retry whose queue is gone, is kept there instead
of being returned (which would block the relay on it forever), lost, or left at the head
of its tier, holding back every retry behind it.

Queue arguments are fixed when a queue is first declared (RabbitMQ refuses a redeclaration
with other arguments), so every argument is chosen here, once. Tiers are named by their
delay, so changing the delays makes new tiers instead of clashing with old ones. Before the
tiers, each handler queue had a retry queue per delay (``<queue>.retry.<delay>ms``); one
that still exists drains by itself (it dead-letters straight back to its queue), is no
longer declared or published to, and goes at teardown.

What a queue holds now, and who consumes it, is read with passive declares: AMQP alone,
no management plugin (``queue_states``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelNotFoundEntity

from contracts.routing import commands_exchange, events_exchange, replays_exchange
from workers.runtime.settings import Settings


@dataclass(frozen=True)
class QueueSpec:
    """One handler's queue and the (exchange, routing key) pairs bound to it."""

    name: str
    bindings: tuple[tuple[str, str], ...]


def dead_letter_exchange(namespace: str) -> str:
    return f"{namespace}.dlx"


def unrouted_exchange(namespace: str) -> str:
    return f"{namespace}.unrouted"


def unrouted_queue(namespace: str) -> str:
    return dead_letter_queue(unrouted_exchange(namespace))


def delay_tier(namespace: str, delay_ms: int) -> str:
    """The exchange and the queue of one delay (one name for both)."""
    return f"{namespace}.delay.{delay_ms}ms"


def retries_exchange(namespace: str) -> str:
    return f"{namespace}.retries"


def control_exchange(namespace: str) -> str:
    return f"{namespace}.control"


def delay_tiers(settings: Settings) -> list[str]:
    return [delay_tier(settings.namespace, d) for d in sorted(set(settings.retry_delays_ms))]


def exchanges(settings: Settings) -> list[str]:
    """Every exchange of a namespace, the ones others route to first."""
    ns = settings.namespace
    return [
        events_exchange(ns),
        commands_exchange(ns),
        replays_exchange(ns),
        dead_letter_exchange(ns),
        *delay_tiers(settings),
        retries_exchange(ns),
        unrouted_exchange(ns),
        control_exchange(ns),
    ]


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"


def legacy_retry_queue(queue: str, delay_ms: int) -> str:
    """A handler's own retry queue, as namespaces had them before the shared tiers."""
    return f"{queue}.retry.{delay_ms}ms"


def original_queue(dlq: str) -> str:
    if not dlq.endswith(".dlq"):
        raise ValueError(f"{dlq} is not a dead-letter queue (its name ends in .dlq)")
    return dlq.removesuffix(".dlq")


# Quorum queues keep a message that dead-letters until its target confirms it
# (at-least-once dead-lettering needs reject-publish overflow).
_AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def handler_queue_arguments(settings: Settings, queue: str) -> dict[str, Any]:
    # The delivery limit counts crashes before ack too: a message that kills its worker
    # every time is dead-lettered to <queue>.dlq instead of looping forever.
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": dead_letter_exchange(settings.namespace),
        "x-dead-letter-routing-key": dead_letter_queue(queue),
        **_AT_LEAST_ONCE,
    }


def delay_tier_arguments(namespace: str, delay_ms: int) -> dict[str, Any]:
    # Expired messages go, under their own routing key (their queue's name), to the retries
    # exchange and so back to their queue; one queue per delay, because messages only
    # expire at the head of a queue.
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": retries_exchange(namespace),
        **_AT_LEAST_ONCE,
    }


# DLQs are classic queues: `fleet dlq show` browses them by holding messages unacked and
# closing the channel, which returns them in place with no delivery count to bump.
DLQ_ARGUMENTS: dict[str, Any] = {"x-queue-type": "classic"}


def queues_of(spec: QueueSpec) -> list[str]:
    """A handler's queue and its DLQ."""
    return [spec.name, dead_letter_queue(spec.name)]


def legacy_retry_queues(settings: Settings, spec: QueueSpec) -> list[str]:
    return [legacy_retry_queue(spec.name, d) for d in sorted(set(settings.retry_delays_ms))]


async def declare(
    channel: AbstractChannel, settings: Settings, queues: Iterable[QueueSpec]
) -> None:
    """Declare the exchanges and every queue of ``queues``; safe to repeat."""
    ns = settings.namespace
    unrouted = await channel.declare_exchange(
        unrouted_exchange(ns), aio_pika.ExchangeType.FANOUT, durable=True
    )
    unrouted_dlq = await channel.declare_queue(
        unrouted_queue(ns), durable=True, arguments=DLQ_ARGUMENTS
    )
    await unrouted_dlq.bind(unrouted)
    for name in (events_exchange(ns), commands_exchange(ns)):
        await channel.declare_exchange(
            name,
            aio_pika.ExchangeType.TOPIC,
            durable=True,
            arguments={"alternate-exchange": unrouted_exchange(ns)},
        )
    await channel.declare_exchange(
        replays_exchange(ns),
        aio_pika.ExchangeType.DIRECT,
        durable=True,
        arguments={"alternate-exchange": unrouted_exchange(ns)},
    )
    dlx = await channel.declare_exchange(
        dead_letter_exchange(ns), aio_pika.ExchangeType.DIRECT, durable=True
    )
    retries = await channel.declare_exchange(
        retries_exchange(ns),
        aio_pika.ExchangeType.DIRECT,
        durable=True,
        arguments={"alternate-exchange": unrouted_exchange(ns)},
    )
    # Pause and resume announcements; no alternate exchange: one nobody hears is dropped.
    await channel.declare_exchange(control_exchange(ns), aio_pika.ExchangeType.FANOUT, durable=True)
    for delay in sorted(set(settings.retry_delays_ms)):
        tier_exchange = await channel.declare_exchange(
            delay_tier(ns, delay), aio_pika.ExchangeType.FANOUT, durable=True
        )
        tier = await channel.declare_queue(
            delay_tier(ns, delay), durable=True, arguments=delay_tier_arguments(ns, delay)
        )
        await tier.bind(tier_exchange)
    for spec in queues:
        dlq = await channel.declare_queue(
            dead_letter_queue(spec.name), durable=True, arguments=DLQ_ARGUMENTS
        )
        await dlq.bind(dlx, dead_letter_queue(spec.name))
        queue = await channel.declare_queue(
            spec.name, durable=True, arguments=handler_queue_arguments(settings, spec.name)
        )
        for exchange, routing_key in spec.bindings:
            await queue.bind(exchange, routing_key)
        await queue.bind(retries, spec.name)  # where its retries come back from


@dataclass(frozen=True)
class QueueState:
    messages: int
    consumers: int


async def queue_states(
    connection: AbstractConnection, names: Iterable[str]
) -> dict[str, QueueState | None]:
    """Messages and consumers of each queue; None where the queue does not exist."""
    result: dict[str, QueueState | None] = {}
    for name in names:
        # One channel each: a failed passive declare closes its channel. A plain channel even
        # on a robust connection: a robust one reopens itself when the broker closes it, so
        # every probe of a missing queue left one more channel open, for good (a worker's
        # sampler reached the broker's channel_max, 2047, and lost its connection).
        channel = await aio_pika.Channel(connection, publisher_confirms=False)
        try:
            declared = (await channel.declare_queue(name, passive=True)).declaration_result
            result[name] = QueueState(declared.message_count or 0, declared.consumer_count or 0)
        except ChannelNotFoundEntity:
            result[name] = None
        finally:
            if not channel.is_closed:
                await channel.close()
    return result


async def depths(connection: AbstractConnection, names: Iterable[str]) -> dict[str, int | None]:
    """Messages in each queue; None where the queue does not exist."""
    states = await queue_states(connection, names)
    return {name: None if state is None else state.messages for name, state in states.items()}
