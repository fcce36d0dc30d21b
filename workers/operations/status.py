"""``fleet status``: one reading of the whole fleet, and what in it needs an operator.

For each service: its handler queues (depth, consumers) with their DLQs, read from the
broker with passive declares, and its outbox backlog and whether a relay holds the
publishing lock, read from its own database as its own role. Then the orchestrated sagas by
state and past their deadline, and the view's lag. Read-only.

A server that cannot be reached is a reading like any other (its reason, one line), never
an exception: ``fleet status --watch`` keeps drawing through a broker or database restart.
What needs action is said by ``problems``, one line each, which the exit code follows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncmy
import asyncpg
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from db.adapters import store_once
from workers.orchestrator import public as orchestrator
from workers.order_view import public as view
from workers.runtime import catalog, connections, control, topology
from workers.runtime.role_secrets import SecretsError
from workers.runtime.settings import Settings

ORCHESTRATOR = "orchestrator"
VIEW = "order_view"

DEFAULT_OUTBOX_AGE_THRESHOLD = 60.0
# A server that accepts the connection and then hangs must not hang the screen with it.
READ_TIMEOUT_SECONDS = 10.0

# What reaching a server can raise: refused, reset, timed out, refused by the server
# (authentication, no such database or table), or a connection that died mid-read.
BROKER_ERRORS = (AMQPError, ChannelInvalidStateError, OSError, TimeoutError)
# InternalClientError: asyncpg's answer on a connection whose backend died mid-operation;
# SecretsError: no secret for the service's role here, or its secrets file refused.
DATABASE_ERRORS = (
    SecretsError,
    asyncpg.PostgresError,
    asyncmy.errors.MySQLError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def _reason(error: BaseException) -> str:
    """An error as one line, its type first (a timeout's message is empty)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclass(frozen=True)
class QueueStatus:
    """A queue as a passive declare found it; ``messages`` and ``consumers`` are None when
    it does not exist."""

    name: str
    messages: int | None
    consumers: int | None

    @property
    def declared(self) -> bool:
        return self.messages is not None

    @classmethod
    def of(cls, name: str, state: topology.QueueState | None) -> QueueStatus:
        if state is None:
            return cls(name, None, None)
        return cls(name, state.messages, state.consumers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.name,
            "declared": self.declared,
            "messages": self.messages,
            "consumers": self.consumers,
        }


def _undeclared(queue: QueueStatus) -> str:
    return f"{queue.name}: queue not declared (has 'fleet topology' run?)"


def dead_letter_problems(dlq: QueueStatus) -> list[str]:
    if not dlq.declared:
        return [_undeclared(dlq)]
    if dlq.messages:
        return [f"{dlq.name}: {dlq.messages} dead letter(s)"]
    return []


@dataclass(frozen=True)
class HandlerQueueStatus:
    """A handler's queue and its dead-letter queue; ``paused`` by an operator (``fleet
    pause``), its queue has no consumer by choice, which alone needs no action."""

    queue: QueueStatus
    dead_letters: QueueStatus
    paused: bool = False
    # Its service's breaker is tripped (``workers.runtime.breaker``): why, as "<dependency>
    # unreachable since <time>". It resumes by itself, but an outage needs looking at.
    tripped: str | None = None

    @property
    def queue_problems(self) -> list[str]:
        if not self.queue.declared:
            return [_undeclared(self.queue)]
        if self.tripped is not None:
            return [f"{self.queue.name}: paused (auto: {self.tripped})"]
        if not self.queue.consumers and not self.paused:
            return [f"{self.queue.name}: no consumer ({self.queue.messages} message(s) waiting)"]
        return []

    @property
    def problems(self) -> list[str]:
        if not self.queue.declared and not self.dead_letters.declared:
            return [f"{self.queue.name} and its DLQ: not declared (has 'fleet topology' run?)"]
        return self.queue_problems + dead_letter_problems(self.dead_letters)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.queue.to_dict(),
            "paused": self.paused,
            "tripped": self.tripped,
            "dead_letter_queue": self.dead_letters.to_dict(),
            "problems": self.problems,
        }


