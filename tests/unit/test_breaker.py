"""The breaker's rules as values: what counts as a dependency out of reach, when it trips,
resumes and closes, and which subscriptions consume (an operator's pause wins)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncmy
import asyncpg
import pytest
from aiormq.exceptions import AMQPConnectionError
from asyncmy.errors import OperationalError
from prometheus_client import REGISTRY

from db.event_store import ConcurrencyConflict
from workers.runtime.breaker import (
    Breaker,
    BreakerRules,
    BreakerState,
    Dependency,
    Outage,
    on_handled,
    on_probe,
    on_unreachable,
    unreachable,
)
from workers.runtime.errors import PermanentError, TransientError
from workers.runtime.outages import out_of_reach, prefetch_for, set_tripped_since, should_consume

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
RULES = BreakerRules(failures=3, resume_successes=2)
OUTAGE = Outage("database", NOW, "ConnectionRefusedError: refused")


def _sql_error(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("from the server")


@pytest.mark.parametrize(
    ("error", "dependency"),
    [
        (ConnectionRefusedError(111, "refused"), "database"),
        (TimeoutError(), "database"),  # no pool connection free in time
        (asyncpg.exceptions.ConnectionDoesNotExistError("lost"), "database"),
        (_sql_error(asyncpg.exceptions.CannotConnectNowError), "database"),
        (_sql_error(asyncpg.exceptions.AdminShutdownError), "database"),
        (_sql_error(asyncpg.exceptions.TooManyConnectionsError), "database"),
        (AMQPConnectionError("broker gone"), "broker"),
        (
            asyncpg.exceptions.ObjectNotInPrerequisiteStateError(
                'database "fleet_inventory" is not currently accepting connections'
            ),
            "database",
        ),
        (asyncpg.exceptions.ObjectNotInPrerequisiteStateError("currval not yet defined"), None),
        # About the message or the handler: the retry and dead-letter paths.
        (_sql_error(asyncpg.exceptions.SerializationError), None),
        (_sql_error(asyncpg.exceptions.DeadlockDetectedError), None),
        (_sql_error(asyncpg.exceptions.UniqueViolationError), None),
        (ConcurrencyConflict("order-1", 3), None),
        (TransientError("try later"), None),
        (PermanentError("never"), None),
        (KeyError("bug"), None),
        # MariaDB's, by error number.
        (OperationalError(2013, "Lost connection to server during query"), "database"),
        (OperationalError(2003, "Can't connect to MySQL server"), "database"),
        (OperationalError(1927, "Connection was killed"), "database"),
        (OperationalError(1040, "Too many connections"), "database"),
        (asyncmy.errors.InterfaceError(0, "not connected"), "database"),
        (OperationalError(1213, "Deadlock found"), None),
        (asyncmy.errors.IntegrityError(1062, "Duplicate entry"), None),
    ],
)
def test_what_counts_as_out_of_reach(error: BaseException, dependency: Dependency | None) -> None:
    assert unreachable(error) == dependency


def test_it_asks_for_a_probe_after_enough_failures_in_a_row() -> None:
    state = BreakerState()
    asks = []
    for _ in range(3):
        state, probe = on_unreachable(state, RULES)
        asks.append(probe)
    assert asks == [False, False, True]
    assert state.status == "closed" and state.failures == 3


def test_a_handled_delivery_starts_the_count_again() -> None:
    state, _ = on_unreachable(BreakerState(), RULES)
    state, _ = on_unreachable(state, RULES)
    state = on_handled(state, RULES, NOW)
    assert state.failures == 0
    _, probe = on_unreachable(state, RULES)
    assert not probe


def test_a_probe_that_passes_keeps_it_closed_a_handler_bug_is_not_an_outage() -> None:
    state = BreakerState(failures=3)
    state, change = on_probe(state, None, NOW)
    assert (state.status, state.failures, change) == ("closed", 0, None)


def test_trip_resume_slowly_then_close() -> None:
    state, change = on_probe(BreakerState(failures=3), OUTAGE, NOW)
    assert (state.status, change, state.consuming) == ("tripped", "tripped", False)
    assert state.outage == OUTAGE
    # Probes that fail change nothing; the outage keeps its start.
    later = Outage("database", NOW + timedelta(seconds=30), "still refused")
    assert on_probe(state, later, NOW + timedelta(seconds=30)) == (state, None)
    state, change = on_probe(state, None, NOW + timedelta(seconds=60))
    assert (state.status, change, state.consuming, state.prefetch_limited) == (
        "resuming",
        "resuming",
        True,
        True,
    )
    state = on_handled(state, RULES, NOW + timedelta(seconds=61))
    assert state.status == "resuming"
    state = on_handled(state, RULES, NOW + timedelta(seconds=62))
    assert state.status == "closed" and not state.prefetch_limited
    assert state.last_outage == (NOW, NOW + timedelta(seconds=62))


def test_one_failure_while_resuming_asks_for_a_probe_and_trips_again_from_the_same_start() -> None:
    resuming = BreakerState("resuming", outage=OUTAGE, successes=1)
    state, probe = on_unreachable(resuming, RULES)
    assert probe
    again = Outage("database", NOW + timedelta(seconds=90), "refused again")
    state, change = on_probe(state, again, NOW + timedelta(seconds=90))
    assert change == "tripped"
    assert state.outage is not None and state.outage.since == NOW  # one outage, not two


def test_an_operators_pause_wins() -> None:
    closed = BreakerState()
    tripped = BreakerState("tripped", outage=OUTAGE)
    resuming = BreakerState("resuming", outage=OUTAGE)
    paused = frozenset({"fleet.inventory.reserve_stock"})
    assert not should_consume("fleet.inventory.reserve_stock", paused, closed)
    assert not should_consume("fleet.inventory.reserve_stock", paused, resuming)
    assert should_consume("fleet.inventory.release_stock", paused, resuming)
    assert not should_consume("fleet.inventory.release_stock", paused, tripped)
    assert should_consume("fleet.inventory.release_stock", paused, closed)
    assert prefetch_for(resuming, 20) == 1
    assert prefetch_for(closed, 20) == 20


class _Dependency:
    """A probe's answers, in turn."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.probes = 0

    async def __call__(self, dependency: Dependency) -> str | None:
        self.probes += 1
        return self.answers.pop(0) if self.answers else None


