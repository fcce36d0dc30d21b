"""An append-only event store in a service's own database: streams of versioned events,
optimistic concurrency, snapshots, and upcasting on load.

A stream is the history of one aggregate, numbered 1, 2, 3, ... without gaps. Writing says
which version the writer decided on (``expected_version``): the new events take the next
numbers, and the primary key (stream_id, version), not the isolation level, makes the
second of two writers that decided on the same version lose with :class:`ConcurrencyConflict`
(its insert waits for the first transaction, then finds the row). PostgreSQL aborts the
loser's transaction, so the caller's whole unit of work is retried and decides again on
fresh state; ``workers.runtime.errors`` counts the conflict as transient for that reason.

Everything here runs on the caller's connection, inside the caller's transaction, so events,
snapshots, the inbox entry and the outbox rows that publish the same events commit together.

Events are stored as their contract (type, contract version, JSON body) and decoded on load
through ``contracts.registry``: a stored old version is upcast to the newest one, exactly as
a consumer upcasts an old message. A stored version nobody knows fails loudly, never guessed.

Snapshots: at most one per stream, the state folded up to some version, tagged with the
schema version of the state's shape. A snapshot of another schema version is ignored (the
stream is replayed from the start): an old shape is never trusted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from contracts import Message, registry

EVENTS_PRIMARY_KEY = "events_pkey"


class ConcurrencyConflict(Exception):
    """Another writer appended to the stream after ``expected_version``; decide again."""

    def __init__(self, stream_id: str, expected_version: int) -> None:
        super().__init__(f"stream {stream_id} moved past version {expected_version} while deciding")
        self.stream_id = stream_id
        self.expected_version = expected_version


@dataclass(frozen=True)
class StoredEvent:
    stream_id: str
    version: int
    # Decoded and upcast to the newest contract version of its type.
    message: Message
    # The stored (type, contract version) before upcasting.
    type: str
    contract_version: int
    metadata: dict[str, Any]
    recorded_at: datetime
    # Order of insertion across all streams (see ``all_events``).
    global_position: int


# --- Tables. Written down once here; each service's metadata gets them through
# add_event_store_tables, and its migration writes the same out as frozen history. --------


def _events_columns() -> list[Any]:
    return [
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("contract_version", sa.Integer, nullable=False),
        sa.Column("data", JSONB, nullable=False),
        # correlation_id, causation_id and the message_id under which the event was emitted.
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        # Insertion order across streams, for replays of the whole store (read models).
        sa.Column("global_position", sa.BigInteger, sa.Identity(), nullable=False),
        sa.PrimaryKeyConstraint("stream_id", "version", name=EVENTS_PRIMARY_KEY),
        sa.UniqueConstraint("global_position", name="uq_events_global_position"),
        sa.CheckConstraint("version >= 1", name="ck_events_version_positive"),
    ]


def _snapshots_columns() -> list[Any]:
    return [
        sa.Column("stream_id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("state", JSONB, nullable=False),
        sa.Column(
            "taken_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    ]


def add_event_store_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The ``events`` and ``snapshots`` tables, added to a service's own metadata."""
    events = sa.Table("events", metadata, *_events_columns())
    snapshots = sa.Table("snapshots", metadata, *_snapshots_columns())
    return events, snapshots


# --- Writing. --------------------------------------------------------------------------

_APPEND = """
INSERT INTO events (stream_id, version, type, contract_version, data, metadata)
SELECT $1, version, type, contract_version, data::jsonb, metadata::jsonb
FROM unnest($2::int[], $3::text[], $4::int[], $5::text[], $6::text[])
     AS e(version, type, contract_version, data, metadata)
"""


