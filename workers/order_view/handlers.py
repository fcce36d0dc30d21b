"""The order_view's wiring: an order's events projected into its summary row, live
(``project``) and from a replay of the order service's event store (``rebuild``). Each is
a decision of ``domain`` on the rows ``store.load_summaries`` reads, written back with the
replays' counters by ``store.write_view``; the view emits nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
from aio_pika.abc import AbstractConnection

from workers.order_view import domain, lag, store
from workers.runtime import metrics
from workers.runtime.service import Service
from workers.runtime.settings import Settings

service = Service("order_view", emits=())  # a projection: it emits nothing


def observe_saga_ends(changes: Sequence[domain.Change]) -> None:
    """How long each live saga the batch saw end took, once the batch has committed (a
    batch that rolls back and is applied again is observed once)."""
    for change in changes:
        if isinstance(change, domain.SagaEnded):
            outcome = change.status.lower()
            metrics.SAGA_SECONDS.labels(change.saga, outcome).observe(change.seconds)


service.handler(
    domain.project,
    load=store.load_summaries,
    write=store.write_view,
    after_commit=observe_saga_ends,
)
service.handler(
    domain.rebuild,
    load=store.load_summaries,
    write=store.write_view,
    from_replays=True,
)


async def sample(settings: Settings, conn: asyncpg.Connection, broker: AbstractConnection) -> None:
    """The metrics sampler's gauges of the view: choreographed sagas by state (the
    orchestrator counts orchestrated ones), and how far the view is behind."""
    counts = await store.counts_by_saga_and_status(conn)
    for status in domain.STATUSES:
        metrics.SAGAS.labels("choreography", status.lower()).set(
            counts.get(("choreography", status), 0)
        )
    behind = await lag.view_lag(service, settings, await store.last_update(conn), connection=broker)
    metrics.VIEW_WAITING.set(behind["messages_waiting"])
    metrics.VIEW_LAG.set(lag.lag_seconds(behind, datetime.now(UTC)))


service.samplers.append(sample)
