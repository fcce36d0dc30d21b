"""``fleet view rebuild``: throw the read model away and build it again from the order
service's event store.

The view is emptied in its own database, then the order service is asked (one
``order.replay_events`` command) to replay its store to the view's replay queue; the view
applies the replayed events as it applies live ones and counts them in its ``rebuilds`` row,
which is what the progress shows. The view never reads the order service's database.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from contracts import OutgoingMessage, ReplayOrderEvents
from workers.operations import OperatorError, Progress, no_progress
from workers.operations.reconnect import ReconnectingPublisher, Reconnects, read_again_on_loss
from workers.order_view import public as view
from workers.runtime import catalog, connections, topology
from workers.runtime.settings import Settings

VIEW = "order_view"
POLL_SECONDS = 0.25

STAGE = "replaying order events"


async def idle_queues(settings: Settings) -> list[str]:
    """Warnings for the queues a rebuild needs that nothing consumes (yet)."""
    ns = settings.namespace
    needed = {
        catalog.load("order").handler_named("replay_events").queue(ns): "fleet worker order",
        catalog.load(VIEW).handler_named("rebuild").queue(ns): f"fleet worker {VIEW}",
    }
    connection = await connections.connect(settings.broker_urls)
    try:
        states = await topology.queue_states(connection, needed)
    finally:
        await connection.close()
    return [
        f"nothing consumes {queue} yet: the rebuild waits for '{command}'"
        for queue, command in needed.items()
        if not (state := states[queue]) or not state.consumers  # never declared, or idle
    ]


async def request_replay(
    settings: Settings, rebuild_id: str, reconnects: Reconnects | None = None
) -> None:
    """Send ``order.replay_events`` to the order service, confirmed; sent again on a new
    connection if the broker dropped it (one message id: the order service replays once)."""
    command = ReplayOrderEvents(replay_id=rebuild_id, target=VIEW)
    message = OutgoingMessage.for_message(
        command, producer="fleet-cli", namespace=settings.namespace, correlation_id=rebuild_id
    )
    publisher = ReconnectingPublisher(settings.broker_urls, reconnects or Reconnects())
    try:
        await publisher.publish(message)
    finally:
        await publisher.close()


async def _start_once(settings: Settings, rebuild_id: str) -> None:
    """Empty the view and open the rebuild's row, unless an attempt whose answer was lost
    with its connection did so already."""
    if await view.rebuild_status(settings, rebuild_id) is None:
        await view.start_rebuild(settings, rebuild_id)


async def run_rebuild(
    settings: Settings,
    timeout: float,
    *,
    warn: Callable[[str], None] = lambda _: None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Rebuild the view; raises OperatorError if it has not finished within ``timeout``
    seconds (the replay goes on in the background). Once started, a lost connection to
    either server is reopened and the rebuild followed on (``warn`` hears of it)."""
    rebuild_id = str(uuid.uuid4())
    reconnects = Reconnects(say=warn)
    # Before the view is emptied: an unreachable broker must leave the view as it was.
    warnings = await idle_queues(settings)
    await read_again_on_loss(lambda: _start_once(settings, rebuild_id), reconnects, "view")
    started = time.monotonic()
    for warning in warnings:
        warn(warning)
    await request_replay(settings, rebuild_id, reconnects)
    deadline = started + timeout
    while True:
        status = await read_again_on_loss(
            lambda: view.rebuild_status(settings, rebuild_id), reconnects, "view"
        )
        assert status is not None  # made above, and never deleted
        expected = status.sent_events or status.expected_events
        progress(STAGE, status.applied_events, expected)
        if status.finished_at is not None:
            break
        if time.monotonic() > deadline:
            raise OperatorError(
                f"rebuild {rebuild_id} not finished after {timeout:g} s: "
                f"{status.applied_events} of {expected if expected is not None else '?'} "
                "events applied (are 'fleet worker order' and 'fleet worker order_view' "
                "running?); it goes on in the background"
            )
        await asyncio.sleep(POLL_SECONDS)
    seconds = time.monotonic() - started
    return {
        "rebuild_id": rebuild_id,
        "events": status.applied_events,
        "orders": await read_again_on_loss(lambda: view.order_count(settings), reconnects, "view"),
        "seconds": round(seconds, 3),
        "events_per_second": round(status.applied_events / seconds, 1) if seconds > 0 else None,
        "reconnects": reconnects.as_dict(),
    }
