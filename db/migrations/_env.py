"""The body of every service's ``env.py``: Alembic's async template, online mode only.

``db.migrate`` hands the database URL over in ``config.attributes["url"]`` rather than as an
ini option (configparser would read a ``%`` of a quoted password as interpolation), and reads
the revisions before and after back from the same attributes.
"""

from __future__ import annotations

import asyncio

from alembic import context
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from db.engine import sqlalchemy_url


def run_migrations() -> None:
    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported: migrate a live database")
    asyncio.run(_run_online(context.config))


async def _run_online(config: Config) -> None:
    engine = create_async_engine(sqlalchemy_url(config.attributes["url"]), poolclass=NullPool)
    try:
        # One transaction around reading the revision and migrating (PostgreSQL has
        # transactional DDL): a failed migration leaves the database at the revision read.
        async with engine.begin() as connection:
            await connection.run_sync(_run_sync, config)
    finally:
        await engine.dispose()


def _run_sync(connection: Connection, config: Config) -> None:
    # Hand-written migrations: no metadata to autogenerate from.
    context.configure(connection=connection, target_metadata=None)
    migration_context = context.get_context()
    config.attributes["revision_before"] = migration_context.get_current_revision()
    with context.begin_transaction():
        context.run_migrations()
    config.attributes["revision_after"] = migration_context.get_current_revision()
