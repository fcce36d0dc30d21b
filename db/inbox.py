"""The inbox: the idempotent consumer's memory of what each handler has applied.

A handler records (consumer, message_id) in the same transaction as its effects. The
primary key, not the isolation level, makes a duplicate lose: a concurrent second insert
waits for the first transaction and then finds the row.
"""

from __future__ import annotations

import asyncpg

_RECORD = (
    "INSERT INTO inbox (consumer, message_id, type) VALUES ($1, $2, $3)"
    " ON CONFLICT DO NOTHING RETURNING true"
)
DELETE_EXPIRED = "DELETE FROM inbox WHERE received_at < now() - make_interval(secs => $1::float8)"


async def record(conn: asyncpg.Connection, consumer: str, message_id: str, type_: str) -> bool:
    """True if this is the first time ``consumer`` sees ``message_id``."""
    return bool(await conn.fetchval(_RECORD, consumer, message_id, type_))


_RECORD_MANY = (
    "INSERT INTO inbox (consumer, message_id, type)"
    " SELECT $1, message_id, type FROM unnest($2::text[], $3::text[]) AS i(message_id, type)"
    " ON CONFLICT DO NOTHING RETURNING message_id"
)


async def record_many(
    conn: asyncpg.Connection, consumer: str, messages: dict[str, str]
) -> set[str]:
    """Record ``messages`` (message id -> type) in one statement; the ids ``consumer`` sees
    for the first time."""
    rows = await conn.fetch(_RECORD_MANY, consumer, list(messages), list(messages.values()))
    return {row["message_id"] for row in rows}


async def row_count(conn: asyncpg.Connection) -> int:
    """Inbox entries kept for duplicate detection (every consumer of the database)."""
    count: int = await conn.fetchval("SELECT count(*) FROM inbox")
    return count
