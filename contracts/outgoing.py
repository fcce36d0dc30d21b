"""The one shape of a message on its way to the broker, from a decision to the publish.

    Send(StockReserved(...))                                            # what a service decides
    OutgoingMessage.of(envelope, body, exchange=..., routing_key=...)   # a new message
    OutgoingMessage.for_message(PlaceOrder(...), producer="fleet-cli", namespace="fleet")

A ``Send`` is what a handler's decision (or ``uow.emit``) asks for: the message and whatever
its envelope must carry besides the defaults. ``db.unit_of_work.outgoing`` makes it an
``OutgoingMessage`` in the handled message's correlation, and that is what goes to the outbox.

It is what the unit of work writes to the outbox, what the relay reads back from an outbox
row, and what the publisher turns into an AMQP message; retries, dead letters and DLQ
replays are received messages sent on as one, with their properties kept. Its headers are
ready to send (the envelope's own included), so nothing rebuilds them on the way.

The AMQP properties are kept as they are, not as an :class:`Envelope`: a message sent on
to a dead-letter queue may be one that never had a valid envelope (no message id, say).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contracts.base import Message
from contracts.envelope import CAUSATION_HEADER, CONTENT_TYPE, VERSION_HEADER, Envelope
from contracts.registry import registry
from contracts.routing import exchange_for


@dataclass(frozen=True)
class Send:
    """A message to send. By default it gets a new message id, the correlation id of the
    message being handled (or a new one), the time of sending, and goes to its kind's
    exchange keyed by its type."""

    message: Message
    message_id: str | None = None
    correlation_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    # A read model's name: the message goes to ``<ns>.replays`` with this routing key (a
    # replay of stored events), not to its kind's exchange.
    replay_to: str | None = None


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    exchange: str  # "" is the default exchange: the routing key is a queue's name
    routing_key: str
    body: bytes
    # AMQP properties (the envelope's for a new message; as received for one sent on).
    message_id: str | None
    type: str | None
    correlation_id: str | None
    timestamp: datetime | None
    app_id: str | None
    content_type: str | None = CONTENT_TYPE
    headers: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        envelope: Envelope,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any] | None = None,
    ) -> OutgoingMessage:
        """A new message: the envelope in properties and headers, beside ``headers``."""
        ready = dict(headers or {})
        ready[VERSION_HEADER] = envelope.version
        if envelope.causation_id is not None:
            ready[CAUSATION_HEADER] = envelope.causation_id
        return cls(
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            message_id=envelope.message_id,
            type=envelope.type,
            correlation_id=envelope.correlation_id,
            timestamp=envelope.occurred_at,
            app_id=envelope.producer,
            headers=ready,
        )

    @classmethod
    def for_message(
        cls,
        message: Message,
        *,
        producer: str,
        namespace: str,
        correlation_id: str | None = None,
        message_id: str | None = None,
    ) -> OutgoingMessage:
        """``message`` in a fresh envelope, to the exchange of its kind, keyed by its type:
        how a client outside the fleet (the CLI, the API, a test) sends a contract."""
        envelope = Envelope.new(
            message.TYPE,
            message.VERSION,
            producer,
            correlation_id=correlation_id,
            message_id=message_id,
        )
        return cls.of(
            envelope,
            registry.encode(message),
            exchange=exchange_for(namespace, message.KIND),
            routing_key=message.TYPE,
        )

    @property
    def version(self) -> int | None:
        value = self.headers.get(VERSION_HEADER)
        return value if isinstance(value, int) else None

    @property
    def causation_id(self) -> str | None:
        value = self.headers.get(CAUSATION_HEADER)
        return value if isinstance(value, str) else None