async def append(
    conn: asyncpg.Connection,
    stream_id: str,
    expected_version: int,
    messages: Sequence[Message],
    metadata: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Append ``messages`` as versions ``expected_version + 1 ...``; return the new version.

    ``expected_version`` is the version the caller's decision was based on (0: the stream
    did not exist). ``metadata`` is one mapping for every event, or one per event.
    Raises :class:`ConcurrencyConflict` when another writer took one of those versions; the
    transaction is then aborted and must be retried as a whole.
    """
    if expected_version < 0:
        raise ValueError(f"expected_version must be >= 0, not {expected_version}")
    if not messages:
        return expected_version
    if metadata is None or isinstance(metadata, Mapping):
        per_event: Sequence[Mapping[str, Any] | None] = [metadata] * len(messages)
    else:
        if len(metadata) != len(messages):
            raise ValueError(f"{len(messages)} events but {len(metadata)} metadata mappings")
        per_event = metadata
    try:
        await conn.execute(
            _APPEND,
            stream_id,
            list(range(expected_version + 1, expected_version + len(messages) + 1)),
            [message.TYPE for message in messages],
            [message.VERSION for message in messages],
            # Through the registry: only a registered model of its (type, version) is stored.
            [registry.encode(message).decode() for message in messages],
            [json.dumps(dict(meta or {})) for meta in per_event],
        )
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == EVENTS_PRIMARY_KEY:
            raise ConcurrencyConflict(stream_id, expected_version) from error
        raise
    return expected_version + len(messages)


# --- Reading. --------------------------------------------------------------------------

# data as text: the registry validates the JSON itself, as it does a message body.
_EVENT_COLUMNS = (
    "stream_id, version, type, contract_version, data::text AS data,"
    " metadata::text AS metadata, recorded_at, global_position"
)


def _stored(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(
        stream_id=row["stream_id"],
        version=row["version"],
        message=registry.decode(row["type"], row["contract_version"], row["data"]),
        type=row["type"],
        contract_version=row["contract_version"],
        metadata=json.loads(row["metadata"]) if row["metadata"] else {},
        recorded_at=row["recorded_at"],
        global_position=row["global_position"],
    )


async def load(
    conn: asyncpg.Connection, stream_id: str, after_version: int = 0
) -> list[StoredEvent]:
    """The stream's events after ``after_version``, in version order, upcast to the newest
    contract versions. A stream that does not exist is empty."""
    rows = await conn.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2"
        " ORDER BY version",
        stream_id,
        after_version,
    )
    return [_stored(row) for row in rows]


async def load_all_streams(conn: asyncpg.Connection) -> list[StoredEvent]:
    """Every stream's events, stream by stream, each in version order, upcast."""
    rows = await conn.fetch(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY stream_id, version")
    return [_stored(row) for row in rows]


async def current_version(conn: asyncpg.Connection, stream_id: str) -> int:
    """The stream's last version; 0 when it does not exist."""
    version = await conn.fetchval(
        "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1", stream_id
    )
    return int(version)


async def stream_exists(conn: asyncpg.Connection, stream_id: str) -> bool:
    return await current_version(conn, stream_id) > 0


async def all_events(
    conn: asyncpg.Connection,
    after_position: int = 0,
    limit: int = 1000,
    up_to_position: int | None = None,
) -> list[StoredEvent]:
    """Events of every stream after ``after_position`` (and up to ``up_to_position``), in
    global position order, upcast to the newest contract versions.

    The position is taken at insert, not at commit: a transaction holding a lower position
    may still commit after a higher one is visible. A full replay at a quiet point is exact;
    a reader that tails the store by "position > last seen" must allow for such late gaps
    (as the outbox relay does by never reading "id > last seen").
    """
    rows = await conn.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE global_position > $1"
        " AND ($2::bigint IS NULL OR global_position <= $2) ORDER BY global_position LIMIT $3",
        after_position,
        up_to_position,
        limit,
    )
    return [_stored(row) for row in rows]


async def last_position(conn: asyncpg.Connection) -> int:
    """The highest global position so far; 0 for an empty store."""
    return int(await conn.fetchval("SELECT coalesce(max(global_position), 0) FROM events"))


async def count_events(conn: asyncpg.Connection, up_to_position: int) -> int:
    """How many events the store holds up to ``up_to_position``."""
    sql = "SELECT count(*) FROM events WHERE global_position <= $1"
    return int(await conn.fetchval(sql, up_to_position))


# --- Snapshots. ------------------------------------------------------------------------


def crossed_snapshot_boundary(before: int, after: int, every: int) -> bool:
    """Whether a stream that went from version ``before`` to ``after`` passed a multiple of
    ``every`` (0 or less: never snapshot)."""
    return every > 0 and after // every > before // every


_SAVE_SNAPSHOT = """
INSERT INTO snapshots AS existing (stream_id, version, schema_version, state)
VALUES ($1, $2, $3, $4::text::jsonb)
ON CONFLICT (stream_id) DO UPDATE
SET version = excluded.version, schema_version = excluded.schema_version,
    state = excluded.state, taken_at = now()
WHERE existing.version < excluded.version OR existing.schema_version <> excluded.schema_version
"""


async def save_snapshot(
    conn: asyncpg.Connection,
    stream_id: str,
    version: int,
    schema_version: int,
    state: Mapping[str, Any],
) -> None:
    """Keep ``state`` as the stream's snapshot at ``version``, replacing an older one (or one
    of another schema version); a snapshot never moves backwards within one schema."""
    await conn.execute(_SAVE_SNAPSHOT, stream_id, version, schema_version, json.dumps(dict(state)))


async def load_snapshot(
    conn: asyncpg.Connection, stream_id: str, schema_version: int
) -> tuple[int, dict[str, Any]] | None:
    """(version, state) of the stream's snapshot if it has ``schema_version``; else None."""
    row = await conn.fetchrow(
        "SELECT version, state::text AS state FROM snapshots"
        " WHERE stream_id = $1 AND schema_version = $2",
        stream_id,
        schema_version,
    )
    if row is None:
        return None
    state: dict[str, Any] = json.loads(row["state"])
    return row["version"], state
