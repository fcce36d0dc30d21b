"""What a worker does with its breaker (``workers.runtime.breaker``): which subscriptions
consume and how fast, and how a trip and a resume are made known.

    consuming = Consuming(subscriptions, prefetch=settings.prefetch)
    await consuming.operator_paused(paused)     # the control exchange's reading
    await consuming.breaker_changed(state)      # the breaker's change

An operator's pause wins: a handler consumes only when no operator paused it and the
breaker is not tripped; while the breaker resumes, one delivery at a time.

A trip and a resume are told (``Reporting``): the service's trip marker on the broker
(``control.trip_marker``: read by ``fleet status``, the console, ``fleet resume`` and the
orchestrator's deadline watcher), the ``fleet_breaker_tripped_since_seconds`` gauge, and a
line in the audit log as operator ``fleet`` (written as soon as the operations database
takes it: in an outage of the one PostgreSQL server, after it).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aio_pika.abc import AbstractConnection

from db.engine import connect_once
from workers.runtime import control, metrics
from workers.runtime.breaker import STILL_TRIPPED, Breaker, BreakerState
from workers.runtime.errors import broker_loss_as_connection_error
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.settings import Settings

log = logging.getLogger("fleet.worker")

# The operator the audit log names for what the breaker did.
BREAKER_OPERATOR = "fleet"


def should_consume(queue: str, operator_paused: frozenset[str], breaker: BreakerState) -> bool:
    """Whether the subscription of ``queue`` consumes: an operator's pause wins."""
    return queue not in operator_paused and breaker.consuming


def prefetch_for(breaker: BreakerState, prefetch: int) -> int:
    """One delivery at a time while the breaker resumes."""
    return 1 if breaker.prefetch_limited else prefetch


class Consuming:
    def __init__(self, subscriptions: Sequence[Any], *, prefetch: int) -> None:
        self._subscriptions = subscriptions  # HandlerSubscription each
        self._prefetch = prefetch
        self._operator_paused: frozenset[str] = frozenset()
        self._breaker = BreakerState()
        self._limited = False

    @property
    def operator_paused_queues(self) -> frozenset[str]:
        return self._operator_paused

    async def operator_paused(self, paused: frozenset[str]) -> None:
        """The queues an operator paused now (``control.PauseWatcher``'s reading)."""
        before = self._operator_paused
        self._operator_paused = paused
        await self._apply()
        for subscription in self._subscriptions:
            queue = subscription.queue_name
            if (queue in paused) != (queue in before):
                log.info(
                    "%s: %s",
                    queue,
                    "paused by an operator; messages wait"
                    if queue in paused
                    else "resumed by an operator",
                )

    async def breaker_changed(self, state: BreakerState) -> None:
        self._breaker = state
        await self._apply()

    async def _apply(self) -> None:
        """Every subscription as it should be; each is tried, then the first failure is
        raised (the watcher, or the breaker's next change, tries again)."""
        failures: list[BaseException] = []
        limited = self._breaker.prefetch_limited
        for subscription in self._subscriptions:
            consume = should_consume(subscription.queue_name, self._operator_paused, self._breaker)
            try:
                if limited != self._limited:
                    await subscription.set_prefetch(prefetch_for(self._breaker, self._prefetch))
                if consume == subscription.paused:
                    await (subscription.resume() if consume else subscription.pause())
            except control.BROKER_ERRORS as error:
                failures.append(error)
        if not failures:
            self._limited = limited
        if failures:
            raise failures[0]


def set_tripped_since(service: str, handlers: Sequence[str], state: BreakerState) -> None:
    """``fleet_breaker_tripped_since_seconds`` of each of the service's handlers: when the
    breaker tripped, while it is; 0 while it consumes."""
    since = (
        state.outage.since.timestamp()
        if state.status == "tripped" and state.outage is not None
        else 0.0
    )
    for handler in handlers:
        metrics.BREAKER_TRIPPED_SINCE.labels(service, handler).set(since)


@dataclass
class _AuditLine:
    at: datetime
    action: str
    detail: dict[str, Any]


