"""The store port on PostgreSQL (asyncpg): the statements of ``db.inbox`` and ``db.outbox``.

Order locks are transaction-scoped advisory locks; the relay's leadership is a session
advisory lock on its own connection (PostgreSQL releases it when that connection dies);
NOTIFY, sent by the appending statement and delivered at commit, wakes the relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import asyncpg

from contracts import OutgoingMessage
from db import inbox, outbox
from db.engine import ACQUIRE_TIMEOUT, POSTGRESQL, asyncpg_url, create_pool, prepare_connection
from db.store import Backlog, Claimed, Emitted, RelaySession, Store


class PostgresStore(Store):
    engine: ClassVar[str] = POSTGRESQL

    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        self.url = url
        self.pool = pool

    @classmethod
    async def open(cls, url: str, *, size: int, connect_now: bool = True) -> PostgresStore:
        return cls(url, await create_pool(url, size=size, connect_now=connect_now))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
            yield conn

    async def record_locked(
        self,
        conn: asyncpg.Connection,
        consumer: str,
        messages: dict[str, str],
        keys: Collection[str],
    ) -> set[str]:
        return await inbox.record_locked(conn, consumer, messages, keys)

    async def lock_order(self, conn: asyncpg.Connection, key: str) -> None:
        await inbox.lock_order(conn, key)

    async def append(self, conn: asyncpg.Connection, messages: Sequence[OutgoingMessage]) -> None:
        await outbox.append(conn, messages)

    async def backlog(self, conn: asyncpg.Connection) -> Backlog:
        return await outbox.backlog(conn)

    async def inbox_rows(self, conn: asyncpg.Connection) -> int:
        return await inbox.row_count(conn)

    async def inbox_holds(
        self, conn: asyncpg.Connection, consumer: str, message_ids: Sequence[str]
    ) -> set[str]:
        rows = await conn.fetch(inbox.HOLDS, consumer, list(message_ids))
        return {row["message_id"] for row in rows}

    async def relay_active(self, conn: asyncpg.Connection) -> bool:
        return await outbox.relay_active(conn)

    async def emitted_for(self, conn: asyncpg.Connection, correlation_id: str) -> list[Emitted]:
        rows = await conn.fetch(outbox.EMITTED_FOR, correlation_id)
        return [Emitted(**dict(row)) for row in rows]

    async def close(self) -> None:
        await self.pool.close()


class PostgresRelaySession(RelaySession):
    pipelined: ClassVar[bool] = True

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._woken = asyncio.Event()
        self._listening = False

    @classmethod
    async def connect(cls, url: str) -> PostgresRelaySession:
        return cls(await asyncpg.connect(asyncpg_url(url)))

    async def try_lead(self) -> bool:
        led: bool = await self.conn.fetchval(outbox.TRY_RELAY_LOCK)
        if led and not self._listening:
            await self.conn.add_listener(outbox.NOTIFY_CHANNEL, self._wake)
            self._listening = True
        return led

    async def still_leading(self) -> bool:
        # A round trip, not asyncpg's idea of the connection: a backend terminated on the
        # server may not be noticed before the next statement, while a standby already
        # holds the lock; asking the server fails then (or says no).
        held: bool = await self.conn.fetchval(outbox.HOLDS_RELAY_LOCK)
        return held

    async def claim(self, limit: int, in_flight: Sequence[int]) -> list[Claimed]:
        rows = await self.conn.fetch(outbox.CLAIM_BATCH, limit, list(in_flight))
        return [Claimed(row["id"], outbox.outgoing_from_row(row)) for row in rows]

    async def mark_published(self, ids: Sequence[int]) -> None:
        await self.conn.execute(outbox.MARK_PUBLISHED, list(ids))

    async def release(self) -> None:
        """Claims lock nothing here: nothing to let go."""

    async def housekeeping(self, outbox_seconds: float, inbox_seconds: float) -> None:
        await self.conn.execute(outbox.DELETE_PUBLISHED, outbox_seconds)
        await self.conn.execute(inbox.DELETE_EXPIRED, inbox_seconds)

    async def wait_for_work(self, stop: asyncio.Event, seconds: float) -> None:
        await wait_any(stop, self._woken, seconds)
        self._woken.clear()

    def _wake(self, *_: Any) -> None:
        self._woken.set()

    async def close(self) -> None:
        await asyncio.wait_for(self.conn.close(), timeout=2)


async def wait_any(stop: asyncio.Event, woken: asyncio.Event, seconds: float) -> None:
    """Until ``stop`` or ``woken`` is set, or ``seconds`` have passed."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(woken.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def probe(url: str, timeout: float) -> None:
    conn = await asyncpg.connect(asyncpg_url(url), timeout=timeout)
    try:
        await prepare_connection(conn)
        await conn.fetchval("SELECT 1", timeout=timeout)
    finally:
        await conn.close(timeout=timeout)
