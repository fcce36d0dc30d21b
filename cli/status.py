"""``fleet status``: one screen for the whole fleet, marking what needs action; exit 1 when
something does (scripts can test it), 0 when nothing does."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import typer

from cli.output import JsonOption, print_json

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from workers.operations.status import FleetStatus

# As workers.operations.status.DEFAULT_OUTBOX_AGE_THRESHOLD says; written out here so that
# `fleet status --help` loads no library.
DEFAULT_OUTBOX_AGE = 60.0

MARK = "!"


def _mark(problems: list[str]) -> str:
    return MARK if problems else ""


def _style(problems: list[str]) -> str | None:
    return "red" if problems else None


def _count(value: int | None) -> str:
    return "missing" if value is None else str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _consumers(count: int | None, paused: bool) -> str:
    shown = "" if count is None else str(count)
    return f"{shown} paused".strip() if paused else shown


def _paused_line(status: FleetStatus) -> str:
    """The paused handler queues with what waits in each: an operator's choice, so not
    among what needs action."""
    paused = [f"{q.queue.name} ({_count(q.queue.messages)} waiting)" for q in status.paused]
    return f"paused by an operator ('fleet resume'): {', '.join(paused)}"


def _queues_table(status: FleetStatus) -> RenderableType:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if status.broker_error is not None:
        return Text(f"{MARK} queues: RabbitMQ unreachable: {status.broker_error}", style="red")
    table = Table(title="queues", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column(MARK, width=1)
    table.add_column("queue", no_wrap=True)
    table.add_column("waiting", justify="right")
    table.add_column("consumers", justify="right")
    table.add_column("dead letters", justify="right")
    for service in status.services:
        for queue in service.queues or ():
            problems = queue.problems
            table.add_row(
                _mark(problems),
                queue.queue.name,
                _count(queue.queue.messages),
                _consumers(queue.queue.consumers, queue.paused),
                _count(queue.dead_letters.messages),
                style=_style(problems),
            )
        table.add_section()
    if status.unrouted is not None:
        from workers.operations.status import dead_letter_problems

        problems = dead_letter_problems(status.unrouted)
        table.add_row(
            _mark(problems),
            f"{status.unrouted.name} (unroutable)",
            "",
            "",
            _count(status.unrouted.messages),
            style=_style(problems),
        )
    return table


def _outboxes_table(status: FleetStatus) -> RenderableType:
    from rich import box
    from rich.table import Table

    table = Table(title="outboxes", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column(MARK, width=1)
    table.add_column("service")
    table.add_column("database")
    table.add_column("unpublished", justify="right")
    table.add_column("oldest", justify="right")
    table.add_column("relay")
    for service in status.services:
        outbox = service.outbox
        if outbox is None:  # the reason is in the list at the end
            table.add_row(MARK, service.name, "unreachable", "", "", "", style="red")
            continue
        problems = outbox.problems(service.name, status.outbox_age_threshold)
        table.add_row(
            _mark(problems),
            service.name,
            "ok",
            str(outbox.unpublished),
            _age(outbox.oldest_age_seconds),
            "active" if outbox.relay_active else "none",
            style=_style(problems),
        )
    return table


def _sagas_line(status: FleetStatus) -> RenderableType:
    from rich.text import Text

    sagas = status.sagas
    if sagas is None:
        return Text(
            f"{MARK} sagas (orchestrated): the orchestrator's database is unreachable", style="red"
        )
    counts = ", ".join(f"{state} {n}" for state, n in sorted(sagas.by_status.items())) or "none"
    line = f"sagas (orchestrated): {counts}; past their deadline {sagas.overdue}"
    if sagas.problems:
        return Text(f"{MARK} {line}", style="red")
    return Text(line)


def _view_line(status: FleetStatus) -> str:
    view = status.view
    waiting = "?" if view.messages_waiting is None else str(view.messages_waiting)
    if view.last_update is not None:
        applied = f"last update {view.last_update:%Y-%m-%d %H:%M:%S}"
    elif view.database_read:
        applied = "no update applied yet"
    else:
        applied = "last update unknown (its database is unreachable)"
    return (
        f"view: {waiting} message(s) waiting to be projected, {applied},"
        f" lag {_age(view.lag_seconds)}"
    )


def print_screen(console: Console, status: FleetStatus) -> None:
    """Everything on one screen, what needs action marked and listed at the end. Lines are
    printed whole (soft wrap), so each problem stays one line in a log or a pipe."""
    broker = "reachable" if status.broker_error is None else "unreachable"
    console.print(
        f"fleet status: namespace {status.namespace}, {status.checked_at:%Y-%m-%d %H:%M:%S} UTC,"
        f" RabbitMQ {broker}",
        style="bold",
        soft_wrap=True,
    )
    console.print(_queues_table(status))
    if status.paused:
        console.print(_paused_line(status), soft_wrap=True, markup=False)
    console.print(_outboxes_table(status))
    console.print(_sagas_line(status), soft_wrap=True)
    console.print(_view_line(status), soft_wrap=True)
    console.print()
    problems = status.problems
    if not problems:
        console.print("nothing needs action", style="bold green")
        return
    console.print(f"needs action ({len(problems)}):", style="bold red")
    for problem in problems:
        console.print(f"{MARK} {problem}", style="red", soft_wrap=True, markup=False)


def _show(console: Console, status: FleetStatus, as_json: bool, *, watching: bool) -> None:
    if as_json and watching:  # a stream of screens: one JSON document per line
        console.file.write(json.dumps(status.to_dict(), default=str) + "\n")
        console.file.flush()
    elif as_json:
        print_json(status.to_dict())
    else:
        if watching:
            console.clear()  # a no-op unless a terminal: in a log, screens follow each other
        print_screen(console, status)


def status(
    watch: bool = typer.Option(False, "--watch", help="Redraw until Ctrl-C."),
    interval: float = typer.Option(
        2.0, "--interval", min=0.1, help="Seconds between screens with --watch."
    ),
    outbox_age: float = typer.Option(
        DEFAULT_OUTBOX_AGE,
        "--outbox-age",
        min=0.0,
        help="An unpublished outbox row older than this many seconds needs action.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """The whole fleet on one screen: queues, DLQs, outboxes, relays, sagas, the view's lag.

    Marks what needs action and lists it at the end; exit 1 when something does, 0 when
    nothing does (with --watch, as the last screen said at Ctrl-C). With --json, one JSON
    document (with --watch, one per line).
    """
    from rich.console import Console

    from workers.operations.status import fleet_status
    from workers.runtime.settings import get_settings

    settings = get_settings()
    console = Console()

    def read() -> FleetStatus:
        return asyncio.run(fleet_status(settings, outbox_age_threshold=outbox_age))

    if not watch:
        current = read()
        _show(console, current, as_json, watching=False)
        raise typer.Exit(1 if current.needs_action else 0)
    last: FleetStatus | None = None
    try:
        while True:
            last = read()
            _show(console, last, as_json, watching=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    if last is None:
        raise typer.Abort()
    raise typer.Exit(1 if last.needs_action else 0)
