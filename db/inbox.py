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
