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
from collections.abc import Collection, Mapping, Sequence
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


@dataclass(frozen=True)
class NewEvent:
    """An event to append at ``version`` of its stream (the version after the one its
    writer decided on)."""

    stream_id: str
    version: int
    message: Message
    metadata: Mapping[str, Any]


# Rows another writer took first are skipped (the primary key waits for that writer's
# transaction, then finds its row) and so missing from what the statement returns.
_APPEND_EVENTS = """
INSERT INTO events (stream_id, version, type, contract_version, data, metadata)
SELECT stream_id, version, type, contract_version, data::jsonb, metadata::jsonb
FROM unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::text[], $6::text[])
     WITH ORDINALITY AS e(stream_id, version, type, contract_version, data, metadata, n)
ORDER BY n
ON CONFLICT ON CONSTRAINT events_pkey DO NOTHING
RETURNING stream_id, version
"""


async def append_events(conn: asyncpg.Connection, events: Sequence[NewEvent]) -> None:
    """Append the events of several streams in one statement, in the order given (which
    their global positions keep).

    Raises :class:`ConcurrencyConflict` naming a stream of which another writer took one of
    those versions; the caller's transaction must then be rolled back and retried as a
    whole (it holds the events that did go in).
    """
    if not events:
        return
    rows = await conn.fetch(
        _APPEND_EVENTS,
        [event.stream_id for event in events],
        [event.version for event in events],
        [event.message.TYPE for event in events],
        [event.message.VERSION for event in events],
        # Through the registry: only a registered model of its (type, version) is stored.
        [registry.encode(event.message).decode() for event in events],
        [json.dumps(dict(event.metadata)) for event in events],
    )
    appended = {(row["stream_id"], row["version"]) for row in rows}
    taken = [event for event in events if (event.stream_id, event.version) not in appended]
    if taken:
        stream_id = taken[0].stream_id
        first_new = min(event.version for event in events if event.stream_id == stream_id)
        raise ConcurrencyConflict(stream_id, first_new - 1)


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


@dataclass(frozen=True)
class StreamTail:
    """A stream as a writer reads it: its snapshot, if one of the schema asked for exists,
    and the events after it."""

    snapshot: tuple[int, dict[str, Any]] | None  # (version, state)
    events: list[StoredEvent]


# Snapshot rows and event rows in one result: a snapshot row has no type, and comes first
# in its stream (its version is below those of the events read after it).
_LOAD_STREAMS = f"""
WITH snapshot AS (
    SELECT stream_id, version, state FROM snapshots
    WHERE stream_id = ANY($1::text[]) AND schema_version = $2
)
SELECT stream_id, version, NULL::text AS type, NULL::int AS contract_version,
       state::text AS data, NULL::text AS metadata, NULL::timestamptz AS recorded_at,
       NULL::bigint AS global_position
FROM snapshot
UNION ALL
SELECT {_EVENT_COLUMNS} FROM events
WHERE stream_id = ANY($1::text[])
  AND version > coalesce((SELECT s.version FROM snapshot s WHERE s.stream_id = events.stream_id), 0)
ORDER BY stream_id, version
"""


async def load_streams(
    conn: asyncpg.Connection, stream_ids: Collection[str], schema_version: int | None
) -> dict[str, StreamTail]:
    """Every stream of ``stream_ids`` (one that does not exist is empty) from its snapshot of
    ``schema_version`` (None: from its first event), in one statement."""
    rows = await conn.fetch(_LOAD_STREAMS, list(stream_ids), schema_version)
    snapshots: dict[str, tuple[int, dict[str, Any]]] = {}
    events: dict[str, list[StoredEvent]] = {stream_id: [] for stream_id in stream_ids}
    for row in rows:
        if row["type"] is None:
            snapshots[row["stream_id"]] = (row["version"], json.loads(row["data"]))
        else:
            events[row["stream_id"]].append(_stored(row))
    return {
        stream_id: StreamTail(snapshots.get(stream_id), tail) for stream_id, tail in events.items()
    }


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


@dataclass(frozen=True)
class PageRequest:
    """A page of the whole store: the events after ``after_position``, up to
    ``up_to_position`` (None: the store's last position when read)."""

    after_position: int
    up_to_position: int | None
    # Also count the store's events up to the page's end position.
    count: bool = False


@dataclass(frozen=True)
class Page:
    events: list[StoredEvent]
    up_to_position: int  # as asked, or the store's last position when read
    count: int | None  # the store's events up to ``up_to_position``, if asked


# One row per event of each page, in page order; a page with no events is one row of NULLs.
_READ_PAGES = f"""
WITH wanted AS (
    SELECT n, after_position,
           coalesce(up_to_position,
                    (SELECT coalesce(max(global_position), 0) FROM events)) AS up_to,
           counted
    FROM unnest($1::bigint[], $2::bigint[], $3::bool[])
         WITH ORDINALITY AS w(after_position, up_to_position, counted, n)
), bounded AS (
    SELECT n, after_position, up_to,
           CASE WHEN counted THEN
               (SELECT count(*) FROM events WHERE global_position <= up_to)
           END AS stored
    FROM wanted
)
SELECT b.n, b.up_to, b.stored, page.*
FROM bounded b LEFT JOIN LATERAL (
    SELECT {_EVENT_COLUMNS} FROM events
    WHERE global_position > b.after_position AND global_position <= b.up_to
    ORDER BY global_position LIMIT $4
) page ON true
ORDER BY b.n, page.global_position
"""


async def read_pages(
    conn: asyncpg.Connection, requests: Sequence[PageRequest], limit: int
) -> list[Page]:
    """Pages of at most ``limit`` events in global position order (see ``all_events``),
    one per request, in one statement (so all read the store as it was at one moment)."""
    if not requests:
        return []
    rows = await conn.fetch(
        _READ_PAGES,
        [request.after_position for request in requests],
        [request.up_to_position for request in requests],
        [request.count for request in requests],
        limit,
    )
    ends: dict[int, tuple[int, int | None]] = {}
    events: dict[int, list[StoredEvent]] = {n: [] for n in range(1, len(requests) + 1)}
    for row in rows:
        ends[row["n"]] = (row["up_to"], row["stored"])
        if row["stream_id"] is not None:
            events[row["n"]].append(_stored(row))
    return [Page(events[n], *ends[n]) for n in sorted(events)]


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


@dataclass(frozen=True)
class Snapshot:
    stream_id: str
    version: int
    schema_version: int
    state: Mapping[str, Any]


_SAVE_SNAPSHOTS = """
INSERT INTO snapshots AS existing (stream_id, version, schema_version, state)
SELECT stream_id, version, schema_version, state::jsonb
FROM unnest($1::text[], $2::int[], $3::int[], $4::text[])
     AS s(stream_id, version, schema_version, state)
ON CONFLICT (stream_id) DO UPDATE
SET version = excluded.version, schema_version = excluded.schema_version,
    state = excluded.state, taken_at = now()
WHERE existing.version < excluded.version OR existing.schema_version <> excluded.schema_version
"""


async def save_snapshots(conn: asyncpg.Connection, snapshots: Sequence[Snapshot]) -> None:
    """``save_snapshot`` for several streams in one statement: at most one snapshot per
    stream (a statement cannot change one row twice)."""
    if not snapshots:
        return
    await conn.execute(
        _SAVE_SNAPSHOTS,
        [snapshot.stream_id for snapshot in snapshots],
        [snapshot.version for snapshot in snapshots],
        [snapshot.schema_version for snapshot in snapshots],
        [json.dumps(dict(snapshot.state)) for snapshot in snapshots],
    )


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
