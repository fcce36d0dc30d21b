"""The transactional outbox: messages are written in the same transaction as the state
that caused them, and published later by the relay (``workers.runtime.relay``).
PostgreSQL's statements (the store port's ``db.postgres``; MariaDB's are in ``db.mariadb``).

Writing happens inside a handler's transaction, one statement for all its messages; the
relay reads on a dedicated connection, because it also holds an advisory lock and LISTENs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from contracts import OutgoingMessage
from db.store import RELAY_LOCK_KEY, Backlog

# NOTIFY channel: the writing transaction signals it, delivered by PostgreSQL at commit.
NOTIFY_CHANNEL = "fleet_outbox"

# All of a transaction's messages in one statement, and the relay woken in the same round
# trip (a data-modifying WITH runs whether or not the query reads it).
_APPEND = f"""
WITH appended AS (
    INSERT INTO outbox (message_id, exchange, routing_key, type, version, correlation_id,
                        causation_id, producer, occurred_at, headers, body)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[],
                         $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::jsonb[],
                         $11::bytea[])
    RETURNING 1
)
SELECT pg_notify('{NOTIFY_CHANNEL}', '')
"""


async def append(conn: asyncpg.Connection, messages: Sequence[OutgoingMessage]) -> None:
    """Insert ``messages`` (new ones, made by ``OutgoingMessage.of``) in the caller's
    transaction and wake the relay at commit."""
    if not messages:
        return
    await conn.execute(
        _APPEND,
        [m.message_id for m in messages],
        [m.exchange for m in messages],
        [m.routing_key for m in messages],
        [m.type for m in messages],
        [m.version for m in messages],
        [m.correlation_id for m in messages],
        [m.causation_id for m in messages],
        [m.app_id for m in messages],
        [m.timestamp for m in messages],
        # Stored ready to send: the relay copies rows to the broker as they are.
        [dict(m.headers) for m in messages],
        [m.body for m in messages],
    )


# --- The relay's side, in asyncpg's dialect ($n parameters). ---------------------------

# "Unpublished, in id order", never "id > last seen": a transaction that took a lower id
# may commit after a higher one, and must not be skipped. No row locks: only the relay that
# holds the advisory lock publishes, and the batch still in flight is excluded by id.
CLAIM_BATCH = """
SELECT id, message_id, exchange, routing_key, type, correlation_id, producer, occurred_at,
       headers, body
FROM outbox WHERE published_at IS NULL AND id <> ALL($2::bigint[]) ORDER BY id LIMIT $1
"""
MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])"
DELETE_PUBLISHED = (
    "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1::float8)"
)
COUNT_UNPUBLISHED = "SELECT count(*) FROM outbox WHERE published_at IS NULL"

# The relay's session lock: one relay per service database publishes at a time.
TRY_RELAY_LOCK = f"SELECT pg_try_advisory_lock(hashtext('{RELAY_LOCK_KEY}'))"
# Whether some session of this database holds it (a one-key advisory lock's 64 bits are
# classid and objid in pg_locks).
_RELAY_ACTIVE = f"""
SELECT EXISTS (
    SELECT FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 1
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND ((classid::bigint << 32) | objid::bigint) = hashtext('{RELAY_LOCK_KEY}')::bigint
)
"""
# Whether this session is the one holding it: a relay asks before each drain.
HOLDS_RELAY_LOCK = f"""
SELECT EXISTS (
    SELECT FROM pg_locks
    WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND granted AND objsubid = 1
      AND ((classid::bigint << 32) | objid::bigint) = hashtext('{RELAY_LOCK_KEY}')::bigint
)
"""
_BACKLOG = """
SELECT count(*) AS rows, extract(epoch FROM now() - min(occurred_at))::float8 AS oldest
FROM outbox WHERE published_at IS NULL
"""


async def backlog(conn: asyncpg.Connection) -> Backlog:
    row = await conn.fetchrow(_BACKLOG)
    oldest = row["oldest"]
    return Backlog(row["rows"], None if oldest is None else max(0.0, oldest))


async def relay_active(conn: asyncpg.Connection) -> bool:
    """True while a relay of this database holds the publishing lock."""
    active: bool = await conn.fetchval(_RELAY_ACTIVE)
    return active


# For operators: what each service emitted for one correlation (an order), oldest first.
EMITTED_FOR = (
    "SELECT occurred_at, producer, type, published_at IS NOT NULL AS published"
    " FROM outbox WHERE correlation_id = $1 ORDER BY id"
)


def outgoing_from_row(row: Any) -> OutgoingMessage:
    """A row of ``CLAIM_BATCH`` as it goes to the broker (its headers were made at emit)."""
    return OutgoingMessage(
        exchange=row["exchange"],
        routing_key=row["routing_key"],
        body=row["body"],
        message_id=row["message_id"],
        type=row["type"],
        correlation_id=row["correlation_id"],
        timestamp=row["occurred_at"],
        app_id=row["producer"],
        headers=_decode_headers(row["headers"]),
    )


def _decode_headers(value: Any) -> dict[str, Any]:
    """asyncpg returns jsonb as text unless a codec is set."""
    if isinstance(value, str):
        decoded: dict[str, Any] = json.loads(value)
        return decoded
    return dict(value or {})
