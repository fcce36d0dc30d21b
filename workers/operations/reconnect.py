"""Riding out a server restart: long-running commands (load, chaos, view rebuild) read and
publish again, on a fresh connection, when PostgreSQL or RabbitMQ dropped the last one.

Every read of the operator tools opens its own connection (``db.engine.connect_once``), so
"again" is simply the same call after a pause; publishing keeps one connection, so it is
reopened. Only a lost or refused connection is tried again: a wrong password, a missing
database or a bug still ends the command at once, with its one line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
from aiormq.exceptions import AuthenticationError, ChannelClosed, ProbableAuthenticationError

from contracts import OutgoingMessage
from workers.operations import OperatorError
from workers.runtime.publisher import ConfirmedPublisher

T = TypeVar("T")

# Pauses between attempts: short first (a terminated backend is back at once), then longer
# (a server restarting takes seconds); given up after GIVE_UP_SECONDS without success.
DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
GIVE_UP_SECONDS = 120.0
# A publish whose confirm does not come within this long is taken as lost (a broker that
# stopped answering without closing the socket).
PUBLISH_TIMEOUT_SECONDS = 30.0

# SQLSTATEs of a lost server: 08 connection exception, 57P operator intervention (backend
# terminated, server shutting down or starting up), 53300 too many connections (a server
# just restarted is often flooded by every client coming back at once).
_LOST_SQLSTATES = ("08", "57P", "53300")


def database_lost(error: BaseException) -> bool:
    """Whether ``error`` means PostgreSQL dropped or refused the connection. asyncpg's
    InternalClientError ("cannot switch to state ...; another operation is in progress") is
    what a connection terminated in the middle of an operation raises on its next use."""
    if isinstance(
        error, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError
    ):
        return True
    state = getattr(error, "sqlstate", None)
    return isinstance(state, str) and state.startswith(_LOST_SQLSTATES)


def broker_lost(error: BaseException) -> bool:
    """Whether ``error`` means RabbitMQ dropped or refused the connection: a socket error
    (aiormq's connection errors are OSErrors), no answer, aio-pika's RuntimeError for a
    channel whose connection closed under it, a channel closed with its connection (a
    channel the broker closed for a reason of its own, such as a missing exchange, is a
    subclass, and no loss); a refused login is no loss either."""
    if isinstance(error, AuthenticationError | ProbableAuthenticationError):
        return False
    return isinstance(error, OSError | TimeoutError | RuntimeError) or type(error) is ChannelClosed


@dataclass
class Reconnects:
    """How many times a command reconnected, by server; ``say`` hears of each."""

    database: int = 0
    broker: int = 0
    say: Callable[[str], None] = field(default=lambda _: None, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {"database": self.database, "broker": self.broker}

    @property
    def total(self) -> int:
        return self.database + self.broker


async def read_again_on_loss(
    read: Callable[[], Awaitable[T]], reconnects: Reconnects, what: str = "PostgreSQL"
) -> T:
    """``await read()``, again (after a pause) as long as it fails because a server dropped
    or refused its connection, up to GIVE_UP_SECONDS; then the last error is raised."""
    attempt = 0
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while True:
        try:
            return await read()
        except Exception as error:
            lost_broker = _from_broker(error) and broker_lost(error)
            if not (lost_broker or database_lost(error)) or time.monotonic() > deadline:
                raise
            if lost_broker:
                reconnects.broker += 1
            else:
                reconnects.database += 1
            reconnects.say(f"{what}: connection lost ({type(error).__name__}), reconnecting")
        await asyncio.sleep(DELAYS[min(attempt, len(DELAYS) - 1)])
        attempt += 1


def _from_broker(error: BaseException) -> bool:
    """Whether aio-pika or aiormq raised ``error`` (a socket error of either server is
    counted as the database's: most reads are of databases)."""
    return type(error).__module__.startswith(("aiormq", "aio_pika"))


class ReconnectingPublisher:
    """A confirmed publisher that reopens its connection when the broker drops it and
    publishes what was not confirmed again (the receivers are idempotent: a message the
    broker had taken before the loss is applied once)."""

    def __init__(self, urls: str | Sequence[str], reconnects: Reconnects) -> None:
        self.urls = urls  # one broker address or a cluster's (Settings.broker_urls)
        self.reconnects = reconnects
        self._publisher: ConfirmedPublisher | None = None

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        attempt = 0
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while True:
            try:
                if self._publisher is None:
                    self._publisher = await ConfirmedPublisher.connect(self.urls)
                await asyncio.wait_for(
                    self._publisher.publish_many(messages), PUBLISH_TIMEOUT_SECONDS
                )
                return
            except Exception as error:
                if not broker_lost(error):
                    raise
                if time.monotonic() > deadline:
                    raise OperatorError(
                        f"lost RabbitMQ and could not get it back: {error}"
                    ) from error
                await self._drop()
                self.reconnects.broker += 1
                self.reconnects.say(
                    f"RabbitMQ: connection lost ({type(error).__name__}), reconnecting"
                )
            await asyncio.sleep(DELAYS[min(attempt, len(DELAYS) - 1)])
            attempt += 1

    async def publish(self, message: OutgoingMessage) -> None:
        await self.publish_many([message])

    async def _drop(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            try:
                await asyncio.wait_for(publisher.close(), 5)
            except Exception:  # it is gone already; closing it is only tidiness
                pass

    async def close(self) -> None:
        await self._drop()
