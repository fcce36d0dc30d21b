"""``fleet view rebuild``: throw the read model away and build it again from the order
service's event store.

The view is emptied in its own database, then the order service is asked (one
``order.replay_events`` command) to replay its store to the view's replay queue; the view
applies the replayed events as it applies live ones and counts them in its ``rebuilds`` row,
which is what the progress bar shows. The view never reads the order service's database.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aio_pika
import typer
from aiormq.exceptions import ChannelNotFoundEntity
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.output import JsonOption, fail, print_json
from contracts import Envelope, ReplayOrderEvents, encode_message
from contracts.routing import commands_exchange
from db.engine import create_engine
from workers import services
from workers.order_view import store as view_store
from workers.publisher import ConfirmedPublisher, Outgoing
from workers.settings import Settings, get_settings

app = typer.Typer(help="The read model (order_view): rebuild it from events.", no_args_is_help=True)

VIEW = "order_view"
POLL_SECONDS = 0.25


async def idle_queues(settings: Settings) -> list[str]:
    """Warnings for the queues a rebuild needs that nothing consumes (yet)."""
    needed = (
        (services.load("order"), "replay_events", "fleet worker order"),
        (services.load(VIEW), "rebuild", f"fleet worker {VIEW}"),
    )
    warnings = []
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        for service, handler_name, command in needed:
            queue = next(h for h in service.handlers if h.name == handler_name).queue(
                settings.namespace
            )
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
                consumers = declared.declaration_result.consumer_count
            except ChannelNotFoundEntity:
                consumers = 0  # never declared: no worker ever ran
            finally:
                if not channel.is_closed:
                    await channel.close()
            if not consumers:
                warnings.append(f"nothing consumes {queue} yet: the rebuild waits for '{command}'")
    finally:
        await connection.close()
    return warnings


async def request_replay(settings: Settings, rebuild_id: str) -> None:
    """Send ``order.replay_events`` to the order service, confirmed."""
    command = ReplayOrderEvents(replay_id=rebuild_id, target=VIEW)
    envelope = Envelope.new(command.TYPE, command.VERSION, "fleet-cli", correlation_id=rebuild_id)
    publisher = await ConfirmedPublisher.connect(settings.amqp_url)
    try:
        await publisher.publish(
            Outgoing.from_envelope(
                envelope,
                exchange=commands_exchange(settings.namespace),
                routing_key=command.TYPE,
                body=encode_message(command),
            )
        )
    finally:
        await publisher.close()


async def run_rebuild(
    settings: Settings, timeout: float, progress: Progress | None
) -> dict[str, Any]:
    rebuild_id = str(uuid.uuid4())
    engine = create_engine(settings.database_url(VIEW), pool_size=1)
    try:
        # Before the view is emptied: an unreachable broker must leave the view as it was.
        warnings = await idle_queues(settings)
        async with engine.begin() as conn:
            await view_store.start_rebuild(conn, rebuild_id)
        started = time.monotonic()
        for warning in warnings:
            typer.echo(f"warning: {warning}", err=True)
        await request_replay(settings, rebuild_id)
        task = progress.add_task("replaying order events", total=None) if progress else None
        deadline = started + timeout
        while True:
            async with engine.connect() as conn:
                status = await view_store.rebuild_status(conn, rebuild_id)
            assert status is not None  # made above, and never deleted
            if progress is not None and task is not None:
                total = status.sent_events or status.expected_events
                progress.update(task, completed=status.applied_events, total=total)
            if status.finished_at is not None:
                break
            if time.monotonic() > deadline:
                expected = status.sent_events or status.expected_events
                fail(
                    f"rebuild {rebuild_id} not finished after {timeout:g} s: "
                    f"{status.applied_events} of {expected if expected is not None else '?'} "
                    "events applied (are 'fleet worker order' and 'fleet worker order_view' "
                    "running?); it goes on in the background"
                )
            await asyncio.sleep(POLL_SECONDS)
        seconds = time.monotonic() - started
        async with engine.connect() as conn:
            orders = await view_store.summary_count(conn)
    finally:
        await engine.dispose()
    return {
        "rebuild_id": rebuild_id,
        "events": status.applied_events,
        "orders": orders,
        "seconds": round(seconds, 3),
        "events_per_second": round(status.applied_events / seconds, 1) if seconds > 0 else None,
    }


@app.command("rebuild")
def rebuild(
    timeout: float = typer.Option(
        600.0, "--timeout", min=0.1, help="Give up waiting after this many seconds."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Empty the view and rebuild it from the order service's event store, in order."""
    settings = get_settings()
    if as_json:
        print_json(asyncio.run(run_rebuild(settings, timeout, None)))
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        result = asyncio.run(run_rebuild(settings, timeout, progress))
    typer.echo(
        f"rebuilt {VIEW} from {result['events']} event(s) in {result['seconds']} s "
        f"({result['events_per_second']} events/s): {result['orders']} order(s)"
    )
