"""The outbox relay: publishes a service's outbox rows with publisher confirms.

One relay per service database publishes at a time: it holds a session lock on a connection
of its own (``db.store.RelaySession``: an advisory lock on PostgreSQL, ``GET_LOCK`` on
MariaDB), which the server releases when that connection dies, so a standby (another worker
of the same service, or `fleet relay`) takes over within ``relay_lock_retry`` seconds; before
each drain it checks that the lock is still its own. The active relay is woken when a
writing transaction commits (PostgreSQL's NOTIFY; on MariaDB, by that transaction in the
same process) and also polls every ``relay_poll_interval`` as a safety net.

A crash between publishing and marking publishes those rows again: the consumers' inboxes
make that harmless.

While its database or the broker is away the relay tries again every ``relay_lock_retry``
seconds (without the broker, keeping its lock), and says so once when it starts waiting and
once when it works again (``Outage``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncpg

from db import mariadb
from db.adapters import open_relay_session
from db.store import RelaySession
from workers.runtime import metrics
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.settings import Settings

log = logging.getLogger("fleet.relay")

# What a relay waits for when a try fails.
DATABASE, BROKER = "the database", "the broker"


class BrokerFailure(Exception):
    """A batch the broker did not confirm (a lost connection, a nack, a return); the
    broker's error is its cause. Everything else a relay's try uses is its database."""


def waited_for(error: Exception) -> tuple[str, BaseException] | None:
    """What a failed try waits for (DATABASE or BROKER) and the error to name; None for
    an error that is neither's (a fault of the relay's own, not waited out quietly)."""
    if isinstance(error, BrokerFailure):
        return BROKER, error.__cause__ or error
    if isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError | OSError | TimeoutError):
        return DATABASE, error
    if mariadb.judged(error):
        return DATABASE, error
    return None


@dataclass(frozen=True)
class Outage:
    """What the relay says while it waits out its database or the broker: one line when
    a try first fails, none for the tries after it, one when it works again. A value:
    each try's result gives the next one and the line to log, if any."""

    waiting_for: str | None = None  # DATABASE or BROKER while waiting; None: working
    since: float = 0.0  # time.monotonic() of the first try that failed

    def failed(self, what: str, error: BaseException, now: float) -> tuple[Outage, str | None]:
        if what == self.waiting_for:
            return self, None
        return Outage(what, now), f"waiting for {what}: {type(error).__name__}: {error}"

    def worked(self, what: str, now: float) -> tuple[Outage, str | None]:
        if what != self.waiting_for:
            return self, None
        return Outage(), f"{what} works again, after {now - self.since:.1f} s of waiting"


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
        self.outage = Outage()
        self._role_said: str | None = None  # "active" or "standby", as last logged

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; survives database and broker outages."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except Exception as error:  # database or broker trouble: start over
                if stop.is_set():
                    break
                self.active = False
                self._failed(error)
                await _wait(stop, self.settings.relay_lock_retry)

    def _failed(self, error: Exception) -> None:
        waited = waited_for(error)
        if waited is None:
            log.warning(
                "%s relay: %s: %s; starting over", self.service, type(error).__name__, error
            )
            return
        self.outage, line = self.outage.failed(*waited, time.monotonic())
        if line is not None:
            log.warning("%s relay: %s", self.service, line)

    def _worked(self, what: str) -> None:
        self.outage, line = self.outage.worked(what, time.monotonic())
        if line is not None:
            log.info("%s relay: %s", self.service, line)

    def _say_role(self, role: str, line: str) -> None:
        """Once per change: a relay that starts over after its database failed is often
        what it was (a line each time would be a line per try)."""
        if role != self._role_said:
            log.info("%s relay: %s", self.service, line)
            self._role_said = role

    @property
    def active(self) -> bool:
        """Holds the lock and publishes (a standby waits for it)."""
        return self._active

    @active.setter
    def active(self, value: bool) -> None:
        self._active = value
        metrics.RELAY_ACTIVE.labels(self.service).set(1 if value else 0)

    async def _session(self, stop: asyncio.Event) -> None:
        session = await open_relay_session(self.settings.database_url(self.service))
        try:
            while not await session.try_lead():
                self._worked(DATABASE)
                self._say_role("standby", "standby, another relay holds the lock")
                if await _wait(stop, self.settings.relay_lock_retry):
                    return
            self._worked(DATABASE)
            self.active = True
            self._say_role("active", "active")
            await self._publish_loop(session, stop)
        finally:
            self.active = False
            with contextlib.suppress(Exception):
                await session.close()

    async def _publish_loop(self, session: RelaySession, stop: asyncio.Event) -> None:
        next_housekeeping = 0.0
        while not stop.is_set():
            if not await session.still_leading():
                log.warning("%s relay: the lock was lost with its connection", self.service)
                return
            try:
                await self.drain(session)
            except BrokerFailure as error:
                # Waited out here, holding the lock: let go, it would pass from relay to
                # relay with each try (each saying so), and none could publish anyway.
                self._failed(error)
                if await _wait(stop, self.settings.relay_lock_retry):
                    return
                continue
            self._worked(BROKER)  # what was to publish went out (or nothing was)
            if time.monotonic() >= next_housekeeping:
                await session.housekeeping(
                    self.settings.outbox_retention_seconds, self.settings.inbox_retention_seconds
                )
                next_housekeeping = time.monotonic() + self.settings.housekeeping_interval
            await session.wait_for_work(stop, self.settings.relay_poll_interval)

    async def drain(self, session: RelaySession) -> int:
        """Publish until no unpublished row is left; returns how many.

        Pipelined with the database where the engine allows it (``session.pipelined``):
        while one batch's confirms are awaited, the next batch is read; while the next batch
        is published, the confirmed one is marked. A batch starts only once the one before
        it is confirmed, so rows go out in id order.
        """
        total = 0
        in_flight: asyncio.Task[None] | None = None
        in_flight_ids: list[int] = []
        try:
            while True:
                if in_flight is not None and not session.pipelined:
                    await self._confirmed(in_flight)
                    await self._mark(session, in_flight_ids)
                    total += len(in_flight_ids)
                    in_flight, in_flight_ids = None, []
                rows = await session.claim(self.settings.relay_batch_size, in_flight_ids)
                confirmed_ids: list[int] = []
                if in_flight is not None:
                    await self._confirmed(in_flight)
                    confirmed_ids, in_flight = in_flight_ids, None
                if rows:
                    in_flight_ids = [row.id for row in rows]
                    in_flight = asyncio.create_task(
                        self.publisher.publish_many([row.message for row in rows])
                    )
                if confirmed_ids:
                    await self._mark(session, confirmed_ids)
                    total += len(confirmed_ids)
                if in_flight is None:
                    return total
        finally:
            if in_flight is not None:
                in_flight.cancel()  # unmarked: published again later, harmless
                with contextlib.suppress(Exception):
                    await session.release()

    async def _confirmed(self, in_flight: asyncio.Task[None]) -> None:
        try:
            await in_flight  # a nack, a return or a lost connection raises here
        except Exception as error:
            raise BrokerFailure(str(error)) from error

    async def _mark(self, session: RelaySession, ids: list[int]) -> None:
        await self._fault_pause(len(ids))
        await session.mark_published(ids)
        self.published += len(ids)
        metrics.RELAY_PUBLISHED.labels(self.service).inc(len(ids))

    async def _fault_pause(self, count: int) -> None:
        """Fault injection for tests: a window between publish and mark to kill the relay in."""
        if self.settings.relay_fault_pause_after_publish:
            print(f"relay: published {count}, pausing before mark", flush=True)
            await asyncio.sleep(self.settings.relay_fault_pause_after_publish)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
