"""The orchestrator's tables: one row per saga, and its step log."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from contracts import Money, OrderLine, OrderPlacedV2
from workers.orchestrator.domain import OperatorRequest, OrderFacts, Recorded, Reply, Saga, Sagas
from workers.runtime.errors import TransientError

metadata = sa.MetaData()

# version: optimistic concurrency; every write names the version it was loaded at.
sagas = sa.Table(
    "sagas",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("step", sa.Text, nullable=False),
    sa.Column("completed", JSONB, nullable=False),
    sa.Column("pending", JSONB, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("facts", JSONB, nullable=False),
    sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint(
        "status IN ('running', 'compensating', 'confirmed', 'rejected')", name="ck_sagas_status"
    ),
    # Since migration 0003: the references confirm_order carries to the order.
    sa.Column("payment_id", sa.Text, nullable=True),
    sa.Column("tracking_number", sa.Text, nullable=True),
)
# The deadline watcher reads only sagas still waiting, soonest first.
sa.Index(
    "ix_sagas_deadline",
    sagas.c.deadline_at,
    postgresql_where=sa.text("status IN ('running', 'compensating')"),
)

saga_log = sa.Table(
    "saga_log",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("order_id", sa.Text, nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("step", sa.Text, nullable=False),
    sa.Column("entry", sa.Text, nullable=False),
)


class SagaConflict(TransientError):
    """Someone else saved the saga since it was loaded: retry on its fresh state."""


def _facts_to_json(facts: OrderFacts) -> dict[str, Any]:
    return {
        "order_id": facts.order_id,
        "customer_id": facts.customer_id,
        "items": [item.model_dump(mode="json") for item in facts.items],
        "total": facts.total.model_dump(mode="json"),
        "country": facts.country,
    }


def _facts_from_json(data: dict[str, Any]) -> OrderFacts:
    return OrderFacts(
        order_id=data["order_id"],
        customer_id=data["customer_id"],
        items=tuple(OrderLine.model_validate(item) for item in data["items"]),
        total=Money.model_validate(data["total"]),
        country=data["country"],
    )


def _saga(row: asyncpg.Record) -> Saga:
    return Saga(
        facts=_facts_from_json(row["facts"]),
        status=row["status"],
        step=row["step"],
        completed=tuple(row["completed"]),
        pending=tuple(row["pending"]),
        reason=row["reason"],
        deadline_at=row["deadline_at"],
        version=row["version"],
        payment_id=row["payment_id"],
        tracking_number=row["tracking_number"],
    )


# --- A batch's load and write, in the caller's transaction (asyncpg). -----------------

# The batch's sagas, their rows locked in order-id order: a saga the deadline watcher holds
# (``load_due``) is decided about once the watcher is done with it, and the watcher leaves
# alone a saga a batch holds.
_LOAD_SAGAS = "SELECT * FROM sagas WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE"


async def load_sagas(
    conn: asyncpg.Connection, messages: Sequence[OrderPlacedV2 | Reply | OperatorRequest]
) -> Sagas:
    """The sagas of the batch's orders, and the time of now."""
    order_ids = sorted({message.order_id for message in messages})
    rows = await conn.fetch(_LOAD_SAGAS, order_ids)
    return Sagas(datetime.now(UTC), {row["order_id"]: _saga(row) for row in rows})


# Still waiting, deadline passed, soonest first: locked, skipping those locked already, so
# that two orchestrators never take the same saga and the watcher never waits for a batch
# deciding about one.
_LOAD_DUE = """
SELECT * FROM sagas WHERE status IN ('running', 'compensating') AND deadline_at <= $1
ORDER BY deadline_at LIMIT $2 FOR UPDATE SKIP LOCKED
"""


async def load_due(conn: asyncpg.Connection, now: datetime, limit: int) -> Sagas:
    """The sagas whose deadline passed by ``now`` (at most ``limit``, soonest first)."""
    rows = await conn.fetch(_LOAD_DUE, now, limit)
    return Sagas(now, {row["order_id"]: _saga(row) for row in rows})


class LogLine(NamedTuple):
    order_id: str
    status: str
    step: str
    entry: str


@dataclass(frozen=True)
class Rows:
    """A batch's changes as the rows they write: each saga that changed as it ends the
    batch (once, however many transitions it had; at the version it was loaded at, which
    every transition keeps), and every step-log line, in order."""

    sagas: list[Saga]
    log: list[LogLine]


def rows_of(changes: Sequence[Recorded]) -> Rows:
    last: dict[str, Saga] = {}
    lines: list[LogLine] = []
    for change in changes:
        saga = change.saga
        if change.changed:
            last[saga.order_id] = saga
        lines.append(LogLine(saga.order_id, saga.status, saga.step, change.entry))
    return Rows(list(last.values()), lines)


