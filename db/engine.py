"""Connections to a service's own database.

The services' code (handlers, stores, the unit of work) runs on asyncpg directly: every
statement of the hot path is prepared once per connection (asyncpg's statement cache) and
costs one round trip, with nothing between. SQLAlchemy remains where it pays for itself:
the tables' declarations, Alembic's migrations, and the tests' own queries.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# A handler that finds no free connection within this many seconds fails transiently
# (asyncio.TimeoutError) and is retried: back-pressure, not an outage.
ACQUIRE_TIMEOUT = 30.0


# The engines a service's database may be on, as ``FLEET_ENGINES`` names them.
POSTGRESQL, MARIADB = "postgresql", "mariadb"
ENGINES = (POSTGRESQL, MARIADB)


def engine_of(url: str) -> str:
    """The engine a database URL names by its scheme: ``postgresql://`` (or
    ``postgres://``, ``postgresql+asyncpg://``) or ``mysql://`` / ``mariadb://`` (with or
    without ``+asyncmy``). Raises ValueError for any other."""
    scheme = url.partition("://")[0].partition("+")[0]
    if scheme in ("postgresql", "postgres"):
        return POSTGRESQL
    if scheme in ("mysql", "mariadb"):
        return MARIADB
    raise ValueError(f"a database URL must start with postgresql:// or mysql://, not {scheme}://")


def sqlalchemy_url(url: str) -> str:
    """A database URL as SQLAlchemy's async dialects want it (asyncpg, asyncmy)."""
    scheme, _, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    if scheme in ("mysql", "mariadb"):
        return f"mysql+asyncmy://{rest}"
    return url


def asyncpg_url(url: str) -> str:
    """``postgresql+asyncpg://...`` as asyncpg itself wants it."""
    scheme, _, rest = url.partition("://")
    return f"postgresql://{rest}" if scheme.startswith("postgresql") else url


async def prepare_connection(conn: asyncpg.Connection) -> None:
    """jsonb in and out as Python values (dicts, lists), on every connection."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection is reset to when it goes back to the pool: nothing more than the
    open transaction asyncpg always ends. The fleet's connections keep no session state (its
    locks are transaction-scoped, it LISTENs on connections of its own, it SETs nothing),
    so asyncpg's default reset query would be one more round trip per unit of work."""


async def create_pool(url: str, *, size: int, connect_now: bool = True) -> asyncpg.Pool:
    """``size`` connections kept, as many again in bursts. ``connect_now``: the first ones
    are opened here, so a worker without its database fails at start, not on every
    message; without it (a server that must start while the database is down), on use."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        asyncpg_url(url),
        min_size=size if connect_now else 0,
        max_size=2 * size,
        init=prepare_connection,
        reset=_keep_session,
    )
    return pool


@asynccontextmanager
async def connect_once(url: str, *, transaction: bool = False) -> AsyncIterator[asyncpg.Connection]:
    """One connection for a one-shot job (a CLI command, an operator's check), closed after;
    in a transaction that commits on a clean exit when ``transaction`` is set."""
    conn: asyncpg.Connection = await asyncpg.connect(asyncpg_url(url))
    try:
        await prepare_connection(conn)
        if transaction:
            async with conn.transaction():
                yield conn
        else:
            yield conn
    finally:
        await conn.close()


def create_engine(url: str, *, pool_size: int = 10, pre_ping: bool = False) -> AsyncEngine:
    """A SQLAlchemy engine, for the tests' own queries (the fleet itself uses asyncpg)."""
    return create_async_engine(
        sqlalchemy_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping
    )
