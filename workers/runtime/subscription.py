"""Consuming one handler's queue: deliveries in, batches through the consumer, acks out.

    subscription = Subscription(connection, settings, handler, consumer)
    await subscription.start()       # basic.consume on the handler's queue, own channel
    await subscription.pause()       # basic.cancel: what was delivered is still settled
    await subscription.resume()      # basic.consume again
    await subscription.stop()        # basic.cancel, wait for what was delivered, close

Straight on aio-pika: the worker's default (``FLEET_CONSUMER=aio-pika``). The same queues
can be consumed through FastStream subscribers declared to be cheap
(``workers.runtime.faststream_subscription``, ``FLEET_CONSUMER=faststream``; they also write
the AsyncAPI document), with these same batches and acks; FastStream's per-delivery path
still costs more CPU per message than this one (``bench/subscription_cost.py``).

Each queue has a channel of its own, with the prefetch count as its QoS, and its batches go
one at a time (``Batches``). So a batch's delivery tags are the lowest unsettled ones of its
channel, and a batch whose deliveries all ended well is acked with one ``multiple`` ack. A
delivery is acked only after its outcome is durable (``Consumer.process_batch``); one whose
retry or dead letter could not even be published is nacked back to its queue.

The connection is robust: after a broker restart aio-pika reopens the channel and the
consumer. A delivery of the old channel can no longer be acked (aio-pika refuses, since its
tag means nothing on the new channel); the broker has requeued it, and the inbox makes its
second delivery a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelInvalidStateError
from aiormq.exceptions import AMQPError

from workers.runtime.batches import Batches, Turn
from workers.runtime.consumer import Consumer, Outcome, Result
from workers.runtime.service import Handler
from workers.runtime.settings import Settings

log = logging.getLogger("fleet.subscription")

# How long a stopping worker waits for the deliveries it holds to be settled.
GRACEFUL_TIMEOUT = 30.0


class Subscription:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        settings: Settings,
        handler: Handler,
        consumer: Consumer,
    ) -> None:
        self.queue_name = handler.queue(settings.namespace)
        self._connection = connection
        self._prefetch = settings.prefetch
        self._handler = handler
        self._consumer = consumer
        self._batches: Batches[AbstractIncomingMessage, Result] = Batches(
            self._process,
            size=settings.batch_size,
            wait=settings.batch_wait_ms / 1000,
            in_flight=settings.batches_in_flight,
        )
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None  # None: not consuming (paused, or stopped)
        self._held: set[asyncio.Task[None]] = set()  # one per delivery not yet settled

    @property
    def paused(self) -> bool:
        """Open but not consuming (``pause``)."""
        return self._channel is not None and self._consumer_tag is None

    async def start(self, *, paused: bool = False) -> None:
        """Open the channel and consume, unless ``paused`` (then ``resume`` consumes)."""
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        # Declared by workers.runtime.topology with all its arguments; this only looks it up,
        # passively, so that the robust channel knows the queue and restores its consumer
        # after a reconnect (``get_queue(ensure=False)`` would not: aio-pika 10 forgets it).
        self._queue = await self._channel.declare_queue(self.queue_name, passive=True)
        if not paused:
            await self.resume()

    async def pause(self) -> None:
        """Stop taking messages, the channel kept open (basic.cancel): what was delivered
        before is still processed and acked, the rest waits in the queue. Idempotent."""
        if self._queue is None or self._consumer_tag is None:
            return
        tag, self._consumer_tag = self._consumer_tag, None
        # Paused even if the cancel fails: aio-pika's robust queue forgets the consumer
        # before it sends the cancel, so a channel that reopens does not restore it.
        await self._queue.cancel(tag)

    async def resume(self) -> None:
        """Take messages again (basic.consume). Idempotent; nothing once stopped."""
        if self._queue is None or self._consumer_tag is not None:
            return
        self._consumer_tag = await self._queue.consume(self._on_delivery)

    async def set_prefetch(self, count: int) -> None:
        """How many deliveries may be unacknowledged at once (the breaker's slow resume:
        one). Nothing once stopped."""
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.set_qos(prefetch_count=count)

    async def stop(self) -> None:
        """Stop consuming, settle what was delivered (up to GRACEFUL_TIMEOUT), close."""
        if self._channel is None:
            return
        channel, self._channel = self._channel, None
        queue, self._queue = self._queue, None  # and resume() does nothing from now on
        tag, self._consumer_tag = self._consumer_tag, None
        try:
            if queue is not None and tag is not None and not channel.is_closed:
                await queue.cancel(tag)
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as error:
            log.warning("%s: could not cancel the consumer: %s", self.queue_name, error)
        if self._held:
            _, pending = await asyncio.wait(self._held, timeout=GRACEFUL_TIMEOUT)
            if pending:
                log.warning(
                    "%s: %d deliveries not settled after %.0f s; the broker requeues them",
                    self.queue_name,
                    len(pending),
                    GRACEFUL_TIMEOUT,
                )
        if not channel.is_closed:
            await channel.close()

    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        # aio-pika runs this in a task of its own per delivery; the batch settles it.
        task = asyncio.current_task()
        assert task is not None
        self._held.add(task)
        try:
            await self._batches.submit(message)
        except Exception:
            log.exception("%s: a batch failed before settling its deliveries", self.queue_name)
        finally:
            self._held.discard(task)

    async def _process(
        self, deliveries: Sequence[AbstractIncomingMessage], turn: Turn
    ) -> list[Result]:
        return await process_and_settle(self._consumer, self._handler, deliveries, turn)


async def process_and_settle(
    consumer: Consumer,
    handler: Handler,
    deliveries: Sequence[AbstractIncomingMessage],
    turn: Turn,
) -> list[Result]:
    """One batch through the consumer, then its acks, once the batches before it have
    settled theirs: one ``multiple`` ack when every delivery has an outcome, else an ack or
    a nack each; a nack each if the consumer failed. (Shared by both ways of consuming,
    ``workers.runtime.faststream_subscription``.)"""
    try:
        try:
            results = await consumer.process_batch(handler, deliveries, turn)
        except BaseException:
            # Not even a decision: every delivery goes back to the queue.
            turn.applied()
            for delivery in deliveries:
                await _settle(delivery, ack=False)
            raise
        await turn.settle_after_earlier()
        if all(isinstance(result, Outcome) for result in results):
            await _ack_all(deliveries)
        else:
            await _settle_each(deliveries, results)
        return results
    finally:
        turn.settled()


async def _ack_all(deliveries: Sequence[AbstractIncomingMessage]) -> None:
    """One multiple ack per channel: the last delivery's tag covers the batch."""
    last_of_channel: dict[int, AbstractIncomingMessage] = {}
    for delivery in deliveries:
        try:
            last_of_channel[id(delivery.channel)] = delivery
        except ChannelInvalidStateError:
            continue  # delivered on a channel that is gone: the broker has requeued it
    for delivery in last_of_channel.values():
        await _settle(delivery, ack=True, multiple=True)


async def _settle_each(
    deliveries: Sequence[AbstractIncomingMessage], results: Sequence[Result]
) -> None:
    for delivery, result in zip(deliveries, results, strict=True):
        await _settle(delivery, ack=isinstance(result, Outcome))


async def _settle(delivery: AbstractIncomingMessage, *, ack: bool, multiple: bool = False) -> None:
    try:
        if ack:
            await delivery.ack(multiple=multiple)
        else:
            # Not even the retry or dead-letter publish went through: back to the queue
            # (the queue's delivery limit bounds how often this can happen).
            await delivery.nack(requeue=True)
    except (AMQPError, ChannelInvalidStateError, ConnectionError) as error:
        # The channel closed under us: the broker requeues the delivery, the inbox makes
        # its redelivery a duplicate.
        log.warning("could not settle delivery %s: %s", delivery.message_id, error)
