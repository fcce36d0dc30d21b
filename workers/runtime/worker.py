"""Running one service: its queues, a subscription per handler and its outbox relay.

    worker = Worker(settings, service)
    await worker.run(stop)      # until stop is set, then settles in-flight messages

Each handler's queue is consumed with manual acks by a ``Subscription`` (or a FastStream
subscriber, ``FLEET_CONSUMER=faststream``), which gathers its deliveries into batches
(``FLEET_BATCH_SIZE``); ``Consumer.process_batch`` decides the fate of each, and a delivery
is acked only after that decision is durable (committed, or republished to a retry or
dead-letter queue with a confirm). Consuming has a connection of its own: publishing under
the broker's flow control must not hold up acks.

An operator can pause a handler (``fleet pause``): the worker reads which of its handlers
are paused before it consumes and hears every change on the control exchange
(``workers.runtime.control``), cancelling or restarting that handler's consumer. The
service's breaker (``workers.runtime.breaker``) stops every handler's consumer while the
database or the broker cannot be reached; an operator's pause wins over it
(``workers.runtime.outages``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import Any

from aio_pika.abc import AbstractConnection

from db.adapters import open_store, probe
from db.store import Store
from workers.runtime import connections, control, metrics, topology
from workers.runtime.breaker import Breaker, BreakerRules, Dependency
from workers.runtime.consumer import Consumer
from workers.runtime.errors import broker_loss_as_connection_error
from workers.runtime.faststream_subscription import subscribe
from workers.runtime.outages import Consuming, OutOfReach, Reporting
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.relay import Relay
from workers.runtime.service import Service
from workers.runtime.settings import ServiceSettings, Settings

log = logging.getLogger("fleet.worker")

# Seconds a probe of the database or the broker may take before it counts as failed.
PROBE_TIMEOUT = 5.0


async def declare_topology(settings: Settings, services: list[Service]) -> None:
    publisher = await ConfirmedPublisher.connect(settings.broker_urls)
    try:
        specs = [spec for service in services for spec in service.queue_specs(settings.namespace)]
        await topology.declare(await publisher.channel(), settings, specs)
    finally:
        await publisher.close()


class Worker:
    def __init__(
        self,
        settings: Settings,
        service: Service,
        *,
        with_relay: bool = True,
        section: ServiceSettings | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.with_relay = with_relay
        # The service's own settings: as given (tests), else from the environment.
        self.section = section if section is not None else service.section()
        self.relay: Relay | None = None
        self.consumer: Consumer | None = None
        self.breaker: Breaker | None = None
        self.consuming: Consuming | None = None

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        settings = self.settings
        # Connects now: a worker without its database fails at start, not on every message.
        store = await open_store(
            settings.database_url(self.service.name), size=settings.db_pool_size
        )
        publisher = await ConfirmedPublisher.connect(settings.broker_urls)
        consuming = await connections.connect_robust(
            settings.broker_urls, client_properties={"connection_name": self.service.name}
        )
        try:
            # On a connection of its own: a robust channel re-declares on reconnection what
            # was declared through it, and a cluster node that is down blocks its classic
            # queues (the DLQs) there, so the publisher could not come back through another.
            await declare_topology(settings, [self.service])
            self.breaker = breaker = Breaker(
                self.service.name,
                BreakerRules(settings.breaker_failures, settings.breaker_resume_successes),
                partial(self._probe, consuming),
                probe_seconds=settings.breaker_probe_seconds,
                enabled=settings.breaker_enabled,
            )
            self.consumer = Consumer(
                settings, store, publisher, self.service.name, self.section, breaker
            )
            # Straight through aio-pika or through FastStream (FLEET_CONSUMER), alike.
            subscriptions = subscribe(consuming, settings, self.service.handlers, self.consumer)
            self.consuming = consuming_state = Consuming(subscriptions, prefetch=settings.prefetch)
            breaker.on_change(consuming_state.breaker_changed)
            breaker.on_announce(
                Reporting(
                    settings,
                    self.service.name,
                    [handler.name for handler in self.service.handlers],
                    publisher,
                )
            )
            watcher = control.PauseWatcher(
                settings,
                [subscription.queue_name for subscription in subscriptions],
                consuming_state.operator_paused,
                name=self.service.name,
            )
            # A lost consuming connection trips the breaker: the broker is unreachable.
            consuming.close_callbacks.add(partial(self._connection_lost, stop))
            watcher_stop = asyncio.Event()
            watcher_task: asyncio.Task[None] | None = None
            relay_stop = asyncio.Event()  # stops the relay and background tasks, after consumers
            relay_task: asyncio.Task[None] | None = None
            if self.with_relay:
                self.relay = Relay(settings, self.service.name, publisher)
                relay_task = asyncio.create_task(self.relay.run(relay_stop))
            out_of_reach = OutOfReach(settings, consuming, breaker)
            background = [
                asyncio.create_task(task(settings, self.section, store, relay_stop, out_of_reach))
                for task in self.service.background
            ]
            background.append(asyncio.create_task(self._sample(store, consuming, relay_stop)))
            background.append(asyncio.create_task(breaker.run(relay_stop)))
            try:
                paused = await watcher.start()  # before consuming: a paused one starts paused
                await consuming_state.operator_paused(paused)  # (nothing consumes yet)
                for subscription in subscriptions:
                    await subscription.start(paused=subscription.queue_name in paused)
                watcher_task = asyncio.create_task(watcher.run(watcher_stop))
                log.info("%s worker consuming %d queue(s)", self.service.name, len(subscriptions))
                for queue in sorted(paused):
                    log.info("%s: paused by an operator; messages wait ('fleet resume')", queue)
                if started is not None:
                    started.set()
                await stop.wait()
            finally:
                # No resume from now on; stop consuming and settle what was delivered; then
                # stop the relay (what they emitted waits in the outbox for the next relay
                # if it is not out yet).
                watcher_stop.set()
                if watcher_task is not None:
                    await watcher_task
                else:
                    await watcher.close()
                await asyncio.gather(*(subscription.stop() for subscription in subscriptions))
                relay_stop.set()
                for task in background:
                    await task
                if relay_task is not None:
                    await relay_task
        finally:
            await consuming.close()
            await publisher.close()
            await store.close()
        log.info("%s worker stopped", self.service.name)

    async def _probe(self, consuming: AbstractConnection, dependency: Dependency) -> str | None:
        """Whether ``dependency`` answers (None), else what it said: the database on a
        connection of the probe's own (the pool's may all be taken), the broker by looking
        up one of the service's queues on the consuming connection."""
        try:
            if dependency == "database":
                await probe(self.settings.database_url(self.service.name), PROBE_TIMEOUT)
            else:
                with broker_loss_as_connection_error():
                    queue = self.service.handlers[0].queue(self.settings.namespace)
                    if consuming.is_closed:
                        return "the consuming connection is closed"
                    await asyncio.wait_for(
                        topology.queue_states(consuming, [queue]), timeout=PROBE_TIMEOUT
                    )
        except Exception as error:
            return f"{type(error).__name__}: {error}"
        return None

    def _connection_lost(self, stop: asyncio.Event, _: Any, error: BaseException | None) -> None:
        if stop.is_set() or self.breaker is None:
            return  # the worker is stopping: its own close
        reason = f"{type(error).__name__}: {error}" if error else "connection closed"
        asyncio.get_running_loop().create_task(self.breaker.trip("broker", reason))

    async def _sample(self, store: Store, broker: AbstractConnection, stop: asyncio.Event) -> None:
        """Refresh the gauges read from the database and the broker until ``stop``."""
        while not stop.is_set():
            try:
                with broker_loss_as_connection_error():
                    await self.sample_once(store, broker)
            except Exception as error:  # a server is down: the gauges keep their last value
                log.debug("%s metrics: %s: %s", self.service.name, type(error).__name__, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.metrics_interval)

    async def sample_once(self, store: Store, broker: AbstractConnection) -> None:
        name = self.service.name
        async with store.connection() as conn:
            backlog = await store.backlog(conn)
            metrics.OUTBOX_WAITING.labels(name).set(backlog.rows)
            metrics.OUTBOX_OLDEST_AGE.labels(name).set(backlog.oldest_age_seconds or 0.0)
            metrics.INBOX_ROWS.labels(name).set(await store.inbox_rows(conn))
            for sampler in self.service.samplers:
                await sampler(self.settings, conn, broker)
        dead_letter_queues = [
            topology.dead_letter_queue(handler.queue(self.settings.namespace))
            for handler in self.service.handlers
        ]
        for queue, depth in (await topology.depths(broker, dead_letter_queues)).items():
            if depth is not None:
                metrics.DLQ_DEPTH.labels(name, queue).set(depth)