async def test_the_breaker_trips_only_when_its_probe_agrees_and_tells_its_changes() -> None:
    probe = _Dependency(None, "refused")  # the first probe passes, the second fails
    breaker = Breaker("inventory", RULES, probe, probe_seconds=0.01)
    told: list[str] = []
    applied: list[BreakerState] = []

    async def announce(change: str, state: BreakerState) -> None:
        told.append(change)

    async def apply(state: BreakerState) -> None:
        applied.append(state)

    breaker.on_announce(announce)
    breaker.on_change(apply)
    error = ConnectionRefusedError(111, "refused")
    assert [await breaker.unreachable("database", error) for _ in range(3)] == [False] * 3
    assert probe.probes == 1 and not breaker.tripped  # the database answered the probe
    assert [await breaker.unreachable("database", error) for _ in range(3)] == [
        False,
        False,
        True,
    ]
    assert told == ["tripped"] and [s.status for s in applied] == ["tripped"]
    stop = asyncio.Event()
    running = asyncio.create_task(breaker.run(stop))
    for _ in range(200):
        if breaker.state.status == "resuming":
            break
        await asyncio.sleep(0.01)
    assert breaker.state.status == "resuming"
    breaker.handled(2)
    for _ in range(200):
        if told[-1] == "closed":
            break
        await asyncio.sleep(0.01)
    stop.set()
    await running
    assert told == ["tripped", "resuming", "closed"]
    assert [s.status for s in applied] == ["tripped", "resuming", "closed"]


async def test_a_disabled_breaker_never_trips() -> None:
    probe = _Dependency("refused")
    breaker = Breaker("inventory", RULES, probe, probe_seconds=0.01, enabled=False)
    error = ConnectionRefusedError(111, "refused")
    assert not any([await breaker.unreachable("database", error) for _ in range(10)])
    assert probe.probes == 0


def test_a_service_stays_out_of_reach_for_a_step_timeout_after_it_resumed() -> None:
    seen: dict[str, datetime] = {}
    grace = timedelta(seconds=10)
    marker = {"dependency": "database", "since": "12:00"}
    out = out_of_reach({"inventory": marker}, seen, NOW, grace)
    assert out == {"inventory": "paused (auto: database unreachable since 12:00)"}
    # Resumed: its marker gone, what waited for it comes first for a while, then no more.
    soon = out_of_reach({}, seen, NOW + timedelta(seconds=9), grace)
    assert list(soon) == ["inventory"] and "comes first" in soon["inventory"]
    assert out_of_reach({}, seen, NOW + timedelta(seconds=11), grace) == {}


def test_a_broker_outage_leaves_the_consumers_to_the_reconnection() -> None:
    """Gone with the connection, restored by aio-pika with it: the breaker sends no
    basic.cancel (aio-pika would forget the consumer) and takes them as they come back."""
    broker = BreakerState("tripped", outage=Outage("broker", NOW, "connection lost"))
    assert broker.consuming
    assert should_consume("fleet.order.confirm_order", frozenset(), broker)
    assert not should_consume(
        "fleet.order.confirm_order", frozenset({"fleet.order.confirm_order"}), broker
    )


def test_the_gauge_says_which_handlers_are_tripped_and_since_when() -> None:
    def since(handler: str) -> float | None:
        return REGISTRY.get_sample_value(
            "fleet_breaker_tripped_since_seconds",
            {"service": "inventory", "handler": handler},
        )

    handlers = ["reserve_stock", "release_stock"]
    set_tripped_since("inventory", handlers, BreakerState("tripped", outage=OUTAGE))
    assert [since(h) for h in handlers] == [NOW.timestamp()] * 2
    set_tripped_since("inventory", handlers, BreakerState("resuming", outage=OUTAGE))
    assert [since(h) for h in handlers] == [0.0, 0.0]
