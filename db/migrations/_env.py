"""The body of every service's ``env.py``: Alembic's async template, online mode only.

``db.migrate`` hands the database URL over in ``config.attributes["url"]`` rather than as an
ini option (configparser would read a ``%`` of a quoted password as interpolation), and reads
the revisions before and after back from the same attributes.

Both engines: PostgreSQL migrates in one transaction; MariaDB's DDL is not transactional
(each statement commits), so there every revision is stamped in a transaction of its own
right after it ran.
"""

from __future__ import annotations

import asyncio
import logging

from alembic import context
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from db.engine import MARIADB, engine_of, sqlalchemy_url


def run_migrations() -> None:
    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported: migrate a live database")
    asyncio.run(_run_online(context.config))


async def _run_online(config: Config) -> None:
    url = config.attributes["url"]
    engine = create_async_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        if engine_of(url) == MARIADB:
            # MariaDB's DDL is not transactional: each statement commits by itself, so a
            # failed migration leaves what it did (keep revisions small). Alembic then
            # commits each revision with its stamp (transaction per migration), so the
            # revisions before the failed one stay recorded as applied.
            driver_log = logging.getLogger("asyncmy")
            driver_log.addFilter(_unnamed_primary_key)
            try:
                async with engine.connect() as connection:
                    await connection.run_sync(_run_sync, config)
                    await connection.commit()
            finally:
                driver_log.removeFilter(_unnamed_primary_key)
        else:
            # One transaction around reading the revision and migrating (PostgreSQL has
            # transactional DDL): a failed migration leaves the database at the revision read.
            async with engine.begin() as connection:
                await connection.run_sync(_run_sync, config)
    finally:
        await engine.dispose()


def _unnamed_primary_key(record: logging.LogRecord) -> bool:
    """Drops the server's warning, logged by asyncmy, that alembic_version's primary key
    takes no name (MariaDB names every primary key PRIMARY)."""
    return "ignored for PRIMARY key" not in record.getMessage()


def _run_sync(connection: Connection, config: Config) -> None:
    # Hand-written migrations: no metadata to autogenerate from.
    context.configure(connection=connection, target_metadata=None)
    migration_context = context.get_context()
    config.attributes["revision_before"] = migration_context.get_current_revision()
    with context.begin_transaction():
        context.run_migrations()
    config.attributes["revision_after"] = migration_context.get_current_revision()
