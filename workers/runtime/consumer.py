"""What happens to every delivered message, in every service, in this order:

1. read the envelope from the AMQP properties (no message id, type or version: DLQ);
2. decode the body against the contract and upcast it to the newest version (DLQ on failure);
3. apply the handler's filter (``when``): a message of another saga style is acked here,
   with no transaction and no inbox row;
4. in one transaction: record it in the inbox (a duplicate stops here), take its order's
   lock, load what the handler needs, decide, write the changes and the outbox rows of the
   messages the decision sends; commit;
5. only then ack. A transient failure is republished, confirmed, to the namespace's delay
   tier for its attempt (which sends it back to its queue when due), then acked; a
   permanent one to ``<queue>.dlq`` with the reason in headers, then acked. If even that
   publish fails, the delivery is nacked back to its queue (the broker's delivery limit
   bounds how often).

Deliveries come in batches (``workers.runtime.batches``): the deliveries of one batch that
reach step 4 share one transaction, one inbox statement, one load, one write and one outbox
statement (``workers.runtime.service``: load, decide, write), and are acked after its
commit. If one of them fails, the transaction is rolled back and each is
applied again in a transaction of its own, but for one that failed for good (a permanent
error would only fail again): it takes the dead-letter path at once. A transient failure
may have been the batch's doing (a lock another transaction holds), so that message is
tried alone like the others, and takes the retry path only if it fails there too. So a
commit carries many messages when all goes well, and a failure costs about what it would
have cost alone. (A savepoint per message would keep the others' work, but at two more
round trips per message: more than a batch saves.)
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry.trace import Span
from prometheus_client import Counter as CounterChild
from prometheus_client import Histogram as HistogramChild

from contracts import ContractError, Envelope, Message, OutgoingMessage, Received, Send, registry
from db.store import Store
from db.unit_of_work import outgoing
from workers.runtime import log_context, metrics, tracing
from workers.runtime.amqp_reading import read_amqp_leniently
from workers.runtime.batches import Turn
from workers.runtime.breaker import Breaker, unreachable
from workers.runtime.decision import after
from workers.runtime.errors import is_transient, signature
from workers.runtime.publisher import ConfirmedPublisher, sent_on
from workers.runtime.service import Handler
from workers.runtime.settings import ServiceSettings, Settings
from workers.runtime.topology import dead_letter_exchange, dead_letter_queue, delay_tier

log = logging.getLogger("fleet.consumer")

read_amqp_leniently()  # one foreign client's odd message must not close our connection


ATTEMPTS_HEADER = "x-attempts"
# Headers a dead letter carries; replay removes them again.
ERROR_HEADERS = (
    "x-error-type",
    "x-error-message",
    "x-error-signature",
    "x-original-queue",
    "x-failed-at",
)


class Outcome(enum.Enum):
    APPLIED = "applied"
    IGNORED = "ignored"  # the handler's filter left it to another (another saga style)
    DUPLICATE = "duplicate"
    RETRY = "retry"
    DEAD_LETTERED = "dead-lettered"


@dataclass(frozen=True)
class Decoded:
    """A delivery that is one of ours and the handler's business: ready for a transaction."""

    raw: AbstractIncomingMessage
    envelope: Envelope
    message: Message
    attempts: int  # this one included
    span: Span  # its ``process`` span: current while its handler runs

    @property
    def received(self) -> Received:
        return Received(self.envelope, dict(self.raw.headers or {}))


class WaitForDependency(Exception):
    """The delivery goes back to its queue (nack): the service's breaker is tripped."""


class _FailedInBatch(Exception):
    def __init__(self, index: int, error: Exception) -> None:
        self.index = index  # the failed delivery's place in its batch
        self.error = error


# What became of one delivery: its outcome, or why even its retry or dead letter could not
# be published (the caller then gives the delivery back to its queue).
Result = Outcome | BaseException


