"""Consuming a worker's handler queues through FastStream subscribers (``FLEET_CONSUMER``).

    subscriptions = subscribe(connection, settings, service.handlers, consumer)
    await subscriptions[0].start()      # as workers.runtime.subscription.Subscription:
    await subscriptions[0].pause()      # basic.cancel: what was delivered is still settled
    await subscriptions[0].resume()     # basic.consume again
    await subscriptions[0].stop()       # basic.cancel, wait for what was delivered, close

``subscribe`` gives the worker one object per handler queue with the interface and the
semantics of ``Subscription``, consuming either straight through aio-pika (``Subscription``,
``FLEET_CONSUMER=aio-pika``) or through FastStream (``FastStreamSubscription`` here,
``FLEET_CONSUMER=faststream``). Either way a queue's deliveries go through the same
``Batches`` and the same ``process_and_settle``: the same batches, the same ``multiple`` ack,
the same nacks.

The FastStream way, declared so that a delivery costs little:

- one ``FleetBroker`` per worker: a ``RabbitBroker`` without FastDepends
  (``apply_types=False``: no injection, no validation per delivery), without FastStream's
  logger (no "Received"/"Processed" records per delivery), on the connection the worker
  opened through ``workers.runtime.connections`` (failover over ``FLEET_AMQP_URLS``);
- one subscriber per handler queue (``subscribe_handler``, which the AsyncAPI document uses
  too, so the document comes from the very declaration that consumes): the queue looked up
  passively (``declare=False``; ``workers.runtime.topology`` declares it), a ``Channel`` of
  its own with the prefetch count as its QoS (FastStream keys its channels by the
  ``Channel`` object, so each subscriber gets a channel of its own and a batch's delivery
  tags are the lowest unsettled ones of that channel), manual acks (no
  AcknowledgementMiddleware), no replies, and a parser and decoder that hand the
  aio-pika ``IncomingMessage`` over untouched (the consumer decodes it against the
  contracts itself);
- FastStream's subscriber runs a task per delivery (aio-pika's), so up to the prefetch count
  of them wait in ``Batches`` for their batch to be settled, each inside FastStream's
  ``process_message``.

FastStream 0.7.8's ``RabbitSubscriber.stop`` is not a pause and not a safe stop here: it
stops accepting deliveries (``running = False``) and waits for those in hand *before* it
cancels the consumer, so what the broker delivers in between is dropped unsettled by
``consume``, and the next batch's ``multiple`` ack would settle it unprocessed.
``FleetSubscriber`` (below) cancels first: ``pause`` is a bare basic.cancel (the deliveries in
hand are still processed and acked), ``resume`` a basic.consume of FastStream's own
``consume`` callback, and ``stop`` cancels, waits for FastStream's count of deliveries in hand
(its ``MultiLock``) and closes the channel.

After a reconnect aio-pika's robust channel restores the channel, its QoS, the passive
declare and the consumer (the one registered by basic.consume through its queue object), as
for ``Subscription``; a paused subscriber has no consumer to restore.

What it costs (``bench/subscription_cost.py``, 2-core shared machine, 4,000 messages, 7
interleaved runs, prefetch 20, batch 10): 0.067 ms of CPU per message more than
``Subscription`` with a consumer that does nothing (0.258 against 0.186 ms, +36 %), 0.053 ms
more with the inventory worker's real consumer (0.845 against 0.780 ms, +7 %); FastStream's
own path, without a broker, 0.029 ms per delivery. Where it goes (cProfile): the context
scopes ``process_message`` enters per delivery (five ContextVar set/reset, 24 %), its
``AsyncExitStack``/``ExitStack`` (22 %), the handler item's parse, filter, decode and call
wrappers (17 %), its own body (17 %), its ``MultiLock`` (an ``asyncio.Queue`` per
subscriber); the rest, and more garbage collections. The two overrides below (no logging
middleware, no log context) took about a fifth off FastStream's own part; the rest is
``SubscriberUsecase.process_message`` itself. So ``FLEET_CONSUMER`` stays ``aio-pika`` by
default. To be as cheap, FastStream would need a lean consume path for a subscriber with
one handler, no FastDepends, no logger, no middlewares, no replies and manual acks: call
the handler with the decoded delivery without entering context scopes nobody reads (or one
scope, set once per subscriber), without an exit stack, a Response, a filter and a decode
cache, and count deliveries in hand with an integer rather than an ``asyncio.Queue``; and
a ``RabbitBroker`` that takes a connection (or a connection factory) and a subscriber
class, and a subscriber ``stop`` that cancels the consumer before it waits.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Annotated, Any, Protocol, Union

from aio_pika import IncomingMessage, RobustConnection
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError
from aiormq.exceptions import AMQPError
from faststream import AckPolicy
from faststream._internal.endpoint.subscriber.utils import MultiLock
from faststream.message import StreamMessage
from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitQueue
from faststream.rabbit.message import RabbitMessage
from faststream.rabbit.subscriber.usecase import RabbitSubscriber
from pydantic import Field

from contracts import registry
from contracts.registry import MessageClass
from workers.runtime import connections
from workers.runtime.batches import Batches, Turn
from workers.runtime.consumer import Consumer, Result
from workers.runtime.service import Handler
from workers.runtime.settings import Settings
from workers.runtime.subscription import GRACEFUL_TIMEOUT, Subscription, process_and_settle

log = logging.getLogger("fleet.subscription")

Receive = Callable[[AbstractIncomingMessage], Awaitable[None]]


class HandlerSubscription(Protocol):
    """What the worker drives, for each of its handler queues (``Subscription`` and
    ``FastStreamSubscription`` alike)."""

    queue_name: str

    @property
    def paused(self) -> bool: ...

    async def start(self, *, paused: bool = False) -> None: ...

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    async def set_prefetch(self, count: int) -> None: ...

    async def stop(self) -> None: ...


def subscribe(
    connection: AbstractRobustConnection,
    settings: Settings,
    handlers: Sequence[Handler],
    consumer: Consumer,
) -> list[HandlerSubscription]:
    """A subscription per handler queue, on ``connection``, the way ``settings.consumer``
    says: straight through aio-pika, or through one FastStream broker for all of them."""
    if settings.consumer == "aio-pika":
        return [Subscription(connection, settings, handler, consumer) for handler in handlers]
    broker = FleetBroker(settings, connection=connection)
    return [FastStreamSubscription(broker, settings, handler, consumer) for handler in handlers]


class FleetBroker(RabbitBroker):
    """A ``RabbitBroker`` as the fleet declares it: no FastDepends, no per-message logs, its
    connection opened through ``workers.runtime.connections``.

    ``connection``: one the caller opened (and closes), e.g. the worker's consuming
    connection; without it the broker opens its own over ``settings.broker_urls`` on
    ``connect()`` and closes it on ``stop()``. Never connected, it serves the AsyncAPI
    document (``workers.runtime.asyncapi``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        connection: AbstractRobustConnection | None = None,
        connection_name: str | None = None,
    ) -> None:
        super().__init__(
            settings.amqp_url,
            description="The fleet's RabbitMQ",
            apply_types=False,  # no dependency injection nor validation per delivery
            logger=None,  # no "Received"/"Processed" records per delivery; the fleet logs
            graceful_timeout=GRACEFUL_TIMEOUT,
        )
        self._addresses = settings.broker_urls
        self._given = connection
        self._connection_name = connection_name

    def subscriber(self, *args: Any, **kwargs: Any) -> FleetSubscriber:
        """FastStream's subscriber, as a ``FleetSubscriber``: FastStream 0.7.8 builds every
        subscriber as a ``RabbitSubscriber`` (its ``create_subscriber`` takes no class), and
        the subclass adds behaviour only (pause, resume, a stop that cancels first), no
        state, so the object FastStream built and registered becomes one."""
        subscriber = super().subscriber(*args, **kwargs)
        assert type(subscriber) is RabbitSubscriber, type(subscriber)
        subscriber.__class__ = FleetSubscriber
        assert isinstance(subscriber, FleetSubscriber)
        return subscriber

    # Overrides FastStream 0.7.8's RabbitBroker._connect, which opens a connection of its
    # own with aio_pika.connect_robust(url): the fleet opens every connection through
    # workers.runtime.connections (failover over several addresses). What that _connect does
    # besides is kept: FastStream's channel manager opens its channels on this connection
    # (``config.connect``); BrokerUsecase.connect keeps it as ``_connection`` and sets up
    # the logger. The default channel RabbitBroker._connect opens is left out: this broker
    # never publishes.
    async def _connect(self) -> RobustConnection:
        connection = self._given
        if connection is None:
            properties = {"connection_name": self._connection_name or "fleet"}
            connection = await connections.connect_robust(
                self._addresses, client_properties=properties
            )
        self.config.connect(connection)
        return connection  # type: ignore[return-value]

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        """FastStream's stop (every subscriber, then its bookkeeping); a connection that was
        given is left to its owner to close."""
        if self._given is not None:
            self._connection = None
        await super().stop(exc_type, exc_val, exc_tb)


