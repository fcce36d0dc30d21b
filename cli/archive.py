"""``fleet dlq archive``, ``archived`` and ``restore``: dead letters set aside in the
operations database, and put back (registered on the ``dlq`` group by cli/main.py)."""

from __future__ import annotations

import asyncio

import typer

from cli.output import JsonOption, fail, print_json, print_table, progress_bars

QueueFilter = typer.Option(None, "--queue", help="Only letters archived from this DLQ.")
GroupFilter = typer.Option(None, "--group", help="Only letters of this signature (dlq groups).")


def archive(
    queue: str | None = typer.Argument(
        None, help="A dead-letter queue, e.g. fleet.inventory.reserve_stock.dlq."
    ),
    group: str | None = typer.Option(
        None, "--group", help="Every dead letter of this signature, as 'fleet dlq groups' lists."
    ),
    message_id: str | None = typer.Option(None, "--message-id", help="Only this message."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many."),
    as_json: bool = JsonOption,
) -> None:
    """Move dead letters into the archive (kept for FLEET_ARCHIVE_RETENTION).

    Each is removed from its DLQ only once it is stored in the operations database.
    """
    if (queue is None) == (group is None):
        fail("choose the dead letters: a QUEUE or --group G", 2)
    from cli.operator import operator_name
    from workers.operations import archive as archive_
    from workers.operations.dead_letters import Selection
    from workers.runtime.settings import get_settings

    selection = Selection(queue=queue, group=group, message_id=message_id)
    with progress_bars(enabled=not as_json) as progress:
        report = asyncio.run(
            archive_.archive(
                get_settings(),
                selection,
                limit=limit,
                progress=progress,
                operator=operator_name(),
            )
        )
    if as_json:
        print_json(report.as_dict())
        return
    typer.echo(f"archived {report.archived} dead letter(s) from {selection.describe()}")
    for name, count in sorted(report.by_queue.items()):
        typer.echo(f"  {name}: {count}")


def archived(
    queue: str | None = QueueFilter,
    group: str | None = GroupFilter,
    letter_id: int | None = typer.Option(
        None, "--id", help="One archived letter in full: properties, headers and body."
    ),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many, newest first."),
    as_json: bool = JsonOption,
) -> None:
    """Archived dead letters, newest first, with their reason and signature."""
    from workers.operations import archive as archive_
    from workers.runtime.settings import get_settings

    settings = get_settings()
    if letter_id is not None:
        letter = asyncio.run(archive_.archived_letter(settings, letter_id))
        data = letter.as_dict()
        if as_json:
            print_json(data)
            return
        typer.echo(f"archived letter {letter.id}: message {letter.message_id}  type {letter.type}")
        for key in ("queue", "signature", "reason", "failed_at", "archived_at"):
            typer.echo(f"  {key}: {data[key]}")
        for key, value in sorted(data["properties"].items()):
            typer.echo(f"  property {key}: {value}")
        for key, value in sorted(data["headers"].items()):
            typer.echo(f"  header {key}: {value}")
        typer.echo(f"  body: {data['body']}")
        return
    letters = asyncio.run(archive_.archived(settings, queue=queue, group=group, limit=limit))
    if as_json:
        print_json([letter.as_dict(with_body=False) for letter in letters])
        return
    if not letters:
        typer.echo("no archived dead letters")
        return
    print_table(
        "archived dead letters, newest first",
        ["id", "archived", "queue", "message id", "signature", "reason"],
        [
            (
                letter.id,
                str(letter.archived_at)[:19],
                letter.queue,
                letter.message_id,
                letter.signature,
                letter.reason[:120],
            )
            for letter in letters
        ],
    )


def restore(
    ids: list[int] | None = typer.Option(
        None, "--id", help="This archived letter (repeat for several)."
    ),
    message_id: str | None = typer.Option(None, "--message-id", help="Letters of this message."),
    queue: str | None = typer.Option(None, "--queue", help="Every letter archived from this DLQ."),
    every: bool = typer.Option(False, "--all", help="Every archived letter."),
    as_json: bool = JsonOption,
) -> None:
    """Put archived dead letters back in their DLQs, headers and properties as they were.

    Each leaves the archive only once its publish is confirmed.
    """
    from cli.operator import operator_name
    from workers.operations import archive as archive_
    from workers.runtime.settings import get_settings

    report = asyncio.run(
        archive_.restore(
            get_settings(),
            ids=ids or None,
            message_id=message_id,
            queue=queue,
            every=every,
            operator=operator_name(),
        )
    )
    if as_json:
        print_json(report.as_dict())
        return
    typer.echo(f"restored {report.restored} dead letter(s)")
    for name, count in sorted(report.by_queue.items()):
        typer.echo(f"  {name}: {count}")
