"""The relay waits out its database or the broker with one line when it starts waiting and
one when it works again, nothing per try: ``Outage`` as values, what a failed try waits for,
and a relay whose database refuses a few tries (asyncpg's connect replaced, no server)."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import asyncpg
import pytest

from workers.runtime import relay
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.relay import BROKER, DATABASE, BrokerFailure, Outage, waited_for
from workers.runtime.settings import Settings

REFUSED = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


def test_an_outage_is_one_line_when_it_starts_and_one_when_it_ends() -> None:
    outage, started = Outage().failed(DATABASE, REFUSED, now=100.0)
    assert outage == Outage(DATABASE, since=100.0)
    assert started == (
        "waiting for the database: ConnectionRefusedError:"
        " [Errno 111] Connect call failed ('127.0.0.1', 5432)"
    )
    # Every try after it fails the same way: the same value, nothing to say (whatever the
    # error says now).
    for now in (101.0, 102.0, 103.0):
        again, line = outage.failed(DATABASE, OSError("Multiple exceptions"), now)
        assert (again, line) == (outage, None)
    working, ended = outage.worked(DATABASE, now=112.0)
    assert working == Outage()
    assert ended == "the database works again, after 12.0 s of waiting"


def test_what_works_says_nothing_unless_it_was_waited_for() -> None:
    assert Outage().worked(DATABASE, now=5.0) == (Outage(), None)
    assert Outage().worked(BROKER, now=5.0) == (Outage(), None)
    # The database answering ends no wait for the broker.
    waiting = Outage(BROKER, since=1.0)
    assert waiting.worked(DATABASE, now=5.0) == (waiting, None)


def test_the_database_back_and_the_broker_away_are_two_outages() -> None:
    outage, _ = Outage().failed(DATABASE, REFUSED, now=10.0)
    outage, ended = outage.worked(DATABASE, now=14.0)
    assert ended == "the database works again, after 4.0 s of waiting"
    lost = ConnectionError("the broker connection was lost (no heartbeat)")
    outage, started = outage.failed(BROKER, lost, now=14.5)
    assert outage == Outage(BROKER, since=14.5)
    assert started == (
        "waiting for the broker: ConnectionError: the broker connection was lost (no heartbeat)"
    )
    assert outage.worked(BROKER, now=20.0)[1] == "the broker works again, after 5.5 s of waiting"


def test_a_failed_try_waits_for_the_broker_only_when_a_publish_failed() -> None:
    lost = ConnectionError("the broker connection was lost (no heartbeat)")
    try:
        raise BrokerFailure(str(lost)) from lost
    except BrokerFailure as failure:
        assert waited_for(failure) == (BROKER, lost)  # named by the broker's own error
    for error in (
        REFUSED,
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ):
        assert waited_for(error) == (DATABASE, error)
    # Neither's: the relay's own fault, said on every try as before.
    assert waited_for(ValueError("no such message type")) is None


class StandbyConnection:
    """What asyncpg.connect gives once the database is back: another relay holds the lock,
    and the test is over."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    async def fetchval(self, query: str) -> bool:
        self.stop.set()
        return False

    async def close(self) -> None:
        pass


async def test_a_relay_says_once_that_it_waits_for_its_database_and_once_that_it_is_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refusals = 8
    stop = asyncio.Event()
    tries = 0

    async def connect(url: str) -> StandbyConnection:
        nonlocal tries
        tries += 1
        if tries <= refusals:
            raise REFUSED
        return StandbyConnection(stop)

    monkeypatch.setattr(asyncpg, "connect", connect)
    caplog.set_level(logging.INFO, logger="fleet.relay")
    publisher = cast(ConfirmedPublisher, object())  # never reached: the lock is not taken
    relay_ = relay.Relay(
        Settings(relay_lock_retry=0.01, db_secrets={"inventory": "secret"}), "inventory", publisher
    )
    await asyncio.wait_for(relay_.run(stop), timeout=30)

    assert tries == refusals + 1
    lines = [record.getMessage() for record in caplog.records if record.name == "fleet.relay"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("inventory relay: waiting for the database: ConnectionRefusedError")
    assert lines[1].startswith("inventory relay: the database works again, after 0.")
    assert lines[2] == "inventory relay: standby, another relay holds the lock"
    assert relay_.outage == Outage()
