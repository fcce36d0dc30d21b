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


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    # pool_pre_ping: after PostgreSQL restarts, a stale pooled connection is replaced
    # instead of failing the first handler that picks it up.
    return create_async_engine(
        sqlalchemy_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )
