"""What the API holds for its whole life: one RabbitMQ connection with its ConfirmedPublisher,
and one engine on the read model's database; and the one-line reasons it gives when either
cannot be used."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import AMQPError

from db.engine import create_pool
from workers.order_view import public as view
from workers.runtime import connections
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.settings import Settings

logger = logging.getLogger("fleet.api")

# Connecting, publishing (up to the confirm) and reading wait this long at most; /health's
# checks wait less, as a load balancer's probe expects a quick answer.
BROKER_TIMEOUT = 5.0
DATABASE_TIMEOUT = 5.0
HEALTH_TIMEOUT = 2.0

# What RabbitMQ's absence looks like: refused or dropped connections, a channel on a
# connection that is reconnecting, a confirm that does not come.
BROKER_ERRORS: tuple[type[BaseException], ...] = (AMQPError, OSError, RuntimeError, TimeoutError)
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


class BrokerUnavailable(Exception):
    """RabbitMQ cannot be used now (HTTP 503); the message is one line."""


LAG_ERRORS: tuple[type[BaseException], ...] = (BrokerUnavailable, *BROKER_ERRORS)


class ViewUnavailable(Exception):
    """The read model's database cannot be used now (HTTP 503); the message is one line."""


def one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__  # a TimeoutError has no text of its own
    return " ".join(text.split())


class BrokerLink:
    """One long-lived robust connection and its ConfirmedPublisher, made on first need: the
    API starts (and /health answers 503) while RabbitMQ is down, and connects once it is up.
    After that the connection restores itself."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self._addresses = addresses  # every node of the broker (failover)
        self._connection: AbstractRobustConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._connecting = asyncio.Lock()  # concurrent requests make one connection

    async def connection(self, timeout: float = BROKER_TIMEOUT) -> AbstractRobustConnection:
        async with self._connecting:
            if self._connection is None:
                try:
                    # aio-pika's timeout bounds the attempt itself; a cancelled attempt would
                    # leave its reconnect loop running.
                    connection = await connections.connect_robust(self._addresses, timeout=timeout)
                except BROKER_ERRORS as error:
                    raise BrokerUnavailable(f"cannot reach RabbitMQ: {one_line(error)}") from error
                self._connection = connection
                self._publisher = ConfirmedPublisher(connection)
            return self._connection

    async def publisher(self) -> ConfirmedPublisher:
        await self.connection()
        assert self._publisher is not None
        return self._publisher

    async def ping(self, timeout: float = HEALTH_TIMEOUT) -> None:
        """A round trip to the broker: open a channel and close it."""
        connection = await self.connection(timeout)
        try:
            async with asyncio.timeout(timeout):
                channel = await connection.channel(publisher_confirms=False)
                await channel.close()
        except BROKER_ERRORS as error:
            raise BrokerUnavailable(f"cannot reach RabbitMQ: {one_line(error)}") from error

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


@dataclass
class Resources:
    settings: Settings
    broker: BrokerLink
    # Opens connections on use, not at start: the API serves (and /health says what is
    # down) while the view's database is down. A connection PostgreSQL dropped while the
    # API was idle is found closed by the pool and replaced. As the view's read-only role
    # (``fleet db init`` makes it): the API can read the view, never write it.
    view_pool: asyncpg.Pool

    @classmethod
    async def open(cls, settings: Settings) -> Resources:
        pool = await create_pool(
            settings.reader_url("order_view"), size=settings.db_pool_size, connect_now=False
        )
        return cls(settings, BrokerLink(settings.broker_urls), pool)

    async def close(self) -> None:
        await self.broker.close()
        await self.view_pool.close()

    @contextlib.asynccontextmanager
    async def view_connection(
        self, timeout: float = DATABASE_TIMEOUT
    ) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with asyncio.timeout(timeout), self.view_pool.acquire() as conn:
                yield conn
        except DATABASE_ERRORS as error:
            raise ViewUnavailable(f"cannot use the view's database: {one_line(error)}") from error

    async def ping_view(self) -> None:
        """A round trip to the view's database that also finds its table (so a database
        that 'fleet db init' has not set up is reported too)."""
        async with self.view_connection(HEALTH_TIMEOUT) as conn:
            await view.ping(conn)

    async def view_lag(self, last_update: Any) -> dict[str, Any]:
        """view.view_lag over the API's connection; when RabbitMQ cannot be asked, what
        waits is unknown (None) but the view is still read: reads do not need the broker."""
        try:
            connection = await self.broker.connection(HEALTH_TIMEOUT)
            async with asyncio.timeout(HEALTH_TIMEOUT):
                return await view.view_lag(self.settings, last_update, connection=connection)
        except LAG_ERRORS as error:
            logger.warning("view lag unknown: %s", one_line(error))
            return {"messages_waiting": None, "last_update": last_update}
