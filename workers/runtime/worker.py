"""Running one service: its queues, a subscription per handler and its outbox relay.

    worker = Worker(settings, service)
    await worker.run(stop)      # until stop is set, then settles in-flight messages

Each handler's queue is consumed with manual acks by a ``Subscription``, which gathers its
deliveries into batches (``FLEET_BATCH_SIZE``); ``Consumer.process_batch`` decides the fate
of each, and a delivery is acked only after that decision is durable (committed, or
republished to a retry or dead-letter queue with a confirm). Consuming has a connection of
its own: publishing under the broker's flow control must not hold up acks.
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika

from db.engine import create_pool
from workers.runtime import topology
from workers.runtime.consumer import Consumer
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.relay import Relay
from workers.runtime.service import Service
from workers.runtime.settings import ServiceSettings, Settings
from workers.runtime.subscription import Subscription

log = logging.getLogger("fleet.worker")


async def declare_topology(settings: Settings, services: list[Service]) -> None:
    publisher = await ConfirmedPublisher.connect(settings.amqp_url)
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

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        settings = self.settings
        # Connects now: a worker without its database fails at start, not on every message.
        pool = await create_pool(
            settings.database_url(self.service.name), size=settings.db_pool_size
        )
        publisher = await ConfirmedPublisher.connect(settings.amqp_url)
        consuming = await aio_pika.connect_robust(
            settings.amqp_url, client_properties={"connection_name": self.service.name}
        )
        try:
            await topology.declare(
                await publisher.channel(), settings, self.service.queue_specs(settings.namespace)
            )
            self.consumer = Consumer(settings, pool, publisher, self.service.name, self.section)
            subscriptions = [
                Subscription(consuming, settings, handler, self.consumer)
                for handler in self.service.handlers
            ]
            relay_stop = asyncio.Event()  # stops the relay and background tasks, after consumers
            relay_task: asyncio.Task[None] | None = None
            if self.with_relay:
                self.relay = Relay(settings, self.service.name, publisher)
                relay_task = asyncio.create_task(self.relay.run(relay_stop))
            background = [
                asyncio.create_task(task(settings, self.section, pool, relay_stop))
                for task in self.service.background
            ]
            try:
                for subscription in subscriptions:
                    await subscription.start()
                log.info("%s worker consuming %d queue(s)", self.service.name, len(subscriptions))
                if started is not None:
                    started.set()
                await stop.wait()
            finally:
                # Stop consuming and settle what was delivered; then stop the relay (what
                # they emitted waits in the outbox for the next relay if it is not out yet).
                await asyncio.gather(*(subscription.stop() for subscription in subscriptions))
                relay_stop.set()
                for task in background:
                    await task
                if relay_task is not None:
                    await relay_task
        finally:
            await consuming.close()
            await publisher.close()
            await pool.close()
        log.info("%s worker stopped", self.service.name)
