"""A circuit breaker per service: the worker stops consuming while what the service depends
on is unreachable, instead of sending every message round the retry tiers into its DLQ.

    closed ──(FLEET_BREAKER_FAILURES unreachable failures in a row, confirmed by a probe)──▶
    tripped ──(a probe every FLEET_BREAKER_PROBE_SECONDS passes)──▶
    resuming (one delivery at a time) ──(FLEET_BREAKER_RESUME_SUCCESSES in a row)──▶ closed
    resuming ──(one more unreachable failure)──▶ tripped

Only a failure that says a dependency cannot be reached counts (``unreachable``): a refused
or lost connection, a pool with no connection free in time, a database that does not accept
connections, a publish the broker did not take. A bad message, a handler's bug, a business
refusal, a serialization failure: these take the ordinary retry and dead-letter paths, with
the breaker closed. And before it trips, the breaker asks the dependency itself (a probe on
a connection of its own): a handler that fails with a connection error while its database
answers is a handler's bug, and its messages keep the retry and dead-letter paths.

This module's first half is the breaker's rules, as values (``BreakerState`` and its
transitions, tested without servers); ``Breaker`` carries them out for a worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

import asyncmy
import asyncpg
from aio_pika.exceptions import AMQPConnectionError, ChannelInvalidStateError
from aiormq.exceptions import AMQPError

from db import mariadb
from workers.runtime.errors import PermanentError, TransientError

log = logging.getLogger("fleet.breaker")

Dependency = Literal["database", "broker"]
Status = Literal["closed", "tripped", "resuming"]

# SQLSTATEs that say the database cannot be used at all: 08 connection exception, 53300 too
# many connections, 57P01-57P03 shut down, crashed, not accepting connections yet.
_UNREACHABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")


# A connection refused or lost, or a pool with no connection free in time, as each driver
# says it.
_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.InterfaceError, asyncmy.errors.InterfaceError)


def unreachable(error: BaseException) -> Dependency | None:
    """Which dependency ``error`` says could not be reached, or None when it is about the
    message or the handler (those keep the retry and dead-letter paths)."""
    if isinstance(error, (TransientError, PermanentError)):
        return None  # a handler's own word on its message
    if isinstance(error, (AMQPError, AMQPConnectionError, ChannelInvalidStateError)):
        return "broker"
    if mariadb.judged(error):
        return "database" if mariadb.out_of_reach(error) else None
    current: BaseException | None = error
    while current is not None:
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str):
            if state.startswith(_UNREACHABLE_SQLSTATES) or _not_accepting_connections(current):
                return "database"
            return None
        current = current.__cause__
    # Refused or lost connections, a pool with no connection free in time: the consumer's
    # only round trips that are not to the broker are to the database.
    if isinstance(
        error, (OSError, TimeoutError, asyncpg.InterfaceError, asyncmy.errors.InterfaceError)
    ):
        return "database"
    return None


def _not_accepting_connections(error: BaseException) -> bool:
    """55000 (object not in prerequisite state) as a connection is refused by a database
    whose connections an operator turned off (ALLOW_CONNECTIONS false); the same SQLSTATE
    for anything else is about the statement."""
    return getattr(error, "sqlstate", None) == "55000" and "accepting connections" in str(error)


@dataclass(frozen=True)
class Outage:
    """What is unreachable, since when, and the error that said so."""

    dependency: Dependency
    since: datetime
    error: str

    def describe(self) -> str:
        return f"{self.dependency} unreachable since {self.since:%Y-%m-%d %H:%M:%S} UTC"


@dataclass(frozen=True)
class BreakerState:
    status: Status = "closed"
    failures: int = 0  # unreachable failures in a row (closed)
    successes: int = 0  # deliveries handled in a row (resuming)
    outage: Outage | None = None  # while tripped or resuming
    # When the last outage began and ended: a saga's deadline that passed within it was
    # the outage's doing (``workers.orchestrator``).
    last_outage: tuple[datetime, datetime] | None = None

    @property
    def consuming(self) -> bool:
        """Whether the handlers' consumers stay. Not while the database is out of reach;
        while the broker is, they are gone with the connection, and aio-pika restores them
        once it reconnects (a basic.cancel sent meanwhile would only make it forget one);
        the deliveries they bring then find the broker answering a probe."""
        return self.status != "tripped" or (
            self.outage is not None and self.outage.dependency == "broker"
        )

    @property
    def prefetch_limited(self) -> bool:
        """One delivery at a time (resuming)."""
        return self.status == "resuming"


@dataclass(frozen=True)
class BreakerRules:
    failures: int = 5  # unreachable failures in a row that trip it (after a probe agrees)
    resume_successes: int = 5  # deliveries handled in a row, one at a time, before full speed


def on_unreachable(state: BreakerState, rules: BreakerRules) -> tuple[BreakerState, bool]:
    """A delivery failed because a dependency could not be reached. The new state, and
    whether to probe now to confirm a trip (it trips only if the probe fails too)."""
    if state.status == "tripped":
        return state, False
    if state.status == "resuming":
        return state, True  # one failure while resuming: trip again, if the probe agrees
    failures = state.failures + 1
    return replace(state, failures=failures), failures >= rules.failures


def on_handled(state: BreakerState, rules: BreakerRules, now: datetime) -> BreakerState:
    """A delivery was handled (applied or found a duplicate)."""
    if state.status == "closed":
        return replace(state, failures=0) if state.failures else state
    if state.status == "resuming":
        successes = state.successes + 1
        if successes >= rules.resume_successes:
            return _closed(state, now)
        return replace(state, successes=successes)
    return state


def on_probe(
    state: BreakerState, outage: Outage | None, now: datetime
) -> tuple[BreakerState, str | None]:
    """A probe's result (``outage`` None: the dependency answers). The new state and the
    change to tell (``tripped``, ``resuming``), if any."""
    if outage is not None:
        if state.status == "tripped":
            return state, None
        since = state.outage.since if state.outage is not None else outage.since
        tripped = replace(outage, since=since)
        return replace(state, status="tripped", outage=tripped, failures=0, successes=0), "tripped"
    if state.status == "tripped":
        return replace(state, status="resuming", successes=0), "resuming"
    if state.status == "closed":
        return replace(state, failures=0), None  # the failures were not the dependency's
    return state, None


def _closed(state: BreakerState, now: datetime) -> BreakerState:
    since = state.outage.since if state.outage is not None else now
    return BreakerState("closed", last_outage=(since, now))


# --- Carrying the rules out in a worker. ---------------------------------------------

STILL_TRIPPED = "still tripped"

# What the worker does on a change: stop or start consuming, one delivery at a time or not.
Apply = Callable[[BreakerState], Awaitable[None]]
# Asks a dependency whether it answers: None if it does, else what it said.
Probe = Callable[[Dependency], Awaitable[str | None]]
# Tells the world of a change (marker, metric, audit): (change, state), the change being
# "tripped", "resuming" or "closed", or STILL_TRIPPED after each probe that failed.
Announce = Callable[[str, BreakerState], Awaitable[None]]


class Breaker:
    """One service's breaker in a worker (see the module docstring)."""

    def __init__(
        self,
        service: str,
        rules: BreakerRules,
        probe: Probe,
        *,
        probe_seconds: float,
        enabled: bool = True,
    ) -> None:
        self.service = service
        self.rules = rules
        self.enabled = enabled
        self.state = BreakerState()
        self._probe = probe
        self._probe_seconds = probe_seconds
        self._listeners: list[Apply] = []
        self._announcers: list[Announce] = []
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._unapplied = False  # the last change could not be applied in full

    def on_change(self, apply: Apply) -> None:
        """``apply(state)`` after every change of whether or how to consume."""
        self._listeners.append(apply)

    def on_announce(self, announce: Announce) -> None:
        self._announcers.append(announce)

    @property
    def tripped(self) -> bool:
        return self.state.status == "tripped"

    async def unreachable(self, dependency: Dependency, error: BaseException) -> bool:
        """A delivery failed on ``dependency``. Whether the breaker is (now) tripped: then
        the delivery goes back to its queue instead of the retry path."""
        if not self.enabled:
            return False
        async with self._lock:
            self.state, probe_now = on_unreachable(self.state, self.rules)
            if probe_now:
                said = await self._probe(dependency)
                outage = (
                    None
                    if said is None
                    else Outage(dependency, datetime.now(UTC), f"{type(error).__name__}: {said}")
                )
                await self._change(*on_probe(self.state, outage, datetime.now(UTC)))
        return self.tripped

    async def still_tripped(self) -> bool:
        """Whether the breaker is tripped, after one more probe if it is: deliveries that
        come while it is tripped (its pause could not be applied: the broker came back and
        restored the consumer) go on once the dependency answers, else back to their
        queue, a probe's time later rather than at once."""
        if not self.tripped:
            return False  # (every batch asks: no lock taken while closed)
        await self._probe_again()
        return self.tripped

    def handled(self, count: int = 1) -> None:
        """``count`` deliveries were handled."""
        if not self.enabled or (self.state.status == "closed" and not self.state.failures):
            return
        before = self.state
        for _ in range(count):
            self.state = on_handled(self.state, self.rules, datetime.now(UTC))
        if before.status != self.state.status:
            self._changed.set()  # resumed in full: told by ``run``

    async def trip(self, dependency: Dependency, error: str) -> None:
        """Tripped from outside the deliveries (the consuming connection was lost)."""
        if not self.enabled:
            return
        async with self._lock:
            outage = Outage(dependency, datetime.now(UTC), error)
            await self._change(*on_probe(self.state, outage, datetime.now(UTC)))

    async def run(self, stop: asyncio.Event) -> None:
        """Probe every ``probe_seconds`` while tripped; tell the full resume. Until ``stop``."""
        told = self.state
        while not stop.is_set():
            waiting = asyncio.ensure_future(self._changed.wait())
            stopping = asyncio.ensure_future(stop.wait())
            # Tripped: probe. A change not applied (the broker was away): apply it again.
            timeout = (
                self._probe_seconds
                if self.tripped
                else min(1.0, self._probe_seconds)
                if self._unapplied
                else None
            )
            await asyncio.wait({waiting, stopping}, timeout=timeout, return_when="FIRST_COMPLETED")
            for future in (waiting, stopping):
                future.cancel()
            self._changed.clear()
            if stop.is_set():
                return
            if self.tripped:
                await self._probe_again()
            elif self._unapplied:
                await self._apply(self.state.status)
            if told.status == "resuming" and self.state.status == "closed":
                log.info("%s: resumed at full speed", self.service)
                await self._tell("closed")
            told = self.state

    async def _probe_again(self) -> None:
        """While tripped: ask the dependency once more and change as it answers. Still
        tripped, the pause is applied again (it may not have stuck: the broker was away
        too) and the trip marker renewed."""
        async with self._lock:
            outage = self.state.outage
            if not self.tripped or outage is None:
                return
            said = await self._probe(outage.dependency)
            answered = None if said is None else replace(outage, error=said)
            await self._change(*on_probe(self.state, answered, datetime.now(UTC)))
        if self.tripped:
            await self._apply("tripped")
            await self._announce(STILL_TRIPPED)

    async def _change(self, state: BreakerState, change: str | None) -> None:
        self.state = state
        if change is None:
            return
        if change == "tripped":
            assert state.outage is not None
            log.warning(
                "%s: %s (%s); consuming stopped, messages wait in their queues;"
                " probing every %.0f s",
                self.service,
                state.outage.describe(),
                state.outage.error,
                self._probe_seconds,
            )
        elif change == "resuming":
            log.info(
                "%s: the %s answers again; resuming one delivery at a time",
                self.service,
                state.outage.dependency if state.outage else "dependency",
            )
        self._changed.set()
        await self._tell(change)

    async def _tell(self, change: str) -> None:
        await self._apply(change)
        await self._announce(change)

    async def _apply(self, change: str) -> None:
        state = self.state
        self._unapplied = False
        for apply in self._listeners:
            try:
                await apply(state)
            except Exception as error:  # the broker is away too: ``run`` applies it again
                self._unapplied = True
                log.debug("%s: could not apply %s yet: %s", self.service, change, error)

    async def _announce(self, change: str) -> None:
        state = self.state
        for announce in self._announcers:
            try:
                await announce(change, state)
            except Exception as error:
                log.warning("%s: could not tell of %s: %s", self.service, change, error)