class Consumer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        publisher: ConfirmedPublisher,
        service: str,
        section: ServiceSettings | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.settings = settings
        # Stops the worker's consuming while the database or broker is unreachable; the
        # deliveries that fail for it meanwhile go back to their queue (``WaitForDependency``).
        self.breaker = breaker
        self.store = store
        self.publisher = publisher
        self.service = service
        self.section = section  # the service's own settings, for handlers that take them
        # How the deliveries of each handler ended, by handler name (the consumer's own
        # view of its traffic; an ignored delivery leaves no trace anywhere else).
        self.outcomes: Counter[tuple[str, Outcome]] = Counter()
        # Deliveries that shared a transaction with others, and batches that fell back to
        # one transaction each because one of them failed.
        self.batched = 0
        self.fallbacks = 0

    async def process_batch(
        self,
        handler: Handler,
        raws: Sequence[AbstractIncomingMessage],
        turn: Turn | None = None,
    ) -> list[Result]:
        """Handle deliveries of one queue together; a result each, in their order. The
        caller acks each delivery whose result is an Outcome, and nacks the others. With
        ``turn``, the batch waits for the earlier batches in flight that decide about one of
        its orders before it applies anything."""
        started = time.perf_counter()
        results: dict[int, Result] = {}
        ready: dict[int, Decoded] = {}
        spans = [self._start_span(handler, raw) for raw in raws]
        for index, raw in enumerate(raws):
            try:
                with _Handling(spans[index], raw):
                    decoded = await self._decode(handler, raw, spans[index])
            except Exception as error:  # its dead letter could not be published
                results[index] = error
                continue
            if isinstance(decoded, Decoded):
                ready[index] = decoded
            else:
                results[index] = decoded
        if turn is not None:
            keys = {handler.key(delivery.message) for delivery in ready.values()}
            await turn.decide_about(None if None in keys else cast(set[str], keys))
        if ready and self.breaker is not None and await self.breaker.still_tripped():
            # Delivered before the consumer was cancelled: back to the queue, untried.
            for index in ready:
                results[index] = WaitForDependency(f"{self.service}'s breaker is tripped")
            ready = {}
        if len(ready) > 1:
            await self._apply_together(handler, ready, results)
        for index, delivery in ready.items():
            if index not in results:
                try:
                    results[index] = await self._apply_alone(handler, index, delivery)
                except Exception as error:  # its retry or dead letter could not be published
                    await self._unreachable(error)
                    results[index] = error
        if turn is not None:
            turn.applied()
        if self.breaker is not None:
            self.breaker.handled(
                sum(1 for r in results.values() if r in (Outcome.APPLIED, Outcome.DUPLICATE))
            )
        ordered = [results[index] for index in range(len(raws))]
        seconds = time.perf_counter() - started
        for result, span in zip(ordered, spans, strict=True):
            if isinstance(result, Outcome):
                self.outcomes[handler.name, result] += 1
                self._handled(handler.name, result).inc()
                span.set_attribute("fleet.outcome", result.value)
                tracing.end(span)
            else:
                tracing.end(span, result)
            self._seconds(handler.name).observe(seconds)
        return ordered

    @functools.cache  # noqa: B019 (one consumer per worker: its few series, looked up once)
    def _handled(self, handler: str, outcome: Outcome) -> CounterChild:
        return metrics.HANDLED.labels(self.service, handler, outcome.value)

    @functools.cache  # noqa: B019
    def _seconds(self, handler: str) -> HistogramChild:
        return metrics.HANDLING_SECONDS.labels(self.service, handler)

    def _start_span(self, handler: Handler, raw: AbstractIncomingMessage) -> Span:
        return tracing.start_process(
            handler.queue(self.settings.namespace),
            exchange=raw.exchange or "",
            routing_key=raw.routing_key or "",
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            headers=raw.headers,
            attempt=_attempts(raw) + 1,
            handler=handler.consumer,
        )

    async def _decode(
        self, handler: Handler, raw: AbstractIncomingMessage, span: Span
    ) -> Outcome | Decoded:
        queue = handler.queue(self.settings.namespace)
        attempts = _attempts(raw) + 1
        try:
            envelope = Envelope.from_amqp(
                message_id=raw.message_id,
                type=raw.type,
                correlation_id=raw.correlation_id,
                headers=raw.headers or {},
                timestamp=raw.timestamp,
                app_id=raw.app_id,
            )
            if envelope.type not in handler.types:
                raise ContractError(f"{queue} has no handler for messages of type {envelope.type}")
            message = registry.decode(envelope.type, envelope.version, raw.body)
        except ContractError as error:
            await self._dead_letter(raw, queue, error, attempts)
            return Outcome.DEAD_LETTERED
        if not handler.accepts(message):
            return Outcome.IGNORED
        return Decoded(raw, envelope, message, attempts, span)

    async def _apply_alone(self, handler: Handler, index: int, delivery: Decoded) -> Outcome:
        """Apply one delivery in a transaction of its own; its retry or dead-letter path if
        that fails."""
        try:
            outcomes = await self._transaction(handler, {index: delivery})
        except _FailedInBatch as failed:
            error = failed.error
        except Exception as failure:
            error = failure
        else:
            return outcomes[index]
        with _Handling(delivery.span, delivery.raw):
            return await self._failed(handler, delivery, error)

    async def _apply_together(
        self, handler: Handler, ready: dict[int, Decoded], results: dict[int, Result]
    ) -> None:
        """Apply ``ready`` in one transaction and put their outcomes in ``results``. If it
        cannot commit, leave them out, to be applied alone next: all but one that failed
        for good, which is dead-lettered here."""
        try:
            outcomes = await self._transaction(handler, ready)
        except _FailedInBatch as failed:
            self.fallbacks += 1
            if not is_transient(failed.error):  # it would only fail again alone
                delivery = ready[failed.index]
                try:
                    with _Handling(delivery.span, delivery.raw):
                        results[failed.index] = await self._failed(handler, delivery, failed.error)
                except Exception as error:  # its dead letter could not be published
                    results[failed.index] = error
            return
        except Exception as error:  # the batch as a whole: each is tried alone instead
            self.fallbacks += 1
            log.info(
                "%s: a batch of %d failed (%s); one by one", handler.consumer, len(ready), error
            )
            return
        self.batched += len(ready)
        results.update(outcomes)

    async def _transaction(self, handler: Handler, ready: dict[int, Decoded]) -> dict[int, Outcome]:
        """Apply ``ready`` in one transaction: inbox, locks, load, decide each, write, outbox.
        Their outcomes once committed; raises ``_FailedInBatch`` when a decision failed, or
        what stopped the transaction otherwise."""
        outcomes: dict[int, Outcome] = {}
        changes: list[Any] = []
        # The one transaction, seen in the trace of each delivery it carries.
        transaction_spans = tracing.start_children(
            f"transaction {self.service}",
            [delivery.span for delivery in ready.values()],
            {"fleet.batch.size": len(ready)},
        )
        try:
            async with self.store.transaction() as conn:
                # The locks of the orders the batch decides about, together and first,
                # then the inbox: a duplicate stops there.
                keys = {handler.key(d.message) for d in ready.values()}
                fresh = await self.store.record_locked(
                    conn,
                    handler.consumer,
                    {d.envelope.message_id: d.envelope.type for d in ready.values()},
                    {key for key in keys if key is not None},
                )
                todo: list[tuple[int, Decoded]] = []
                for index, delivery in ready.items():
                    message_id = delivery.envelope.message_id
                    if message_id not in fresh:  # recorded before, or earlier in this batch
                        _log_duplicate(handler, delivery.envelope)
                        outcomes[index] = Outcome.DUPLICATE
                        continue
                    fresh.discard(message_id)
                    todo.append((index, delivery))
                state = await handler.load_state(conn, [d.message for _, d in todo], self.section)
                sent: list[OutgoingMessage] = []
                for index, delivery in todo:
                    with _Handling(delivery.span, delivery.raw):
                        try:
                            decision = handler.decision(
                                state, delivery.message, delivery.received, self.section
                            )
                        except Exception as error:
                            raise _FailedInBatch(index, error) from error
                        if decision.changes:
                            state = after(state, decision.changes)
                            changes += decision.changes
                        # Made while its span is current: the messages continue its trace.
                        sent += (self._outgoing(item, delivery.envelope) for item in decision.send)
                        if decision.note:
                            log.info("%s: %s", handler.consumer, decision.note)
                    outcomes[index] = Outcome.APPLIED
                # The outbox first: a write that fails then rolls back rows already
                # written, which is how the tests see that nothing of it survives.
                await self.store.append(conn, sent)
                await handler.store(conn, changes)
        except BaseException as error:
            for span in transaction_spans:
                tracing.end(span, error.error if isinstance(error, _FailedInBatch) else error)
            raise
        for span in transaction_spans:
            tracing.end(span)
        if handler.after_commit is not None and changes:
            handler.after_commit(changes)
        return outcomes

    def _outgoing(self, item: Message | Send, cause: Envelope) -> OutgoingMessage:
        send = item if isinstance(item, Send) else Send(item)
        return outgoing(send, producer=self.service, namespace=self.settings.namespace, cause=cause)

    async def _failed(self, handler: Handler, delivery: Decoded, error: Exception) -> Outcome:
        """The retry or dead-letter path of a delivery whose handler failed (its span is
        current)."""
        queue = handler.queue(self.settings.namespace)
        tracing.failed(delivery.span, error)
        if await self._unreachable(error):
            raise WaitForDependency(f"back to {queue}: {error}") from error
        if is_transient(error) and delivery.attempts < self.settings.max_attempts:
            await self._retry(delivery.raw, queue, error, delivery.attempts)
            return Outcome.RETRY
        await self._dead_letter(delivery.raw, queue, error, delivery.attempts)
        return Outcome.DEAD_LETTERED

    async def _unreachable(self, error: BaseException) -> bool:
        """Whether ``error`` says a dependency is unreachable and the breaker is tripped
        (then the delivery goes back to its queue; the breaker counts it either way)."""
        if self.breaker is None:
            return False
        dependency = unreachable(error)
        if dependency is None:
            return False
        return await self.breaker.unreachable(dependency, error)

    async def _retry(
        self, raw: AbstractIncomingMessage, queue: str, error: Exception, attempts: int
    ) -> None:
        delay = self.settings.retry_delay_ms(attempts)
        log.warning(
            "%s %s failed on attempt %d (%s: %s); retrying in %d ms",
            queue,
            raw.message_id,
            attempts,
            type(error).__name__,
            error,
            delay,
        )
        headers = {**(raw.headers or {}), ATTEMPTS_HEADER: attempts}
        metrics.RETRIES.labels(self.service, queue, type(error).__name__).inc()
        with tracing.span(
            f"retry {queue}",
            attributes={
                "fleet.attempt": attempts,
                "fleet.retry.delay_ms": delay,
                "error.type": type(error).__qualname__,
            },
        ):
            await self.publisher.publish(
                # Its routing key is its queue's name: the tier sends it back there when due.
                sent_on(
                    raw,
                    exchange=delay_tier(self.settings.namespace, delay),
                    routing_key=queue,
                    headers=headers,
                )
            )

    async def _dead_letter(
        self, raw: AbstractIncomingMessage, queue: str, error: Exception, attempts: int
    ) -> None:
        reason = str(error) or type(error).__name__
        log.error(
            "%s %s dead-lettered after %d attempt(s): %s: %s",
            queue,
            raw.message_id,
            attempts,
            type(error).__name__,
            reason,
            # A bad message needs no traceback; a failing handler does.
            exc_info=None if isinstance(error, ContractError) else error,
        )
        headers = {
            **(raw.headers or {}),
            "x-error-type": type(error).__name__,
            "x-error-message": reason[:1000],
            "x-error-signature": signature(error),
            ATTEMPTS_HEADER: attempts,
            "x-original-queue": queue,
            "x-failed-at": datetime.now(UTC).isoformat(),
        }
        metrics.DEAD_LETTERS.labels(self.service, queue, type(error).__name__).inc()
        with tracing.span(
            f"dead-letter {queue}",
            attributes={"fleet.attempt": attempts, "error.type": type(error).__qualname__},
        ):
            await self.publisher.publish(
                sent_on(
                    raw,
                    exchange=dead_letter_exchange(self.settings.namespace),
                    routing_key=dead_letter_queue(queue),
                    headers=headers,
                )
            )


def _log_duplicate(handler: Handler, envelope: Envelope) -> None:
    log.info(
        "duplicate %s %s for %s: acknowledged and skipped",
        envelope.type,
        envelope.message_id,
        handler.consumer,
    )


def _attempts(raw: AbstractIncomingMessage) -> int:
    value = (raw.headers or {}).get(ATTEMPTS_HEADER, 0)
    # Only a count this consumer could have written: another client's bool, negative or
    # huge number counts as none (at 2**63 - 1, the count sent on would not even encode).
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        return 0
    return value


class _Handling:
    """While a delivery is handled: its span current (what it emits carries it), and its
    ids on every log line. A class, not a generator: it is entered several times per
    message."""

    __slots__ = ("_log_token", "_raw", "_span", "_span_token")

    def __init__(self, span: Span, raw: AbstractIncomingMessage) -> None:
        self._span, self._raw = span, raw

    def __enter__(self) -> None:
        raw = self._raw
        traceparent = (raw.headers or {}).get("traceparent")
        self._log_token = log_context.enter(raw.message_id, raw.correlation_id, traceparent)
        self._span_token = tracing.attach(self._span)

    def __exit__(self, *exc_info: object) -> None:
        tracing.detach(self._span_token)
        log_context.leave(self._log_token)
