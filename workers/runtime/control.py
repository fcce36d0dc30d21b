"""Paused handlers: where an operator's pause lives on the broker, and how workers hear it.

    <queue>.paused    a marker: while this empty durable queue exists, the handler that
                      consumes <queue> is paused (``fleet pause``; ``fleet resume`` deletes it)
    <ns>.control      fanout exchange (``workers.runtime.topology``): each pause or resume
                      is announced on it, and every worker listening reads its markers again

A paused handler's subscription cancels its consumer (basic.cancel): the worker stays
connected, the channel stays open, what was delivered is still processed and acked, and
new messages wait in the queue. A worker that starts reads the markers before it consumes,
so one started while its handler is paused starts paused.

Why a marker per handler rather than one message holding the whole set: reading a marker
is a passive declare, which any number of readers make at once and which changes nothing.
A state message would have to be taken (basic.get) and given back, and while one reader
holds it another finds the queue empty and believes nothing is paused: just when several
workers start together (``fleet up``). A marker is set or removed idempotently, so neither
the order of announcements nor a version matters: an announcement only says "read again".

    watcher = PauseWatcher(settings, queues, apply, name="inventory")
    paused = await watcher.start()     # listening first, then the markers read: no change
                                       # between the two is missed
    await watcher.run(stop)            # apply(paused) after each announcement and reconnect
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from workers.runtime import connections, topology
from workers.runtime.errors import broker_loss_as_connection_error
from workers.runtime.settings import Settings

log = logging.getLogger("fleet.control")

# Classic (a quorum queue costs a Raft group for a flag), and holding nothing: a message
# sent to a marker by mistake is dropped.
PAUSE_MARKER_ARGUMENTS: dict[str, Any] = {"x-queue-type": "classic", "x-max-length": 0}

# Seconds before the watcher connects again after losing the broker (the last repeats).
RECONNECT_DELAYS = (1.0, 2.0, 5.0, 10.0)
# Seconds before a worker tries again to apply a reading it could not apply.
RETRY_APPLY_DELAY = 1.0

BROKER_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)

# What a worker does with a reading: the queues of its handlers that are paused now.
Apply = Callable[[frozenset[str]], Awaitable[None]]


def pause_marker(queue: str) -> str:
    """The marker whose existence says that the handler of ``queue`` is paused."""
    return f"{queue}.paused"


async def paused_queues(connection: AbstractConnection, queues: Iterable[str]) -> frozenset[str]:
    """Those of ``queues`` whose handler is paused (their marker exists)."""
    names = list(queues)
    states = await topology.queue_states(connection, [pause_marker(name) for name in names])
    return frozenset(name for name in names if states[pause_marker(name)] is not None)


async def set_paused(channel: AbstractChannel, queue: str, paused: bool) -> None:
    """Put or remove ``queue``'s marker (either is idempotent)."""
    if paused:
        await channel.declare_queue(
            pause_marker(queue), durable=True, arguments=PAUSE_MARKER_ARGUMENTS
        )
    else:
        await channel.queue_delete(pause_marker(queue))


async def announce(channel: AbstractChannel, namespace: str, about: dict[str, Any]) -> None:
    """Tell every listening worker to read the markers again (confirmed on a confirming
    channel). ``about`` says what changed, for whoever reads the announcement by hand."""
    exchange = await channel.declare_exchange(
        topology.control_exchange(namespace), aio_pika.ExchangeType.FANOUT, durable=True
    )
    await exchange.publish(
        aio_pika.Message(json.dumps(about).encode(), content_type="application/json"),
        routing_key="",
    )


