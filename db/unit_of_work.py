"""One transaction in a service's own database, with the messages it emits.

The state change, the inbox entry and the outbox rows commit together or not at all:
a handler that fails before commit leaves no trace.

The unit of work of a handler knows the message being handled (``received``), and every
message emitted in it carries that message's correlation id, names it as its cause and
carries the current trace context, without handlers passing ids around.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
from opentelemetry import propagate, trace

from contracts import Envelope, Message, OutgoingMessage, Received, Send, encode_message
from contracts.routing import exchange_for, replays_exchange
from db import inbox, outbox
from db.engine import ACQUIRE_TIMEOUT


class UnitOfWork:
    def __init__(
        self,
        conn: asyncpg.Connection,
        *,
        producer: str,
        namespace: str,
        received: Received | None = None,
    ) -> None:
        self.conn = conn
        self.producer = producer
        self.namespace = namespace
        self.received = received
        self.emitted: list[OutgoingMessage] = []

    def emit(
        self,
        message: Message,
        *,
        correlation_id: str | None = None,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> Envelope:
        """Queue ``message`` for the outbox; it is written when the unit of work commits.

        For what a decision cannot say: the CLI, a test, a message outside any handler. A
        handler's messages are its decision's ``send``, which the runtime writes the same
        way. Outside a handler ``correlation_id`` may start a correlation; inside one, the
        handled message's correlation wins unless one is given explicitly.
        """
        send = Send(
            message,
            message_id=message_id,
            correlation_id=correlation_id,
            headers=headers or {},
            occurred_at=occurred_at,
        )
        cause = self.received.envelope if self.received is not None else None
        envelope = _envelope(send, self.producer, cause)
        self.emitted.append(_outgoing(envelope, send, self.namespace))
        return envelope

    def send(self, items: Iterable[Message | Send]) -> None:
        """Queue what a decision sends, as the runtime does for a handler's (for work done
        outside a handler: the orchestrator's deadline watcher)."""
        cause = self.received.envelope if self.received is not None else None
        for item in items:
            send = item if isinstance(item, Send) else Send(item)
            envelope = _envelope(send, self.producer, cause)
            self.emitted.append(_outgoing(envelope, send, self.namespace))

    async def lock(self, key: str) -> None:
        """Serialise every decision about ``key`` (an order id) until this transaction ends,
        as a handler's batch does (``inbox.record_locked``)."""
        await inbox.lock_order(self.conn, key)

    async def flush(self) -> None:
        await outbox.append(self.conn, self.emitted)
        self.emitted = []


def outgoing(
    send: Send, *, producer: str, namespace: str, cause: Envelope | None
) -> OutgoingMessage:
    """``send`` as it goes to the outbox, caused by ``cause`` (the message being handled,
    if any)."""
    return _outgoing(_envelope(send, producer, cause), send, namespace)


def _envelope(send: Send, producer: str, cause: Envelope | None) -> Envelope:
    """In ``cause``'s correlation unless ``send`` names its own, naming ``cause`` as its
    cause."""
    return Envelope.new(
        send.message.TYPE,
        send.message.VERSION,
        producer,
        correlation_id=send.correlation_id or (cause.correlation_id if cause else None),
        causation_id=cause.message_id if cause else None,
        message_id=send.message_id,
        occurred_at=send.occurred_at,
    )


def _outgoing(envelope: Envelope, send: Send, namespace: str) -> OutgoingMessage:
    """With the trace context of now (the handler's span), stored with the outbox row and
    sent unchanged by the relay: the message continues its cause's trace, not the relay's."""
    if send.replay_to is not None:
        exchange, routing_key = replays_exchange(namespace), send.replay_to
    else:
        exchange, routing_key = exchange_for(namespace, send.message.KIND), send.message.TYPE
    trace_context: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(trace_context)
    return OutgoingMessage.of(
        envelope,
        encode_message(send.message),
        exchange=exchange,
        routing_key=routing_key,
        headers={**trace_context, **send.headers},
    )


@asynccontextmanager
async def unit_of_work(
    pool: asyncpg.Pool, *, producer: str, namespace: str, received: Received | None = None
) -> AsyncIterator[UnitOfWork]:
    """Begin a transaction on a connection of ``pool``; on a clean exit write the emitted
    messages and commit."""
    async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn, conn.transaction():
        uow = UnitOfWork(conn, producer=producer, namespace=namespace, received=received)
        yield uow
        await uow.flush()
