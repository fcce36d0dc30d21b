"""What the rest of the fleet may use of the orchestrator: an orchestrated order's saga and
its step log (``fleet saga show``), the sagas by state and past their deadline (``fleet
status``, the metrics), the sagas listed and an operator request's answer (``fleet saga
list / retry / compensate``), read as the orchestrator's own role. Nothing here writes:
operators act through the orchestrator's commands (``contracts/orchestrator.py``)."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from db.engine import connect_once
from workers.orchestrator import domain, store
from workers.orchestrator.domain import Status
from workers.runtime.settings import Settings

SERVICE = "orchestrator"
STATUSES = typing.get_args(Status)  # running, compensating, confirmed, rejected
FINAL = domain.FINAL
PIVOT = "confirm_order"  # from this step on a saga only goes forward: no compensation


async def saga_details(settings: Settings, order_id: str) -> dict[str, Any] | None:
    """The saga's state and step log; None when the orchestrator runs no saga for it."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        saga = await store.find_saga(conn, order_id)
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


@dataclass(frozen=True)
class SagaSummary:
    """One saga as operators list it: where it stands and when it last changed."""

    order_id: str
    status: str
    step: str  # the step it waits for (its last one once final)
    reason: str | None
    deadline_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def final(self) -> bool:
        return self.status in FINAL


async def list_sagas(
    settings: Settings,
    *,
    statuses: Sequence[str] | None = None,
    updated_before: datetime | None = None,
    limit: int = 50,
    oldest_first: bool = False,
) -> list[SagaSummary]:
    """Sagas with one of ``statuses`` last changed before ``updated_before`` (None: any),
    most recently changed first unless ``oldest_first``."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        rows = await store.listing(
            conn,
            statuses=statuses,
            updated_before=updated_before,
            limit=limit,
            oldest_first=oldest_first,
        )
    return [SagaSummary(**dict(row)) for row in rows]


async def saga_summary(settings: Settings, order_id: str) -> SagaSummary | None:
    """The order's saga as ``list_sagas`` shows it; None when the orchestrator runs none."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        row = await store.summary(conn, order_id)
    return None if row is None else SagaSummary(**dict(row))


async def request_answer(settings: Settings, order_id: str, message_id: str) -> str | None:
    """The saga's step-log line for the operator request sent as ``message_id`` (the
    orchestrator names the request in it); None while it has not handled it."""
    async with connect_once(settings.database_url(SERVICE)) as conn:
        return await store.log_entry_containing(conn, order_id, domain.request_tag(message_id))