class FleetSubscriber(RabbitSubscriber):
    """FastStream 0.7.8's ``RabbitSubscriber`` with the fleet's pause, resume and stop.

    It overrides ``stop`` only, and reads and sets the consumer tag and queue object
    ``RabbitSubscriber.start`` keeps (``_consumer_tag``, ``_queue_obj``). No state of its own.
    """

    __slots__ = ()

    @property
    def consuming(self) -> bool:
        return self._consumer_tag is not None

    async def open(self) -> None:
        """What ``start`` does but the basic.consume: the subscriber's channel opened and
        its queue looked up through FastStream's declarer (the same cached queue object
        ``start`` uses later)."""
        self._queue_obj = await self._outer_config.declarer.declare_queue(
            self.queue.add_prefix(self._outer_config.prefix), channel=self.channel
        )

    async def pause(self) -> None:
        """basic.cancel, nothing else: FastStream still takes what was delivered before
        (``running`` stays true), the batches process and ack it."""
        if self._queue_obj is None or self._consumer_tag is None:
            return
        tag, self._consumer_tag = self._consumer_tag, None
        # Paused even if the cancel fails: aio-pika's robust queue forgets the consumer
        # before it sends the cancel, so a channel that reopens does not restore it.
        await self._queue_obj.cancel(tag)

    async def resume(self) -> None:
        """FastStream's ``start`` the first time (parser and decoder set up, basic.consume);
        after a pause, basic.consume with FastStream's ``consume`` callback again."""
        if not self.running:
            await self.start()
        elif self._queue_obj is not None and self._consumer_tag is None:
            self._consumer_tag = await self._queue_obj.consume(
                self.consume,  # type: ignore[arg-type]  # as RabbitSubscriber.start passes it
                arguments=self.consume_args,
            )

    async def set_prefetch(self, count: int) -> None:
        """The channel's QoS: how many deliveries may be unacknowledged at once."""
        if self._queue_obj is not None:
            await self._queue_obj.channel.set_qos(prefetch_count=count)

    # Overrides FastStream 0.7.8's SubscriberUsecase.__build__middlewares_stack (private,
    # name-mangled), which process_message calls for every delivery: with manual acks it
    # is a CriticalLogMiddleware built per call, then the broker's middlewares, and each is
    # instantiated and entered per delivery. That middleware only logs ("Received",
    # "Processed", a handler's exception) and this broker has no logger (logger=None: every
    # record goes to a logger that does nothing); the fleet logs what goes wrong itself
    # (FastStreamSubscription's receive). Without it a delivery skips a middleware object,
    # its __aenter__/__aexit__, its consume_scope and two empty log calls.
    def _SubscriberUsecase__build__middlewares_stack(self) -> tuple[Any, ...]:
        return tuple(self._broker_middlewares)

    def get_log_context(self, message: StreamMessage[Any] | None) -> dict[str, str]:
        """What FastStream puts in its context as ``log_context`` for every delivery (and
        registers once with its logger): read only by its logging, which this broker does
        not do, so not built per delivery (RabbitSubscriber's builds a dict from the
        queue, the exchange and the message id)."""
        return {}

    # Overrides FastStream 0.7.8's RabbitSubscriber.stop (SubscriberUsecase.stop, then
    # basic.cancel), which stops accepting deliveries and waits for those in hand before it
    # cancels the consumer: a delivery that arrives in between is dropped unsettled, and a
    # later multiple ack would settle it unprocessed. Here the consumer is cancelled first,
    # the deliveries in hand are waited for (FastStream's MultiLock, up to the broker's
    # graceful_timeout), then the subscriber's own channel is closed.
    async def stop(self) -> None:
        queue, self._queue_obj = self._queue_obj, None
        tag, self._consumer_tag = self._consumer_tag, None
        if queue is None:
            self.running = False
            return
        channel = queue.channel
        try:
            if tag is not None and not channel.is_closed:
                await queue.cancel(tag)
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as error:
            log.warning("%s: could not cancel the consumer: %s", self.queue.name, error)
        timeout = self._outer_config.graceful_timeout
        held = 0
        if isinstance(self.lock, MultiLock):  # else never started: nothing was delivered
            await self.lock.wait_release(timeout)
            held = self.lock.qsize
        self.running = False
        if held:
            log.warning(
                "%s: %d deliveries not settled after %.0f s; the broker requeues them",
                self.queue.name,
                held,
                timeout or 0,
            )
        if not channel.is_closed:
            await channel.close()


