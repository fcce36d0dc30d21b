"""The orchestrator's tables: one row per saga, and its step log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from contracts import Money, OrderLine
from workers.orchestrator.domain import OrderFacts, Saga
from workers.runtime.errors import TransientError

metadata = sa.MetaData()

# version: optimistic concurrency; every save names the version it was loaded at.
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


# --- Reads and writes, in the caller's transaction (asyncpg; jsonb as Python values). ---


async def load(conn: asyncpg.Connection, order_id: str) -> Saga | None:
    row = await conn.fetchrow("SELECT * FROM sagas WHERE order_id = $1", order_id)
    return None if row is None else _saga(row)


_INSERT = """
INSERT INTO sagas (order_id, status, step, completed, pending, reason, facts, deadline_at,
                   payment_id, tracking_number, version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1)
"""
# Optimistic concurrency: only the version it was loaded at is updated.
_UPDATE = """
UPDATE sagas SET status = $2, step = $3, completed = $4, pending = $5, reason = $6,
                 facts = $7, deadline_at = $8, payment_id = $9, tracking_number = $10,
                 version = version + 1, updated_at = now()
WHERE order_id = $1 AND version = $11
"""


async def save(conn: asyncpg.Connection, saga: Saga) -> Saga:
    """Insert (version 0) or update at the version it was loaded at; returns it as stored."""
    values = (
        saga.order_id,
        saga.status,
        saga.step,
        list(saga.completed),
        list(saga.pending),
        saga.reason,
        _facts_to_json(saga.facts),
        saga.deadline_at,
        saga.payment_id,
        saga.tracking_number,
    )
    if saga.version == 0:
        # The caller holds the order's lock and found no saga: a second start waits for
        # the first and then finds it.
        await conn.execute(_INSERT, *values)
    elif await conn.execute(_UPDATE, *values, saga.version) != "UPDATE 1":
        raise SagaConflict(f"saga {saga.order_id} changed since version {saga.version}")
    return replace(saga, version=saga.version + 1)


async def log(conn: asyncpg.Connection, saga: Saga, entry: str) -> None:
    await conn.execute(
        "INSERT INTO saga_log (order_id, status, step, entry) VALUES ($1, $2, $3, $4)",
        saga.order_id,
        saga.status,
        saga.step,
        entry,
    )


async def due(conn: asyncpg.Connection, now: datetime, limit: int) -> list[str]:
    """Sagas whose deadline passed, locked so that no other orchestrator takes them too."""
    rows = await conn.fetch(
        "SELECT order_id FROM sagas WHERE status IN ('running', 'compensating')"
        " AND deadline_at <= $1 ORDER BY deadline_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        now,
        limit,
    )
    return [row["order_id"] for row in rows]


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


def request_tag(message_id: str | None) -> str:
    """How an operator request's step-log line names it, so its answer can be found."""
    return f"(request {message_id})"


async def log_entry_containing(conn: asyncpg.Connection, order_id: str, text: str) -> str | None:
    """The saga's first step-log line containing ``text`` (an operator request's id)."""
    entry: str | None = await conn.fetchval(
        "SELECT entry FROM saga_log WHERE order_id = $1 AND strpos(entry, $2) > 0"
        " ORDER BY id LIMIT 1",
        order_id,
        text,
    )
    return entry
