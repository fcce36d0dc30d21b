"""Confirmed publishing: the one way anything in the fleet puts a message on the broker.

Every publish is persistent, mandatory and waits for the broker's confirm; a nack or a
return (no queue bound) raises, so the caller never believes a lost message was sent.
The relay, the retry and dead-letter paths and the CLI all go through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)

from contracts import OutgoingMessage
from workers.runtime import connections, tracing
from workers.runtime.errors import broker_loss_as_connection_error


def to_amqp_message(
    message: OutgoingMessage, headers: Mapping[str, Any] | None = None
) -> aio_pika.Message:
    """The one conversion to what aio-pika sends: always persistent. ``headers`` replace
    the message's own (the same with the trace context of the send added)."""
    return aio_pika.Message(
        message.body,
        headers=dict(message.headers if headers is None else headers),
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.type,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        app_id=message.app_id,
    )


def sent_on(
    received: AbstractIncomingMessage,
    *,
    exchange: str,
    routing_key: str,
    headers: Mapping[str, Any],
) -> OutgoingMessage:
    """A received message, body and properties kept, to send elsewhere with other headers
    (a retry, a dead letter, a dead letter replayed)."""
    return OutgoingMessage(
        exchange=exchange,
        routing_key=routing_key,
        body=received.body,
        message_id=received.message_id,
        type=received.type,
        correlation_id=received.correlation_id,
        timestamp=received.timestamp,
        app_id=received.app_id,
        content_type=received.content_type,
        headers=headers,
    )


class ConfirmedPublisher:
    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    async def connect(cls, url: str | Sequence[str]) -> ConfirmedPublisher:
        """Over one broker address or a cluster's (``Settings.broker_urls``)."""
        return cls(await connections.connect_robust(url))

    async def channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            with broker_loss_as_connection_error():
                self._channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            self._exchanges = {}
        return self._channel

    async def _exchange(self, name: str) -> AbstractExchange:
        channel = await self.channel()
        if name == "":
            return channel.default_exchange
        if name not in self._exchanges:
            self._exchanges[name] = await channel.get_exchange(name, ensure=False)
        return self._exchanges[name]

    async def publish(self, message: OutgoingMessage) -> None:
        exchange = await self._exchange(message.exchange)
        await self._send(exchange, message)

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Pipelined: every publish is in flight at once, the confirms awaited together.

        Raises the first failure after all have settled, so the caller knows the batch as a
        whole did not get through (and publishes it again: consumers are idempotent).
        """
        exchanges = {name: await self._exchange(name) for name in {m.exchange for m in messages}}
        results = await asyncio.gather(
            *(self._send(exchanges[m.exchange], m) for m in messages), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _send(self, exchange: AbstractExchange, message: OutgoingMessage) -> None:
        span, headers = tracing.start_send(
            exchange=message.exchange,
            routing_key=message.routing_key,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            headers=message.headers,
        )
        try:
            with broker_loss_as_connection_error():
                await exchange.publish(
                    to_amqp_message(message, headers), message.routing_key, mandatory=True
                )
        except BaseException as error:
            tracing.end(span, error)
            raise
        tracing.end(span)

    async def close(self) -> None:
        await self._connection.close()
