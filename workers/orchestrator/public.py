"""What the rest of the fleet may use of the orchestrator: an orchestrated order's saga and
its step log (``fleet saga show``), and the sagas by state and past their deadline (``fleet
status``, the metrics), read as the orchestrator's own role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from db.engine import connect_once
from workers.orchestrator import store
from workers.runtime.settings import Settings

SERVICE = "orchestrator"


async def saga_details(settings: Settings, order_id: str) -> dict[str, Any] | None:
    """The saga's state and step log; None when the orchestrator runs no saga for it."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        saga = await store.load(conn, order_id)
        if saga is None:
            return None
        steps = await store.step_log(conn, order_id)
    return {
        "order_id": order_id,
        "style": "orchestration",
        "status": saga.status,
        "step": saga.step,
        "completed": list(saga.completed),
        "pending": list(saga.pending),
        "reason": saga.reason,
        "deadline_at": saga.deadline_at,
        "version": saga.version,
        "log": steps,
    }


@dataclass(frozen=True)
class SagaCounts:
    by_status: dict[str, int]  # running, compensating, confirmed, rejected
    overdue: int  # still waiting, deadline passed


async def saga_counts(conn: asyncpg.Connection) -> SagaCounts:
    """Over a connection to the orchestrator's database."""
    return SagaCounts(
        await store.counts_by_status(conn), await store.overdue_count(conn, datetime.now(UTC))
    )
