"""Each service's Alembic migrations, applied to its own database.

One environment per service (``db/migrations/<service>``), each with its own
``alembic_version`` table in its own database, so services migrate independently; Alembic's
``multidb`` template would move them in lockstep. The configuration is built here in code:
no alembic.ini.

A service whose database is on MariaDB has a tree of its own (``db/migrations/mariadb/
<service>``), its types written for MariaDB; the URL's scheme chooses the tree.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from db.engine import MARIADB, POSTGRESQL, engine_of

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# The service name becomes a path: keep it a plain name.
_SERVICE = re.compile(r"^[a-z][a-z0-9_]*$")


def script_location(service: str, engine: str = POSTGRESQL) -> Path:
    """Where ``service``'s migrations for ``engine`` are."""
    tree = MIGRATIONS / MARIADB if engine == MARIADB else MIGRATIONS
    location = tree / service
    if not _SERVICE.match(service) or not (location / "env.py").is_file():
        raise ValueError(f"no {engine} migrations for service {service!r} in {tree}")
    return location


def alembic_config(service: str, url: str) -> Config:
    """The Alembic configuration of ``service``'s database at ``url``, for any ``command``;
    the migrations of the URL's engine."""
    config = Config()
    location = script_location(service, engine_of(url))
    # Option values go through configparser interpolation, where '%' must be doubled.
    config.set_main_option("script_location", str(location).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = url  # read by db/migrations/_env.py
    return config


def head(service: str, engine: str = POSTGRESQL) -> str:
    """The newest revision of ``service``'s migrations for ``engine``."""
    revision = ScriptDirectory(str(script_location(service, engine))).get_current_head()
    if revision is None:
        raise ValueError(f"service {service!r} has no migrations")
    return revision


def upgrade(service: str, url: str) -> tuple[str | None, str]:
    """Migrate ``service``'s database to head; returns (revision before, revision after).

    Blocking: the async env.py runs its own event loop. In async code use :func:`upgrade_async`.
    """
    config = alembic_config(service, url)
    command.upgrade(config, "head")
    before: str | None = config.attributes["revision_before"]
    after: str = config.attributes["revision_after"]
    return before, after


async def upgrade_async(service: str, url: str) -> tuple[str | None, str]:
    # env.py calls asyncio.run, which cannot run inside a running loop: give it a thread.
    return await asyncio.to_thread(upgrade, service, url)
