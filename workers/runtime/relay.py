"""The outbox relay: publishes a service's outbox rows with publisher confirms.

One relay per service database publishes at a time: it holds a session-level advisory lock
on a dedicated connection, which PostgreSQL releases when that connection dies, so a
standby (another worker of the same service, or `fleet relay`) takes over within
``relay_lock_retry`` seconds. The active relay wakes on the NOTIFY sent by each writing
transaction and also polls every ``relay_poll_interval`` as a safety net.

A crash between publishing and marking publishes those rows again: the consumers' inboxes
make that harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from db import inbox, outbox
from db.engine import asyncpg_url
from workers.runtime import metrics
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.settings import Settings

log = logging.getLogger("fleet.relay")

LOCK = outbox.TRY_RELAY_LOCK


async def run_relay(settings: Settings, service: str, stop: asyncio.Event) -> None:
    """A relay of its own for ``service``'s outbox (``fleet relay``), until ``stop``."""
    publisher = await ConfirmedPublisher.connect(settings.broker_urls)
    try:
        await Relay(settings, service, publisher).run(stop)
    finally:
        await publisher.close()


class Relay:
    def __init__(self, settings: Settings, service: str, publisher: ConfirmedPublisher) -> None:
        self.settings = settings
        self.service = service
        self.publisher = publisher
        self._active = False
        self.active = False  # shows 0 until the lock is taken
        self.published = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; survives database and broker outages."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except Exception as error:  # database or broker trouble: start over
                if stop.is_set():
                    break
                log.warning(
                    "%s relay: %s: %s; reconnecting", self.service, type(error).__name__, error
                )
                self.active = False
                await _wait(stop, self.settings.relay_lock_retry)

    @property
    def active(self) -> bool:
        """Holds the lock and publishes (a standby waits for it)."""
        return self._active

    @active.setter
    def active(self, value: bool) -> None:
        self._active = value
        metrics.RELAY_ACTIVE.labels(self.service).set(1 if value else 0)

    async def _session(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            asyncpg_url(self.settings.database_url(self.service))
        )
        try:
            standby_said = False
            while not await conn.fetchval(LOCK):
                if not standby_said:
                    log.info("%s relay: standby, another relay holds the lock", self.service)
                    standby_said = True
                if await _wait(stop, self.settings.relay_lock_retry):
                    return
            self.active = True
            log.info("%s relay: active", self.service)
            await self._publish_loop(conn, stop)
        finally:
            self.active = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)

    async def _publish_loop(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        woken = asyncio.Event()
        await conn.add_listener(outbox.NOTIFY_CHANNEL, lambda *_: woken.set())
        next_housekeeping = 0.0
        while not stop.is_set():
            woken.clear()
            await self.drain(conn)
            if time.monotonic() >= next_housekeeping:
                await self.housekeeping(conn)
                next_housekeeping = time.monotonic() + self.settings.housekeeping_interval
            await _wait_any(stop, woken, self.settings.relay_poll_interval)

    async def drain(self, conn: asyncpg.Connection) -> int:
        """Publish until no unpublished row is left; returns how many.

        Pipelined with the database: while one batch's confirms are awaited, the next batch
        is read; while the next batch is published, the confirmed one is marked. A batch
        starts only once the one before it is confirmed, so rows go out in id order.
        """
        total = 0
        in_flight: asyncio.Task[None] | None = None
        in_flight_ids: list[int] = []
        try:
            while True:
                rows = await conn.fetch(
                    outbox.CLAIM_BATCH, self.settings.relay_batch_size, in_flight_ids
                )
                confirmed_ids: list[int] = []
                if in_flight is not None:
                    await in_flight  # a nack, a return or a lost connection raises here
                    confirmed_ids, in_flight = in_flight_ids, None
                    await self._fault_pause(len(confirmed_ids))
                if rows:
                    in_flight_ids = [row["id"] for row in rows]
                    in_flight = asyncio.create_task(
                        self.publisher.publish_many([outbox.outgoing_from_row(row) for row in rows])
                    )
                if confirmed_ids:
                    await conn.execute(outbox.MARK_PUBLISHED, confirmed_ids)
                    total += len(confirmed_ids)
                    self.published += len(confirmed_ids)
                    metrics.RELAY_PUBLISHED.labels(self.service).inc(len(confirmed_ids))
                if in_flight is None:
                    return total
        finally:
            if in_flight is not None:
                in_flight.cancel()  # unmarked: published again later, harmless

    async def _fault_pause(self, count: int) -> None:
        """Fault injection for tests: a window between publish and mark to kill the relay in."""
        if self.settings.relay_fault_pause_after_publish:
            print(f"relay: published {count}, pausing before mark", flush=True)
            await asyncio.sleep(self.settings.relay_fault_pause_after_publish)

    async def housekeeping(self, conn: asyncpg.Connection) -> None:
        await conn.execute(outbox.DELETE_PUBLISHED, self.settings.outbox_retention_seconds)
        await conn.execute(inbox.DELETE_EXPIRED, self.settings.inbox_retention_seconds)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def _wait_any(stop: asyncio.Event, woken: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(woken.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
