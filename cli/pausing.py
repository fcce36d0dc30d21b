"""``fleet pause`` and ``fleet resume``: a handler's consumers stop taking messages (they
stay connected, messages wait in its queue) until resumed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

from cli.output import JsonOption, print_json

if TYPE_CHECKING:
    from workers.operations.pausing import PauseState

TargetArgument = typer.Argument(
    ...,
    metavar="SERVICE[.HANDLER]",
    help="A service (every handler it has) or one handler, e.g. inventory.reserve_stock.",
)


def pause(target: str = TargetArgument, as_json: bool = JsonOption) -> None:
    """Stop a handler's consumers taking messages; they wait in its queue until resumed.

    Workers stay connected, finish what they hold, and a worker started meanwhile starts
    paused. Pausing what is paused already changes nothing (exit 0).
    """
    from cli.operator import operator_name
    from workers.operations import pausing
    from workers.runtime.settings import get_settings

    _report(asyncio.run(pausing.pause(get_settings(), target, operator=operator_name())), as_json)


def resume(target: str = TargetArgument, as_json: bool = JsonOption) -> None:
    """Let paused handlers take messages again. Resuming what is not paused changes
    nothing (exit 0)."""
    from cli.operator import operator_name
    from workers.operations import pausing
    from workers.runtime.settings import get_settings

    _report(asyncio.run(pausing.resume(get_settings(), target, operator=operator_name())), as_json)


def _report(state: PauseState, as_json: bool) -> None:
    if as_json:
        print_json(state.to_dict())
        return
    done = "paused" if state.action == "pause" else "resumed"
    if state.changed:
        typer.echo(f"{done}: {', '.join(state.changed)}")
    if state.unchanged:
        already = "already paused" if state.action == "pause" else "not paused"
        typer.echo(f"{already}, nothing changed: {', '.join(state.unchanged)}")
    typer.echo(f"paused now: {', '.join(state.paused) or 'nothing'}")