# New sagas (version 0) inserted at version 1; the others updated only at the version they
# were loaded at (optimistic concurrency), their ids returned (their facts never change);
# the step log's lines in their order: one statement for the whole batch. The jsonb columns
# arrive as JSON text: asyncpg would take a list inside a jsonb[] for a dimension.
_WRITE_SAGAS = """
WITH saga_rows AS (
    SELECT order_id, status, step, completed::jsonb, pending::jsonb, reason, facts::jsonb,
           deadline_at, payment_id, tracking_number, version
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::timestamptz[], $9::text[], $10::text[], $11::int[])
        AS s(order_id, status, step, completed, pending, reason, facts, deadline_at,
             payment_id, tracking_number, version)
), inserted AS (
    INSERT INTO sagas (order_id, status, step, completed, pending, reason, facts, deadline_at,
                       payment_id, tracking_number, version)
    SELECT order_id, status, step, completed, pending, reason, facts, deadline_at,
           payment_id, tracking_number, 1
    FROM saga_rows WHERE version = 0
), updated AS (
    UPDATE sagas SET status = s.status, step = s.step, completed = s.completed,
                     pending = s.pending, reason = s.reason, deadline_at = s.deadline_at,
                     payment_id = s.payment_id, tracking_number = s.tracking_number,
                     version = sagas.version + 1, updated_at = now()
    FROM saga_rows s
    WHERE s.version > 0 AND sagas.order_id = s.order_id AND sagas.version = s.version
    RETURNING sagas.order_id
), logged AS (
    INSERT INTO saga_log (order_id, status, step, entry)
    SELECT order_id, status, step, entry
    FROM unnest($12::text[], $13::text[], $14::text[], $15::text[]) WITH ORDINALITY
        AS l(order_id, status, step, entry, n)
    ORDER BY n
)
SELECT array(SELECT order_id FROM updated)
"""


async def write_sagas(conn: asyncpg.Connection, changes: Sequence[Recorded]) -> None:
    """Store the batch's sagas and step-log lines; ``SagaConflict`` when a saga changed
    since it was loaded (the transaction is then rolled back and retried)."""
    rows = rows_of(changes)
    updated: list[str] = await conn.fetchval(
        _WRITE_SAGAS,
        [saga.order_id for saga in rows.sagas],
        [saga.status for saga in rows.sagas],
        [saga.step for saga in rows.sagas],
        [json.dumps(saga.completed) for saga in rows.sagas],
        [json.dumps(saga.pending) for saga in rows.sagas],
        [saga.reason for saga in rows.sagas],
        [json.dumps(_facts_to_json(saga.facts)) for saga in rows.sagas],
        [saga.deadline_at for saga in rows.sagas],
        [saga.payment_id for saga in rows.sagas],
        [saga.tracking_number for saga in rows.sagas],
        [saga.version for saga in rows.sagas],
        [line.order_id for line in rows.log],
        [line.status for line in rows.log],
        [line.step for line in rows.log],
        [line.entry for line in rows.log],
    )
    stale = [s.order_id for s in rows.sagas if s.version > 0 and s.order_id not in updated]
    if stale:
        raise SagaConflict(f"saga {', '.join(stale)} changed since it was loaded")


# --- Reads for the rest of the fleet (public.py). ---------------------------------------


async def find_saga(conn: asyncpg.Connection, order_id: str) -> Saga | None:
    row = await conn.fetchrow("SELECT * FROM sagas WHERE order_id = $1", order_id)
    return None if row is None else _saga(row)


async def step_log(conn: asyncpg.Connection, order_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT at, status, step, entry FROM saga_log WHERE order_id = $1 ORDER BY id", order_id
    )
    return [dict(row) for row in rows]


async def counts_by_status(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM sagas GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


async def overdue_count(conn: asyncpg.Connection, now: datetime) -> int:
    """Sagas still waiting whose deadline has passed (the deadline watcher acts on them)."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM sagas WHERE status IN ('running', 'compensating')"
        " AND deadline_at <= $1",
        now,
    )
    return count


_LISTING_COLUMNS = "order_id, status, step, reason, deadline_at, version, created_at, updated_at"


async def listing(
    conn: asyncpg.Connection,
    *,
    statuses: Sequence[str] | None = None,
    updated_before: datetime | None = None,
    limit: int = 50,
    oldest_first: bool = False,
) -> list[asyncpg.Record]:
    """Sagas with one of ``statuses`` (any when None) last changed before ``updated_before``
    (any when None), most recently changed first unless ``oldest_first``."""
    order = "ASC" if oldest_first else "DESC"
    return list(
        await conn.fetch(
            f"SELECT {_LISTING_COLUMNS} FROM sagas"
            " WHERE ($1::text[] IS NULL OR status = ANY($1))"
            " AND ($2::timestamptz IS NULL OR updated_at <= $2)"
            f" ORDER BY updated_at {order}, order_id LIMIT $3",
            None if statuses is None else list(statuses),
            updated_before,
            limit,
        )
    )


async def summary(conn: asyncpg.Connection, order_id: str) -> asyncpg.Record | None:
    """The saga's row as ``listing`` gives it."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_LISTING_COLUMNS} FROM sagas WHERE order_id = $1", order_id
    )
    return row


async def log_entry_containing(conn: asyncpg.Connection, order_id: str, text: str) -> str | None:
    """The saga's first step-log line containing ``text`` (an operator request's id)."""
    entry: str | None = await conn.fetchval(
        "SELECT entry FROM saga_log WHERE order_id = $1 AND strpos(entry, $2) > 0"
        " ORDER BY id LIMIT 1",
        order_id,
        text,
    )
    return entry
