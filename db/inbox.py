"""The inbox: the idempotent consumer's memory of what each handler has applied.
PostgreSQL's statements (the store port's ``db.postgres``; MariaDB's are in ``db.mariadb``).

A handler records (consumer, message_id) in the same transaction as its effects. The
primary key, not the isolation level, makes a duplicate lose: a concurrent second insert
waits for the first transaction and then finds the row.
"""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

_RECORD = (
    "INSERT INTO inbox (consumer, message_id, type) VALUES ($1, $2, $3)"
    " ON CONFLICT DO NOTHING RETURNING true"
)
DELETE_EXPIRED = "DELETE FROM inbox WHERE received_at < now() - make_interval(secs => $1::float8)"


async def record(conn: asyncpg.Connection, consumer: str, message_id: str, type_: str) -> bool:
    """True if this is the first time ``consumer`` sees ``message_id``."""
    return bool(await conn.fetchval(_RECORD, consumer, message_id, type_))


# A batch's order locks, then its inbox rows, in one round trip. The locks are taken in the
# order of their ids (two batches locking several orders each never deadlock), by the
# scalar subquery, which runs once, before the first row is inserted. They are the locks
# of ``lock_order``, held until the transaction ends.
_RECORD_LOCKED = """
INSERT INTO inbox (consumer, message_id, type)
SELECT $1, message_id, type FROM unnest($2::text[], $3::text[]) AS i(message_id, type)
WHERE (
    SELECT count(pg_advisory_xact_lock(id))
    FROM (SELECT DISTINCT hashtext(key) AS id FROM unnest($4::text[]) AS key ORDER BY id) ids
) >= 0
ON CONFLICT DO NOTHING RETURNING message_id
"""


async def record_locked(
    conn: asyncpg.Connection, consumer: str, messages: dict[str, str], keys: Collection[str]
) -> set[str]:
    """Lock ``keys`` (the orders a batch decides about) until the transaction ends, then
    record ``messages`` (message id -> type); the ids ``consumer`` sees for the first time.
    A second transaction deciding about one of those orders waits for the lock, then sees
    the first's outcome (a reservation racing its release)."""
    rows = await conn.fetch(
        _RECORD_LOCKED, consumer, list(messages), list(messages.values()), list(keys)
    )
    return {row["message_id"] for row in rows}


async def lock_order(conn: asyncpg.Connection, key: str) -> None:
    """The lock ``record_locked`` takes for ``key``, alone (for work outside a batch)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", key)


HOLDS = "SELECT message_id FROM inbox WHERE consumer = $1 AND message_id = ANY($2::text[])"


async def row_count(conn: asyncpg.Connection) -> int:
    """Inbox entries kept for duplicate detection (every consumer of the database)."""
    count: int = await conn.fetchval("SELECT count(*) FROM inbox")
    return count
