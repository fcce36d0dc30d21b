"""Confirmed publishing: the one way anything in the fleet puts a message on the broker.

Every publish is persistent, mandatory and waits for the broker's confirm; a nack or a
return (no queue bound) raises, so the caller never believes a lost message was sent.
The relay, the retry and dead-letter paths and the CLI all go through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)

from contracts import Envelope


@dataclass(frozen=True)
class Outgoing:
    exchange: str  # "" is the default exchange: routing key = queue name
    routing_key: str
    body: bytes
    message_id: str | None
    type: str | None = None
    correlation_id: str | None = None
    timestamp: datetime | None = None
    app_id: str | None = None
    content_type: str | None = "application/json"
    headers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_envelope(
        cls,
        envelope: Envelope,
        *,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
    ) -> Outgoing:
        amqp = envelope.to_amqp()
        return cls(
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            message_id=amqp["message_id"],
            type=amqp["type"],
            correlation_id=amqp["correlation_id"],
            timestamp=amqp["timestamp"],
            app_id=amqp["app_id"],
            content_type=amqp["content_type"],
            headers={**(headers or {}), **amqp["headers"]},
        )

    @classmethod
    def copy_of(
        cls,
        message: AbstractIncomingMessage,
        *,
        exchange: str,
        routing_key: str,
        headers: dict[str, Any],
    ) -> Outgoing:
        """A received message, properties kept, to send elsewhere with other headers."""
        return cls(
            exchange=exchange,
            routing_key=routing_key,
            body=message.body,
            message_id=message.message_id,
            type=message.type,
            correlation_id=message.correlation_id,
            timestamp=message.timestamp,
            app_id=message.app_id,
            content_type=message.content_type,
            headers=headers,
        )

    def to_message(self) -> aio_pika.Message:
        return aio_pika.Message(
            self.body,
            headers=self.headers,
            content_type=self.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=self.message_id,
            type=self.type,
            correlation_id=self.correlation_id,
            timestamp=self.timestamp,
            app_id=self.app_id,
        )


class ConfirmedPublisher:
    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    async def connect(cls, url: str) -> ConfirmedPublisher:
        return cls(await aio_pika.connect_robust(url))

    async def channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
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

    async def publish(self, message: Outgoing) -> None:
        exchange = await self._exchange(message.exchange)
        await exchange.publish(message.to_message(), message.routing_key, mandatory=True)

    async def publish_many(self, messages: Sequence[Outgoing]) -> None:
        """Pipelined: every publish is in flight at once, the confirms awaited together.

        Raises the first failure after all have settled, so the caller knows the batch as a
        whole did not get through (and publishes it again: consumers are idempotent).
        """
        results = await asyncio.gather(
            *(self.publish(message) for message in messages), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def close(self) -> None:
        await self._connection.close()