@dataclass(frozen=True)
class OutboxStatus:
    """Rows not yet published, how long the oldest has waited, whether a relay publishes."""

    unpublished: int
    oldest_age_seconds: float | None
    relay_active: bool

    def problems(self, service: str, age_threshold: float) -> list[str]:
        found = []
        if self.oldest_age_seconds is not None and self.oldest_age_seconds > age_threshold:
            found.append(
                f"{service} outbox: oldest unpublished row is {self.oldest_age_seconds:.0f} s"
                f" old (more than {age_threshold:g} s)"
            )
        if self.unpublished and not self.relay_active:
            found.append(
                f"{service} outbox: {self.unpublished} unpublished row(s), no relay active"
            )
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "unpublished": self.unpublished,
            "oldest_age_seconds": self.oldest_age_seconds,
            "relay_active": self.relay_active,
        }


@dataclass(frozen=True)
class ServiceStatus:
    """One service. ``queues`` is None when the broker could not be read, ``outbox`` when
    the service's database could not (``database_error`` says why)."""

    name: str
    queues: tuple[HandlerQueueStatus, ...] | None
    outbox: OutboxStatus | None
    database_error: str | None = None

    def problems(self, outbox_age_threshold: float) -> list[str]:
        found = []
        if self.database_error is not None:
            found.append(f"{self.name} database unreachable: {self.database_error}")
        for queue in self.queues or ():
            found.extend(queue.problems)
        if self.outbox is not None:
            found.extend(self.outbox.problems(self.name, outbox_age_threshold))
        return found

    def to_dict(self, outbox_age_threshold: float) -> dict[str, Any]:
        return {
            "service": self.name,
            "database": {
                "reachable": self.database_error is None,
                "error": self.database_error,
            },
            "queues": None if self.queues is None else [q.to_dict() for q in self.queues],
            "outbox": None if self.outbox is None else self.outbox.to_dict(),
            "problems": self.problems(outbox_age_threshold),
        }


@dataclass(frozen=True)
class SagaStatus:
    """Orchestrated sagas by state (running, compensating, confirmed, rejected), and how
    many still wait on a step whose deadline has passed."""

    by_status: dict[str, int]
    overdue: int

    @property
    def problems(self) -> list[str]:
        return [f"sagas: {self.overdue} past their deadline"] if self.overdue else []

    def to_dict(self) -> dict[str, Any]:
        return {"by_status": dict(self.by_status), "overdue": self.overdue}


@dataclass(frozen=True)
class ViewStatus:
    """How far behind the read model is. Each part is None when its server could not be
    read: ``messages_waiting`` the broker, ``last_update`` the view's database
    (``database_read`` tells that from a view that has applied nothing yet),
    ``lag_seconds`` either."""

    messages_waiting: int | None
    database_read: bool
    last_update: datetime | None
    lag_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages_waiting": self.messages_waiting,
            "database_read": self.database_read,
            "last_update": None if self.last_update is None else self.last_update.isoformat(),
            "lag_seconds": self.lag_seconds,
        }


@dataclass(frozen=True)
class FleetStatus:
    namespace: str
    checked_at: datetime
    outbox_age_threshold: float
    broker_error: str | None
    services: tuple[ServiceStatus, ...]
    # What reached an exchange with no queue bound for it (None: broker not read).
    unrouted: QueueStatus | None
    sagas: SagaStatus | None  # None: the orchestrator's database could not be read
    view: ViewStatus

    @property
    def problems(self) -> list[str]:
        """What needs action, one line each; empty when nothing does."""
        found = []
        if self.broker_error is not None:
            found.append(f"RabbitMQ unreachable: {self.broker_error}")
        for service in self.services:
            found.extend(service.problems(self.outbox_age_threshold))
        if self.unrouted is not None:
            found.extend(dead_letter_problems(self.unrouted))
        if self.sagas is not None:
            found.extend(self.sagas.problems)
        return found

    @property
    def needs_action(self) -> bool:
        return bool(self.problems)

    @property
    def paused(self) -> list[HandlerQueueStatus]:
        """The handler queues an operator paused."""
        return [q for service in self.services for q in service.queues or () if q.paused]

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "checked_at": self.checked_at.isoformat(),
            "needs_action": self.needs_action,
            "problems": self.problems,
            "paused": [queue.queue.name for queue in self.paused],
            "outbox_age_threshold_seconds": self.outbox_age_threshold,
            "broker": {"reachable": self.broker_error is None, "error": self.broker_error},
            "services": [s.to_dict(self.outbox_age_threshold) for s in self.services],
            "unrouted": None if self.unrouted is None else self.unrouted.to_dict(),
            "sagas": None if self.sagas is None else self.sagas.to_dict(),
            "view": self.view.to_dict(),
        }


# --- Reading it. -------------------------------------------------------------------------


