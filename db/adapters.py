"""Which adapter of the store port (``db.store``) a database URL gets: its scheme says
(``db.engine.engine_of``: ``postgresql://`` or ``mysql://``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from db import mariadb, postgres
from db.engine import MARIADB, engine_of
from db.mariadb import MariaRelaySession, MariaStore
from db.postgres import PostgresRelaySession, PostgresStore
from db.store import RelaySession, Store


async def open_store(url: str, *, size: int, connect_now: bool = True) -> Store:
    """The store of the database at ``url``, with ``size`` connections kept (as many again
    in bursts). ``connect_now``: the first ones are opened here, so a worker without its
    database fails at start; without it, on use."""
    if engine_of(url) == MARIADB:
        return await MariaStore.open(url, size=size, connect_now=connect_now)
    return await PostgresStore.open(url, size=size, connect_now=connect_now)


@asynccontextmanager
async def store_once(url: str) -> AsyncIterator[Store]:
    """A store of one connection, for a one-shot reading (a CLI command), closed after."""
    store = await open_store(url, size=1)
    try:
        yield store
    finally:
        await store.close()


async def open_relay_session(url: str) -> RelaySession:
    if engine_of(url) == MARIADB:
        return await MariaRelaySession.connect(url)
    return await PostgresRelaySession.connect(url)


async def probe(url: str, timeout: float) -> None:
    """Connect to the database at ``url`` on a connection of its own and ask it something;
    raises what the engine's driver raised when it does not answer."""
    if engine_of(url) == MARIADB:
        await mariadb.probe(url, timeout)
    else:
        await postgres.probe(url, timeout)