class FastStreamSubscription:
    """One handler queue consumed by a FastStream subscriber; the interface and semantics of
    ``workers.runtime.subscription.Subscription``."""

    def __init__(
        self, broker: FleetBroker, settings: Settings, handler: Handler, consumer: Consumer
    ) -> None:
        self.queue_name = handler.queue(settings.namespace)
        self._broker = broker
        self._handler = handler
        self._consumer = consumer
        self._batches: Batches[AbstractIncomingMessage, Result] = Batches(
            self._process,
            size=settings.batch_size,
            wait=settings.batch_wait_ms / 1000,
            in_flight=settings.batches_in_flight,
        )
        self._opened = False
        self._stopped = False

        async def receive(delivery: AbstractIncomingMessage) -> None:
            # One task per delivery (aio-pika's), inside FastStream's process_message; its
            # batch settles it.
            try:
                await self._batches.submit(delivery)
            except Exception:
                log.exception("%s: a batch failed before settling its deliveries", self.queue_name)

        self._subscriber = subscribe_handler(
            broker, settings.namespace, handler, receive, prefetch=settings.prefetch
        )

    @property
    def paused(self) -> bool:
        """Open but not consuming (``pause``)."""
        return self._opened and not self._stopped and not self._subscriber.consuming

    async def start(self, *, paused: bool = False) -> None:
        """Open the channel and consume, unless ``paused`` (then ``resume`` consumes)."""
        await self._broker.connect()  # once per broker: the connection, FastStream's state
        await self._subscriber.open()
        self._opened = True
        if not paused:
            await self.resume()

    async def pause(self) -> None:
        """Stop taking messages, the channel kept open (basic.cancel): what was delivered
        before is still processed and acked, the rest waits in the queue. Idempotent."""
        if self._opened and not self._stopped:
            await self._subscriber.pause()

    async def resume(self) -> None:
        """Take messages again (basic.consume). Idempotent; nothing once stopped."""
        if self._opened and not self._stopped:
            await self._subscriber.resume()

    async def set_prefetch(self, count: int) -> None:
        """How many deliveries may be unacknowledged at once (the breaker's slow resume)."""
        if self._opened and not self._stopped:
            await self._subscriber.set_prefetch(count)

    async def stop(self) -> None:
        """Stop consuming, settle what was delivered (up to GRACEFUL_TIMEOUT), close; the
        last of a broker's subscriptions to stop stops the broker (FastStream's
        bookkeeping; the connection is the worker's)."""
        if self._stopped:
            return
        self._stopped = True
        await self._subscriber.stop()
        if not any(subscriber.running for subscriber in self._broker.subscribers):
            await self._broker.stop()

    async def _process(
        self, deliveries: Sequence[AbstractIncomingMessage], turn: Turn
    ) -> list[Result]:
        return await process_and_settle(self._consumer, self._handler, deliveries, turn)


