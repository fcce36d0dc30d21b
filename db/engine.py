"""Connections to a service's own database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def sqlalchemy_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy's asyncpg dialect wants it."""
    scheme, _, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    return url


def asyncpg_url(url: str) -> str:
    """``postgresql+asyncpg://...`` as asyncpg itself wants it."""
    scheme, _, rest = url.partition("://")
    return f"postgresql://{rest}" if scheme.startswith("postgresql") else url


def create_engine(url: str, *, pool_size: int = 10, pre_ping: bool = False) -> AsyncEngine:
    # Workers go without pool_pre_ping: it costs three round trips per checkout. After
    # PostgreSQL restarts, the first handler to meet a stale connection fails transiently
    # (and is retried), and SQLAlchemy then replaces the whole pool.
    return create_async_engine(
        sqlalchemy_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping
    )


@asynccontextmanager
async def connect_once(url: str, *, transaction: bool = False) -> AsyncIterator[AsyncConnection]:
    """One connection for a one-shot job (a CLI command, an operator's check), disposed
    after; in a transaction that commits on a clean exit when ``transaction`` is set."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() if transaction else engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()
