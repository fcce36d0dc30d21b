"""The store port: all the runtime asks of a service's database, whatever the engine.

A service's handlers read and write their own tables with the engine's connection (their
``store.py`` has the statements); everything else the fleet does in that database goes
through a ``Store``: the batch's transaction with its order locks and inbox records, the
outbox's append, the relay's leadership, claims and housekeeping, and the readings that
status, metrics and verify take. Two adapters implement it, ``db.postgres`` (asyncpg) and
``db.mariadb`` (asyncmy); which one a service gets follows from its database URL's scheme
(``db.adapters``), so no service and no operator tool names an engine.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from contracts import OutgoingMessage

# The name of the lock that makes one relay per database the publisher.
RELAY_LOCK_KEY = "fleet.outbox.relay"


@dataclass(frozen=True)
class Backlog:
    """Outbox rows not published yet, and how long the oldest has waited (None: none)."""

    rows: int
    oldest_age_seconds: float | None


@dataclass(frozen=True)
class Emitted:
    """One message a service emitted for a correlation, as its outbox keeps it."""

    occurred_at: datetime
    producer: str
    type: str
    published: bool


@dataclass(frozen=True)
class Claimed:
    """An outbox row the relay publishes: its id, and the message as it goes out."""

    id: int
    message: OutgoingMessage


class Store(ABC):
    """One service's database: a pool of its connections and the fleet's statements."""

    engine: ClassVar[str]

    # --- Work in a transaction. --------------------------------------------------------

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A connection of the pool in a transaction, committed on a clean exit and rolled
        back otherwise; a handler's load and write get this connection."""

    @abstractmethod
    def connection(self) -> AbstractAsyncContextManager[Any]:
        """A connection of the pool outside a transaction (readings, samplers)."""

    @abstractmethod
    async def record_locked(
        self, conn: Any, consumer: str, messages: dict[str, str], keys: Collection[str]
    ) -> set[str]:
        """Lock ``keys`` (the orders a batch decides about, in sorted order, so that two
        batches never deadlock) until the transaction ends, then record ``messages``
        (message id -> type) in ``consumer``'s inbox; the ids seen for the first time."""

    @abstractmethod
    async def lock_order(self, conn: Any, key: str) -> None:
        """The lock ``record_locked`` takes for ``key``, alone (work outside a batch)."""

    @abstractmethod
    async def append(self, conn: Any, messages: Sequence[OutgoingMessage]) -> None:
        """Put ``messages`` in the outbox in the caller's transaction; the relay is woken
        once it commits."""

    # --- Readings. ---------------------------------------------------------------------

    @abstractmethod
    async def backlog(self, conn: Any) -> Backlog: ...

    @abstractmethod
    async def inbox_rows(self, conn: Any) -> int:
        """Inbox entries kept for duplicate detection (every consumer of the database)."""

    @abstractmethod
    async def inbox_holds(self, conn: Any, consumer: str, message_ids: Sequence[str]) -> set[str]:
        """Which of ``message_ids`` ``consumer``'s inbox holds (a replay applied)."""

    @abstractmethod
    async def relay_active(self, conn: Any) -> bool:
        """True while a relay of this database holds the publishing lock."""

    @abstractmethod
    async def emitted_for(self, conn: Any, correlation_id: str) -> list[Emitted]:
        """What the outbox holds of ``correlation_id``, oldest first."""

    # --- The pool's end (a relay's own connection: db.adapters.open_relay_session). -----

    @abstractmethod
    async def close(self) -> None: ...


class RelaySession(ABC):
    """The relay's connection: leadership, claims, marks and housekeeping.

    ``pipelined``: whether the next batch may be claimed while the one before it awaits its
    confirms (PostgreSQL: claims take no row locks). A session that is not pipelined holds
    its batch's rows locked from claim to mark (MariaDB's ``SKIP LOCKED`` claims)."""

    pipelined: ClassVar[bool]

    @abstractmethod
    async def try_lead(self) -> bool:
        """Take the publishing lock if no other relay holds it."""

    @abstractmethod
    async def still_leading(self) -> bool:
        """Whether the lock taken is still this session's (a lock that lives with its
        connection is lost with it, silently where the driver reconnects)."""

    @abstractmethod
    async def claim(self, limit: int, in_flight: Sequence[int]) -> list[Claimed]:
        """Unpublished rows in id order, those ``in_flight`` left out: never "id > last
        seen", since a lower id may commit after a higher one."""

    @abstractmethod
    async def mark_published(self, ids: Sequence[int]) -> None: ...

    @abstractmethod
    async def release(self) -> None:
        """Let go of a claimed batch that was not marked (its rows go out again later)."""

    @abstractmethod
    async def housekeeping(self, outbox_seconds: float, inbox_seconds: float) -> None:
        """Delete what was published longer than ``outbox_seconds`` ago and inbox entries
        older than ``inbox_seconds``."""

    @abstractmethod
    async def wait_for_work(self, stop: asyncio.Event, seconds: float) -> None:
        """Return when a commit appended to the outbox, ``stop`` is set, or ``seconds``
        have passed (the poll that is the safety net)."""

    @abstractmethod
    async def close(self) -> None: ...
