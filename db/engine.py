"""Connections to a service's own database."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


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
