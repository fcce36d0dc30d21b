"""What happens to every delivered message, in every service, in this order:

1. read the envelope from the AMQP properties (no message id, type or version: DLQ);
2. decode the body against the contract and upcast it to the newest version (DLQ on failure);
3. apply the handler's filter (``when``): a message of another saga style is acked here,
   with no transaction and no inbox row;
4. in one transaction: record it in the inbox (a duplicate stops here), apply the handler,
   write the outbox rows it emitted; commit;
5. only then ack. A transient failure is republished, confirmed, to a delayed retry queue
   and then acked; a permanent one to ``<queue>.dlq`` with the reason in headers, then acked.
   If even that publish fails, the delivery is nacked back to its queue (the broker's
   delivery limit bounds how often).
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from datetime import UTC, datetime

import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from contracts import ContractError, Envelope, registry
from db import inbox
from db.unit_of_work import Received, unit_of_work
from workers.runtime.errors import is_transient
from workers.runtime.publisher import ConfirmedPublisher, sent_on
from workers.runtime.service import Handler
from workers.runtime.settings import ServiceSettings, Settings
from workers.runtime.topology import dead_letter_exchange, dead_letter_queue, retry_queue

log = logging.getLogger("fleet.consumer")

ATTEMPTS_HEADER = "x-attempts"
# Headers a dead letter carries; replay removes them again.
ERROR_HEADERS = ("x-error-type", "x-error-message", "x-original-queue", "x-failed-at")


class Outcome(enum.Enum):
    APPLIED = "applied"
    IGNORED = "ignored"  # the handler's filter left it to another (another saga style)
    DUPLICATE = "duplicate"
    RETRY = "retry"
    DEAD_LETTERED = "dead-lettered"


class Consumer:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        publisher: ConfirmedPublisher,
        service: str,
        section: ServiceSettings | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.publisher = publisher
        self.service = service
        self.section = section  # the service's own settings, for handlers that take them
        # How the deliveries of each handler ended, by handler name (the consumer's own
        # view of its traffic; an ignored delivery leaves no trace anywhere else).
        self.outcomes: Counter[tuple[str, Outcome]] = Counter()

    async def process(self, handler: Handler, raw: AbstractIncomingMessage) -> Outcome:
        """Handle one delivery; the caller acks after this returns (and nacks if it raises)."""
        outcome = await self._process(handler, raw)
        self.outcomes[handler.name, outcome] += 1
        return outcome

    async def _process(self, handler: Handler, raw: AbstractIncomingMessage) -> Outcome:
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

        try:
            async with unit_of_work(
                self.pool,
                producer=self.service,
                namespace=self.settings.namespace,
                received=Received(envelope, dict(raw.headers or {})),
            ) as uow:
                if not await inbox.record(
                    uow.conn, handler.consumer, envelope.message_id, envelope.type
                ):
                    log.info(
                        "duplicate %s %s for %s: acknowledged and skipped",
                        envelope.type,
                        envelope.message_id,
                        handler.consumer,
                    )
                    return Outcome.DUPLICATE
                await handler.apply(uow, message, self.section)
        except Exception as error:
            if is_transient(error) and attempts < self.settings.max_attempts:
                await self._retry(raw, queue, error, attempts)
                return Outcome.RETRY
            await self._dead_letter(raw, queue, error, attempts)
            return Outcome.DEAD_LETTERED
        return Outcome.APPLIED

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
        await self.publisher.publish(
            sent_on(raw, exchange="", routing_key=retry_queue(queue, delay), headers=headers)
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
            ATTEMPTS_HEADER: attempts,
            "x-original-queue": queue,
            "x-failed-at": datetime.now(UTC).isoformat(),
        }
        await self.publisher.publish(
            sent_on(
                raw,
                exchange=dead_letter_exchange(self.settings.namespace),
                routing_key=dead_letter_queue(queue),
                headers=headers,
            )
        )


def _attempts(raw: AbstractIncomingMessage) -> int:
    value = (raw.headers or {}).get(ATTEMPTS_HEADER, 0)
    return value if isinstance(value, int) else 0