# --- The subscriber of a handler queue: one declaration for consuming and for the document


def subscribe_handler(
    broker: RabbitBroker, namespace: str, handler: Handler, receive: Receive, *, prefetch: int
) -> FleetSubscriber:
    """The subscriber of ``handler``'s queue on ``broker``, calling ``receive`` with each
    delivery (the aio-pika ``IncomingMessage``, untouched). ``receive`` must be a function of
    its own: its name and signature are set here, for the AsyncAPI document, which reads the
    payload schema from the signature (the newest contract model of each type the handler
    reads). Without FastDepends nothing checks that signature at run time."""
    spec = handler.queue_spec(namespace)
    # A FastStream queue has one routing key (its address); a queue bound by several keys is
    # addressed by its name, and asyncapi.generate lists every key in the operation's cc.
    # The exchanges go in the description: AsyncAPI 3.0 as FastStream writes it has no place
    # for a queue's exchange (its channel binding is the queue alone).
    single = len(spec.bindings) == 1
    queue = RabbitQueue(
        spec.name,
        queue_type=QueueType.QUORUM,
        declare=False,  # passive: workers.runtime.topology declares it with all its arguments
        routing_key=spec.bindings[0][1] if single else "",
    )
    models = [newest_model(type_) for type_ in handler.types]
    bindings = "; ".join(f"{exchange} <- {key}" for exchange, key in spec.bindings)
    description = (
        f"Service {handler.service}, handler {handler.name}: consumes "
        f"{', '.join(handler.types)} from queue {spec.name} (bindings: {bindings}). "
        f"Payload: {', '.join(f'{m.TYPE} v{m.VERSION} ({m.__name__})' for m in models)}."
    )
    subscriber = broker.subscriber(
        queue,
        channel=Channel(prefetch_count=prefetch),  # a Channel object each: a channel each
        ack_policy=AckPolicy.MANUAL,
        parser=_delivery_as_message,
        decoder=_raw_delivery,
        no_reply=True,
        title=spec.name,
        description=description,
    )
    subscriber(_documented(receive, handler.name, models, title=f"{spec.name}:Payload"))
    assert isinstance(subscriber, FleetSubscriber)
    return subscriber


