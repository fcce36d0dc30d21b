"""One transaction in a service's own database, with the messages it sends: for work done
outside a message handler (the orchestrator's deadline watcher, the tests). A handler's
transaction is the runtime's (``workers.runtime.consumer``), which writes its decisions'
messages with ``outgoing`` below, as this does.

The state change and the outbox rows commit together or not at all. Every message written
here carries the current trace context, and a message written in a handled message's
correlation names that message as its cause (``outgoing``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from opentelemetry import propagate, trace

from contracts import Envelope, Message, OutgoingMessage, Send, encode_message
from contracts.routing import exchange_for, replays_exchange
from db.store import Store


class UnitOfWork:
    def __init__(
        self,
        store: Store,
        conn: Any,
        *,
        producer: str,
        namespace: str,
    ) -> None:
        self.store = store
        self.conn = conn
        self.producer = producer
        self.namespace = namespace
        self.emitted: list[OutgoingMessage] = []

    def send(self, items: Iterable[Message | Send]) -> list[Envelope]:
        """Queue messages for the outbox (a decision's ``send``), written when the unit of
        work commits; their envelopes (each starts a correlation unless it names one)."""
        envelopes = []
        for item in items:
            send = item if isinstance(item, Send) else Send(item)
            envelope = _envelope(send, self.producer, cause=None)
            self.emitted.append(_outgoing(envelope, send, self.namespace))
            envelopes.append(envelope)
        return envelopes

    async def lock(self, key: str) -> None:
        """Serialise every decision about ``key`` (an order id) until this transaction ends,
        as a handler's batch does (``Store.record_locked``)."""
        await self.store.lock_order(self.conn, key)

    async def flush(self) -> None:
        await self.store.append(self.conn, self.emitted)
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
async def unit_of_work(store: Store, *, producer: str, namespace: str) -> AsyncIterator[UnitOfWork]:
    """Begin a transaction on a connection of ``store``; on a clean exit write the messages
    sent and commit."""
    async with store.transaction() as conn:
        uow = UnitOfWork(store, conn, producer=producer, namespace=namespace)
        yield uow
        await uow.flush()
