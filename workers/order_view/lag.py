"""How far behind the write side the view is: what waits in its queues, and how long since
it last applied an event. Read by the worker's metrics sampler (``handlers``) and, through
``public``, by ``fleet status``, ``fleet orders`` and the API; given the view's service,
so that this module needs neither of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aio_pika.abc import AbstractConnection

from workers.runtime import connections, topology
from workers.runtime.service import Service
from workers.runtime.settings import Settings


def lag_queues(service: Service, settings: Settings) -> list[str]:
    """The view's queues: what waits there is not projected yet. (A view event waiting in
    a delay tier for its retry is not counted: the tiers are shared by every handler.)"""
    return [
        name
        for spec in service.queue_specs(settings.namespace)
        for name in (spec.name, *topology.legacy_retry_queues(settings, spec))
    ]


async def view_lag(
    service: Service,
    settings: Settings,
    last_update: Any,
    *,
    connection: AbstractConnection | None = None,
) -> dict[str, Any]:
    """How far behind the write side the view is: what waits in its queues (and their retry
    queues) and when it last applied an order event. Over ``connection`` when given (a
    server's long-lived one), else over a connection of its own."""
    queues = lag_queues(service, settings)
    if connection is None:
        own = await connections.connect(settings.broker_urls)
        try:
            depths = await topology.depths(own, queues)
        finally:
            await own.close()
    else:
        depths = await topology.depths(connection, queues)
    return {
        "messages_waiting": sum(depth or 0 for depth in depths.values()),
        "last_update": last_update,
    }


def lag_seconds(lag: dict[str, Any], now: datetime) -> float:
    """The view's lag in seconds, from ``view_lag``: 0 when nothing waits for it, else how
    long since it last applied an event (it is that far behind at least)."""
    last_update = lag["last_update"]
    if not lag["messages_waiting"] or last_update is None:
        return 0.0
    return max(0.0, float((now - last_update).total_seconds()))
