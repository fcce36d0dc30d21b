"""Running one service: its queues, its FastStream subscribers and its outbox relay.

    worker = Worker(settings, service)
    await worker.run(stop)      # until stop is set, then drains in-flight messages

The broker consumes with manual acks. Each queue's deliveries are gathered into batches
(``Batches``, ``FLEET_BATCH_SIZE``); ``Consumer.process_batch`` decides the fate of each, and
the subscriber acks a delivery only after that decision is durable (committed, or
republished to a retry or dead-letter queue with a confirm).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from faststream import AckPolicy
from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage

from db.engine import create_pool
from workers.runtime import topology
from workers.runtime.batches import Batches
from workers.runtime.consumer import Consumer, Result
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.relay import Relay
from workers.runtime.service import Handler, Service
from workers.runtime.settings import ServiceSettings, Settings

log = logging.getLogger("fleet.worker")


async def _raw_body(message: Any) -> bytes:
    # The consumer decodes bodies against the contracts itself; FastStream must not try
    # (a body that is not JSON would fail before the consumer could dead-letter it).
    # async: FastStream runs a plain function decoder in a worker thread.
    body: bytes = message.body
    return body


def build_broker(settings: Settings, service: Service, consumer: Consumer) -> RabbitBroker:
    broker = RabbitBroker(
        settings.amqp_url,
        # Bounded prefetch: at most this many unacked deliveries (and handler tasks) at once.
        default_channel=Channel(
            prefetch_count=settings.prefetch, publisher_confirms=True, on_return_raises=True
        ),
        app_id=service.name,
        ack_policy=AckPolicy.MANUAL,
        graceful_timeout=30.0,
        log_level=logging.DEBUG,
    )
    for handler in service.handlers:
        _subscribe(broker, settings, handler, consumer)
    return broker


def _subscribe(
    broker: RabbitBroker, settings: Settings, handler: Handler, consumer: Consumer
) -> None:
    queue = RabbitQueue(
        handler.queue(settings.namespace),
        queue_type=QueueType.QUORUM,
        declare=False,  # declared by workers.runtime.topology with all its arguments
    )

    batches: Batches[AbstractIncomingMessage, Result] = Batches(
        lambda raws: consumer.process_batch(handler, raws),
        size=settings.batch_size,
        wait=settings.batch_wait_ms / 1000,
    )

    async def consume(body: bytes, message: RabbitMessage) -> None:
        try:
            result = await batches.submit(message.raw_message)
            if isinstance(result, BaseException):
                raise result
        except BaseException:
            # Not even the retry or dead-letter publish went through: give the delivery
            # back to the queue (the delivery limit bounds how often this can happen).
            await message.nack(requeue=True)
            raise
        await message.ack()

    consume.__name__ = handler.name
    consume.__doc__ = f"{handler.consumer}: {', '.join(handler.types)}"
    broker.subscriber(queue, decoder=_raw_body, title=handler.queue(settings.namespace))(consume)


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
        try:
            await topology.declare(
                await publisher.channel(), settings, self.service.queue_specs(settings.namespace)
            )
            self.consumer = Consumer(settings, pool, publisher, self.service.name, self.section)
            broker = build_broker(settings, self.service, self.consumer)
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
                await broker.start()
                log.info(
                    "%s worker consuming %d queue(s)", self.service.name, len(self.service.handlers)
                )
                if started is not None:
                    started.set()
                await stop.wait()
            finally:
                # Stop consuming and wait for in-flight handlers; then stop the relay (what
                # they emitted waits in the outbox for the next relay if it is not out yet).
                await broker.stop()
                relay_stop.set()
                for task in background:
                    await task
                if relay_task is not None:
                    await relay_task
        finally:
            await publisher.close()
            await pool.close()
        log.info("%s worker stopped", self.service.name)
