"""The orchestrator's tables: one row per saga, and its step log."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

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


def _columns(saga: Saga) -> dict[str, Any]:
    return {
        "status": saga.status,
        "step": saga.step,
        "completed": list(saga.completed),
        "pending": list(saga.pending),
        "reason": saga.reason,
        "facts": _facts_to_json(saga.facts),
        "deadline_at": saga.deadline_at,
        "payment_id": saga.payment_id,
        "tracking_number": saga.tracking_number,
    }


def _saga(row: Any) -> Saga:
    return Saga(
        facts=_facts_from_json(row.facts),
        status=row.status,
        step=row.step,
        completed=tuple(row.completed),
        pending=tuple(row.pending),
        reason=row.reason,
        deadline_at=row.deadline_at,
        version=row.version,
        payment_id=row.payment_id,
        tracking_number=row.tracking_number,
    )


async def load(conn: AsyncConnection, order_id: str) -> Saga | None:
    row = (await conn.execute(sa.select(sagas).where(sagas.c.order_id == order_id))).first()
    return None if row is None else _saga(row)


async def save(conn: AsyncConnection, saga: Saga) -> Saga:
    """Insert (version 0) or update at the version it was loaded at; returns it as stored."""
    stored = replace(saga, version=saga.version + 1)
    if saga.version == 0:
        # A second start for the same order fails on the primary key: retried, it finds
        # the saga and does nothing.
        await conn.execute(
            sa.insert(sagas).values(order_id=saga.order_id, version=1, **_columns(saga))
        )
        return stored
    updated = await conn.execute(
        sa.update(sagas)
        .where(sagas.c.order_id == saga.order_id, sagas.c.version == saga.version)
        .values(version=saga.version + 1, updated_at=sa.func.now(), **_columns(saga))
    )
    if updated.rowcount != 1:
        raise SagaConflict(f"saga {saga.order_id} changed since version {saga.version}")
    return stored


async def log(conn: AsyncConnection, saga: Saga, entry: str) -> None:
    await conn.execute(
        sa.insert(saga_log).values(
            order_id=saga.order_id, status=saga.status, step=saga.step, entry=entry
        )
    )


async def due(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Sagas whose deadline passed, locked so that no other orchestrator takes them too."""
    rows = await conn.execute(
        sa.select(sagas.c.order_id)
        .where(sagas.c.status.in_(("running", "compensating")), sagas.c.deadline_at <= now)
        .order_by(sagas.c.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [order_id for (order_id,) in rows]


async def step_log(conn: AsyncConnection, order_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        sa.select(saga_log.c.at, saga_log.c.status, saga_log.c.step, saga_log.c.entry)
        .where(saga_log.c.order_id == order_id)
        .order_by(saga_log.c.id)
    )
    return [dict(row._mapping) for row in rows]