class PauseWatcher:
    """One worker's ear on the control exchange, on a connection of its own: the worker's
    queues stay as they are while this one reconnects, and after it has reconnected it
    reads the markers again (what changed meanwhile was announced to nobody)."""

    def __init__(
        self, settings: Settings, queues: Sequence[str], apply: Apply, *, name: str
    ) -> None:
        self._settings = settings
        self._queues = tuple(queues)
        self._apply = apply
        self._name = name
        self._connection: AbstractConnection | None = None
        self._wake = asyncio.Event()  # an announcement came, or the connection was lost
        self._lost = False

    async def start(self) -> frozenset[str]:
        """Listen, then read: the paused queues now, before the worker consumes."""
        try:
            await self._listen()
            return await self._read()
        except BaseException:
            await self.close()
            raise

    async def run(self, stop: asyncio.Event) -> None:
        """Apply every reading until ``stop``; reconnect (and read again) after a loss."""
        failures = 0
        try:
            while not stop.is_set():
                try:
                    with broker_loss_as_connection_error():
                        if self._connection is None:
                            await self._listen()
                            self._wake.set()  # read again: announcements were missed meanwhile
                            log.info("%s: control connection reopened", self._name)
                        await self._follow(stop)
                    failures = 0
                except BROKER_ERRORS as error:
                    delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                    failures += 1
                    log.warning(
                        "%s: control connection lost (%s: %s); again in %.0f s",
                        self._name,
                        type(error).__name__,
                        error,
                        delay,
                    )
                    await self.close()
                    await _wait(stop, delay)
        finally:
            await self.close()

    async def _listen(self) -> None:
        self._lost = False
        connection = await connections.connect(
            self._settings.broker_urls,
            client_properties={"connection_name": f"{self._name} control"},
        )
        self._connection = connection
        channel = await connection.channel()
        channel.close_callbacks.add(self._on_close)
        exchange = await channel.declare_exchange(
            topology.control_exchange(self._settings.namespace),
            aio_pika.ExchangeType.FANOUT,
            durable=True,
        )
        # Server-named, exclusive: it goes with the connection.
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(self._on_announcement, no_ack=True)

    async def _follow(self, stop: asyncio.Event) -> None:
        while True:
            await _first_of(stop, self._wake)
            if stop.is_set():
                return
            self._wake.clear()
            if self._lost:
                raise ConnectionError("the control channel closed")
            paused = await self._read()
            try:
                await self._apply(paused)
            except BROKER_ERRORS as error:  # a consuming channel being restored: again soon
                log.warning("%s: could not apply pauses yet: %s", self._name, error)
                asyncio.get_running_loop().call_later(RETRY_APPLY_DELAY, self._wake.set)

    async def _read(self) -> frozenset[str]:
        assert self._connection is not None
        return await paused_queues(self._connection, self._queues)

    async def _on_announcement(self, _message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self._wake.set()

    def _on_close(self, _sender: object, _error: BaseException | None = None) -> None:
        self._lost = True
        self._wake.set()

    async def close(self) -> None:
        """Close the connection (``run`` does it when it ends)."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*BROKER_ERRORS):
                await connection.close()


async def _first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


# --- Tripped breakers (workers.runtime.breaker): a marker per service while it is tripped.

# Classic, holding one message: the outage (what, since, which worker), which expires by
# itself unless the tripped worker sends it again, as it does on every probe
# (FLEET_BREAKER_PROBE_SECONDS is at most a third of the lifetime). So a worker that died
# tripped leaves no tripped marker: an empty marker says nothing. (An ``x-expires`` on the
# queue would not do: every reader's basic.get renews its lease.)
TRIP_MARKER_LIFETIME_SECONDS = 60
TRIP_MARKER_ARGUMENTS: dict[str, Any] = {"x-queue-type": "classic", "x-max-length": 1}


_EMPTY = topology.QueueState(messages=0, consumers=0)


def trip_marker(namespace: str, service: str) -> str:
    """The marker whose existence says that ``service``'s breaker is tripped somewhere."""
    return f"{namespace}.{service}.tripped"


async def set_tripped(
    channel: AbstractChannel, namespace: str, service: str, outage: dict[str, Any] | None
) -> None:
    """Put (with the outage, as JSON) or remove ``service``'s trip marker. Putting it again
    renews its lease."""
    name = trip_marker(namespace, service)
    if outage is None:
        await channel.queue_delete(name)
        return
    await channel.declare_queue(name, durable=True, arguments=TRIP_MARKER_ARGUMENTS)
    await channel.default_exchange.publish(
        aio_pika.Message(
            json.dumps(outage).encode(),
            content_type="application/json",
            expiration=TRIP_MARKER_LIFETIME_SECONDS,
        ),
        routing_key=name,
    )


async def tripped_services(
    connection: AbstractConnection, namespace: str, services: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Those of ``services`` whose breaker is tripped (their marker holds an outage that
    has not expired), each with its outage as the worker that tripped it told it."""
    names = {service: trip_marker(namespace, service) for service in services}
    states = await topology.queue_states(connection, list(names.values()))
    found = {service: name for service, name in names.items() if (states[name] or _EMPTY).messages}
    tripped: dict[str, dict[str, Any]] = {}
    if not found:
        return tripped
    channel = await aio_pika.Channel(connection, publisher_confirms=False)  # (queue_states)
    try:
        for service, name in found.items():
            queue = await channel.get_queue(name, ensure=False)
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                continue
            await message.nack(requeue=True)  # left for the next reader, its expiry kept
            try:
                outage = json.loads(message.body)
            except ValueError:
                outage = {}
            tripped[service] = outage if isinstance(outage, dict) else {}
    finally:
        with contextlib.suppress(*BROKER_ERRORS):
            await channel.close()
    return tripped
