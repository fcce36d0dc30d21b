"""``fleet history``: the audit log of operator actions, latest first."""

from __future__ import annotations

import asyncio

import typer

from cli.output import JsonOption, print_json, print_table


def history(
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many lines."),
    action: str | None = typer.Option(
        None, "--action", help="Only this action, or a prefix of it: dlq, dlq.replay, saga..."
    ),
    target: str | None = typer.Option(None, "--target", help="Only actions on this target."),
    as_json: bool = JsonOption,
) -> None:
    """What operators did: replays, edits, archives, restores, purges, saga actions, pauses."""
    from workers.operations import ops_db
    from workers.runtime.settings import get_settings

    entries = asyncio.run(ops_db.history(get_settings(), limit=limit, action=action, target=target))
    if as_json:
        print_json([entry.as_dict() for entry in entries])
        return
    if not entries:
        typer.echo("no operator actions recorded")
        return
    print_table(
        "operator actions, latest first",
        ["when", "operator", "action", "target", "count", "message ids"],
        [
            (
                str(entry.at)[:19],
                entry.operator,
                entry.action,
                entry.target,
                entry.count,
                _ids(entry.message_ids),
            )
            for entry in entries
        ],
    )


def _ids(message_ids: list[str]) -> str:
    shown = ", ".join(message_ids[:3])
    return f"{shown} and {len(message_ids) - 3} more" if len(message_ids) > 3 else shown