class Reporting:
    """Tells of the breaker's changes (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        handlers: Sequence[str],
        publisher: ConfirmedPublisher,
    ) -> None:
        self._settings = settings
        self._service = service
        self._handlers = tuple(handlers)  # their names
        self._publisher = publisher
        self._worker = f"{socket.gethostname()}:{os.getpid()}"
        self._unwritten: list[_AuditLine] = []

    async def __call__(self, change: str, state: BreakerState) -> None:
        set_tripped_since(self._service, self._handlers, state)
        if change in ("tripped", "resuming"):
            outage = state.outage
            detail = {
                "handlers": [f"{self._service}.{name}" for name in self._handlers],
                "worker": self._worker,
                **(self._outage_dict(state) if outage is not None else {}),
            }
            if change == "tripped":
                self._unwritten.append(_AuditLine(datetime.now(UTC), "breaker.trip", detail))
            elif change == "resuming":
                self._unwritten.append(_AuditLine(datetime.now(UTC), "breaker.resume", detail))
        # Neither failure is worth a line per probe: the outage was logged when it began.
        try:
            await self._write_audit()
        except Exception as error:
            log.debug("%s: audit log not written yet: %s", self._service, error)
        try:
            await self._mark(change, state)
        except Exception as error:
            log.debug("%s: trip marker not set: %s", self._service, error)

    def _outage_dict(self, state: BreakerState) -> dict[str, Any]:
        assert state.outage is not None
        return {
            "dependency": state.outage.dependency,
            "since": state.outage.since.isoformat(),
            "error": state.outage.error[:500],
        }

    async def _mark(self, change: str, state: BreakerState) -> None:
        if change in ("tripped", STILL_TRIPPED):  # (again on every probe: it expires)
            outage = {**self._outage_dict(state), "worker": self._worker}
        elif change == "resuming":
            outage = None
        else:
            return
        channel = await self._publisher.channel()
        await control.set_tripped(channel, self._settings.namespace, self._service, outage)

    async def _write_audit(self) -> None:
        """The audit lines not written yet, as the service's own role (it may append to
        the audit log, nothing else there); kept for the next change if the operations
        database does not answer."""
        if not self._unwritten:
            return
        settings = self._settings
        async with connect_once(settings.audit_url(self._service)) as conn:
            for line in list(self._unwritten):
                await conn.execute(
                    "INSERT INTO audit (at, operator, action, target, count, detail)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    line.at,
                    BREAKER_OPERATOR,
                    line.action,
                    self._service,
                    len(self._handlers),
                    line.detail,
                )
                self._unwritten.remove(line)


def out_of_reach(
    tripped: dict[str, dict[str, Any]],
    last_seen_tripped: dict[str, datetime],
    now: datetime,
    grace: timedelta,
) -> dict[str, str]:
    """The services out of reach now, with why: those ``tripped`` (their outage as their
    trip marker tells it), and those seen tripped less than ``grace`` ago. Notes in
    ``last_seen_tripped`` that the tripped ones were seen now."""
    out = {
        name: f"paused (auto: {outage.get('dependency', 'a dependency')} unreachable"
        f" since {outage.get('since', '?')})"
        for name, outage in tripped.items()
    }
    last_seen_tripped.update(dict.fromkeys(out, now))
    for name, seen in last_seen_tripped.items():
        if name not in out and seen > now - grace:
            out[name] = f"resumed at {seen:%H:%M:%S} UTC: what waited for it comes first"
    return out


class OutOfReach:
    """What a service's background work knows of outages (the orchestrator's deadline
    watcher asks it, ``workers.orchestrator.handlers``): the services whose breaker is
    tripped, read from their trip markers on the broker; every service while this worker
    cannot read the broker (an outage of the broker looks the same from here); and every
    service while this worker's own breaker is not closed, or closed less than ``grace``
    ago (the replies that waited in its queues through its own outage come first). A
    service stays out of reach for ``grace`` after it was last seen tripped too: when it
    resumes, the messages that waited for it come first."""

    def __init__(
        self, settings: Settings, connection: AbstractConnection, breaker: Breaker
    ) -> None:
        self._settings = settings
        self._connection = connection
        self._breaker = breaker
        self._last_seen_tripped: dict[str, datetime] = {}

    async def services(self, names: Iterable[str], *, grace: timedelta) -> dict[str, str]:
        """Each of ``names`` that is out of reach, with why."""
        names = list(names)
        own = self._breaker.state
        if own.outage is not None and own.status != "closed":
            return dict.fromkeys(
                names, f"unknown: {self._breaker.service}'s {own.outage.describe()}"
            )
        if own.last_outage is not None and own.last_outage[1] > datetime.now(UTC) - grace:
            return dict.fromkeys(names, f"unknown: {self._breaker.service} resumed just now")
        try:
            with broker_loss_as_connection_error():
                tripped = await control.tripped_services(
                    self._connection, self._settings.namespace, names
                )
        except control.BROKER_ERRORS as error:
            return dict.fromkeys(names, f"unknown: the broker cannot be read ({error})")
        out = out_of_reach(tripped, self._last_seen_tripped, datetime.now(UTC), grace)
        return {name: why for name, why in out.items() if name in names}
