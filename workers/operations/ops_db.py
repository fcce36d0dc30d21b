"""The operations database (``<ns>_ops``): what operators did and what they set aside.

Like every service, it has its own role, its own database and its own migrations
(``db/migrations/ops``), made by ``fleet db init``; a service may only append to its audit
log (what its worker's breaker did), nothing else. It holds
the audit log of operator actions (this module), the archived dead letters
(``archive.py``) and the replayed messages followed until they settle (``dead_letters``).

    async with ops_db.connect(settings, transaction=True) as conn:
        await ops_db.record(
            conn, action="dlq.purge", target=queue, message_ids=ids, operator=operator
        )
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from db.engine import connect_once
from db.provision import ServiceDatabase
from workers.runtime.settings import Settings

OPS = "ops"  # the name its database and role carry after the namespace: <ns>_ops


def database(settings: Settings) -> ServiceDatabase:
    """The operations database as ``fleet db init`` makes it, its role with its own secret."""
    name = settings.database_name(OPS)
    return ServiceDatabase(
        name=name,
        service=OPS,
        url=settings.database_url(OPS),
        passwords={name: settings.secret_for(OPS)},
    )


@asynccontextmanager
async def connect(
    settings: Settings, *, transaction: bool = False
) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the operations database as its own role (one-shot)."""
    async with connect_once(settings.database_url(OPS), transaction=transaction) as conn:
        yield conn


async def lock(conn: asyncpg.Connection, subject: str) -> None:
    """Serialise operator actions on ``subject`` (a queue, a saga) until the transaction
    ends: two operators replaying one DLQ at once would each see the other's letters."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"ops:{subject}")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    operator: str
    action: str
    target: str
    count: int
    message_ids: list[str]
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def record(
    conn: asyncpg.Connection,
    *,
    action: str,
    target: str,
    message_ids: Sequence[str] = (),
    count: int | None = None,
    operator: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """One line of the audit log; ``count`` defaults to the number of ``message_ids``."""
    await conn.execute(
        "INSERT INTO audit (operator, action, target, count, message_ids, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        operator,
        action,
        target,
        len(message_ids) if count is None else count,
        list(message_ids),
        detail or {},
    )


async def history(
    settings: Settings, *, limit: int = 50, action: str | None = None, target: str | None = None
) -> list[AuditEntry]:
    """The latest audit lines first; ``action`` matches a prefix (``dlq`` for every DLQ
    action), ``target`` exactly."""
    async with connect(settings) as conn:
        rows = await conn.fetch(
            "SELECT id, at, operator, action, target, count, message_ids, detail FROM audit"
            " WHERE ($1::text IS NULL OR action = $1 OR action LIKE $1 || '.%')"
            " AND ($2::text IS NULL OR target = $2)"
            " ORDER BY id DESC LIMIT $3",
            action,
            target,
            limit,
        )
    return [AuditEntry(**dict(row)) for row in rows]