@dataclass(frozen=True)
class _DatabaseReading:
    """What one service's database said, or why it said nothing (``error``)."""

    outbox: OutboxStatus | None = None
    sagas: SagaStatus | None = None  # the orchestrator's only
    view_last_update: datetime | None = None  # the view's only
    error: str | None = None


async def _read_database(settings: Settings, service: str) -> _DatabaseReading:
    try:
        async with (
            asyncio.timeout(READ_TIMEOUT_SECONDS),
            store_once(settings.database_url(service)) as store,
            store.connection() as conn,
        ):
            backlog = await store.backlog(conn)
            relay_active = await store.relay_active(conn)
            sagas = None
            if service == ORCHESTRATOR:
                counts = await orchestrator.saga_counts(conn)
                sagas = SagaStatus(counts.by_status, counts.overdue)
            last_update = await view.last_update(conn) if service == VIEW else None
    except DATABASE_ERRORS as error:
        return _DatabaseReading(error=_reason(error))
    return _DatabaseReading(
        OutboxStatus(backlog.rows, backlog.oldest_age_seconds, relay_active),
        sagas,
        last_update,
    )


@dataclass(frozen=True)
class _BrokerReading:
    states: dict[str, topology.QueueState | None]
    view_lag: dict[str, Any]  # as ``view.view_lag`` says it
    tripped: dict[str, str]  # service -> why its breaker is tripped


async def _read_broker(
    settings: Settings, queues: list[str], view_last_update: datetime | None
) -> _BrokerReading:
    async with asyncio.timeout(READ_TIMEOUT_SECONDS):
        connection = await connections.connect(settings.broker_urls)
        try:
            states = await topology.queue_states(connection, queues)
            lag = await view.view_lag(settings, view_last_update, connection=connection)
            outages = await control.tripped_services(
                connection, settings.namespace, catalog.SERVICES
            )
        finally:
            await connection.close()
    tripped = {
        service: f"{outage.get('dependency', 'a dependency')} unreachable since"
        f" {outage.get('since', '?')}"
        for service, outage in outages.items()
    }
    return _BrokerReading(states, lag, tripped)


async def fleet_status(
    settings: Settings, *, outbox_age_threshold: float = DEFAULT_OUTBOX_AGE_THRESHOLD
) -> FleetStatus:
    """The fleet as it is now: the databases read together, then the broker (which needs
    the view's last update for the view's lag)."""
    specs = {
        service.name: service.queue_specs(settings.namespace) for service in catalog.load_all()
    }
    unrouted = topology.unrouted_queue(settings.namespace)
    every_queue = [
        *(
            name
            for service_specs in specs.values()
            for spec in service_specs
            for name in [*topology.queues_of(spec), control.pause_marker(spec.name)]
        ),
        unrouted,
    ]
    readings = await asyncio.gather(*(_read_database(settings, name) for name in specs))
    databases = dict(zip(specs, readings, strict=True))
    view_database = databases[VIEW]
    broker: _BrokerReading | None = None
    broker_error = None
    try:
        broker = await _read_broker(settings, every_queue, view_database.view_last_update)
    except BROKER_ERRORS as error:
        broker_error = _reason(error)
    checked_at = datetime.now(UTC)

    states = broker.states if broker is not None else {}

    def queue(name: str) -> QueueStatus:
        return QueueStatus.of(name, states[name])

    def handler_queues(service: str) -> tuple[HandlerQueueStatus, ...] | None:
        if broker is None:
            return None
        return tuple(
            HandlerQueueStatus(
                queue(spec.name),
                queue(topology.dead_letter_queue(spec.name)),
                paused=states[control.pause_marker(spec.name)] is not None,
                tripped=broker.tripped.get(service),
            )
            for spec in specs[service]
        )

    view_read = view_database.error is None
    return FleetStatus(
        namespace=settings.namespace,
        checked_at=checked_at,
        outbox_age_threshold=outbox_age_threshold,
        broker_error=broker_error,
        services=tuple(
            ServiceStatus(name, handler_queues(name), reading.outbox, reading.error)
            for name, reading in databases.items()
        ),
        unrouted=None if broker is None else queue(unrouted),
        sagas=databases[ORCHESTRATOR].sagas,
        view=ViewStatus(
            messages_waiting=None if broker is None else broker.view_lag["messages_waiting"],
            database_read=view_read,
            last_update=view_database.view_last_update if view_read else None,
            lag_seconds=(
                view.lag_seconds(broker.view_lag, checked_at)
                if broker is not None and view_read
                else None
            ),
        ),
    )