def newest_model(type_: str) -> MessageClass:
    return registry.model_for(type_, registry.latest_version(type_))


def _documented(receive: Receive, name: str, models: list[MessageClass], *, title: str) -> Receive:
    """``receive``, named after the handler and with the signature FastStream reads the
    payload schema from (an explicit one: this module keeps its annotations as strings)."""
    annotation: Any = (
        models[0]
        if len(models) == 1
        # A union is named by its field title; without one every handler's would be "message".
        else Annotated[Union[tuple(models)], Field(title=title)]  # noqa: UP007
    )
    receive.__name__ = receive.__qualname__ = name
    receive.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                "message", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation
            )
        ],
        return_annotation=None,
    )
    return receive


_NO_ID = "-"


async def _delivery_as_message(delivery: IncomingMessage) -> StreamMessage[IncomingMessage]:
    """FastStream's message around a delivery, with nothing of it parsed: FastStream reads
    only ``reply_to`` (empty: no replies), ``processed`` (its default filter) and the ids (its
    log context, unused without a logger). Given ids, ``StreamMessage`` makes no uuid4."""
    return RabbitMessage(delivery, b"", correlation_id=_NO_ID, message_id=_NO_ID)


async def _raw_delivery(message: StreamMessage[IncomingMessage]) -> IncomingMessage:
    """The handler's argument: the aio-pika delivery itself (async: FastStream would run a
    plain function in a worker thread)."""
    return message.raw_message
