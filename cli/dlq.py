"""``fleet dlq``: list, show, replay and purge the dead-letter queues."""

from __future__ import annotations

import asyncio

import typer

from cli.output import JsonOption, command_group, fail, print_json, print_table

app = command_group("The dead-letter queues.")

MessageIdOption = typer.Option(None, "--message-id", help="Only the message with this id.")
AllOption = typer.Option(False, "--all", help="Every message in the queue.")


def _one_or_all(message_id: str | None, every: bool) -> str | None:
    if (message_id is None) == (not every):
        fail("give exactly one of --message-id ID or --all", 2)
    return message_id


@app.command("list")
def list_(as_json: bool = JsonOption) -> None:
    """Every dead-letter queue with its depth."""
    from workers.operations import dead_letters
    from workers.runtime.settings import get_settings

    depths = asyncio.run(dead_letters.depth_of_every_dlq(get_settings()))
    if as_json:
        print_json([{"queue": name, "depth": depth} for name, depth in depths.items()])
        return
    print_table(
        "dead-letter queues",
        ["queue", "depth"],
        [(name, "not declared" if depth is None else depth) for name, depth in depths.items()],
    )


@app.command()
def show(
    queue: str = typer.Argument(
        ..., help="A dead-letter queue, e.g. fleet.inventory.reserve_stock.dlq."
    ),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many, from the head."),
    as_json: bool = JsonOption,
) -> None:
    """Headers and body of dead letters, the queue left as it was."""
    from workers.operations import dead_letters
    from workers.runtime.settings import get_settings

    letters = asyncio.run(dead_letters.browse(get_settings(), queue, limit))
    if as_json:
        print_json([letter.as_dict() for letter in letters])
        return
    if not letters:
        typer.echo(f"{queue} is empty")
    for letter in letters:
        data = letter.as_dict()
        typer.echo(f"message {data['message_id']}  type {data['type']}")
        typer.echo(f"  reason: {data['reason']}")
        for key, value in sorted(data["headers"].items()):
            typer.echo(f"  {key}: {value}")
        typer.echo(f"  body: {data['body']}")


GROUP_KEYS = ("signature", "type", "queue", "service")  # as dead_letters.GROUP_KEYS


@app.command()
def groups(
    by: str = typer.Option(
        "signature", "--by", help=f"Group by {' | '.join(GROUP_KEYS)} (default signature)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Dead letters of every queue grouped by how they failed, largest group first.

    A signature is the error type and where in the fleet's code it arose (or the broker's
    reason and queue); the queues are left as they were.
    """
    if by not in GROUP_KEYS:
        fail(f"--by must be one of {', '.join(GROUP_KEYS)}, not {by!r}", 2)
    from workers.operations import dead_letters
    from workers.runtime.settings import get_settings

    found = asyncio.run(dead_letters.groups(get_settings(), by))
    if as_json:
        print_json([group.as_dict() for group in found])
        return
    if not found:
        typer.echo("no dead letters")
        return
    print_table(
        f"dead letters by {by}",
        [by, "count", "first failure", "last failure", "latest error", "example message id"],
        [
            (
                group.key,
                group.count,
                _when(group.first_failed_at),
                _when(group.last_failed_at),
                group.latest_reason[:120],
                group.example_message_id,
            )
            for group in found
        ],
    )


def _when(value: object) -> str:
    return "" if value is None else str(value)[:19]


@app.command()
def replay(
    queue: str = typer.Argument(..., help="A dead-letter queue."),
    message_id: str | None = MessageIdOption,
    every: bool = AllOption,
    as_json: bool = JsonOption,
) -> None:
    """Send dead letters back to their original queue.

    Each is removed from the DLQ only once its republish is confirmed.
    """
    chosen = _one_or_all(message_id, every)
    from workers.operations import dead_letters
    from workers.runtime import tracing
    from workers.runtime.settings import get_settings

    tracing.configure("fleet-cli")
    replayed = asyncio.run(dead_letters.replay(get_settings(), queue, chosen))
    if as_json:
        print_json({"queue": queue, "replayed": replayed})
    else:
        typer.echo(f"replayed {len(replayed)} message(s) from {queue}")


@app.command()
def purge(
    queue: str = typer.Argument(..., help="A dead-letter queue."),
    message_id: str | None = MessageIdOption,
    every: bool = AllOption,
    yes: bool = typer.Option(False, "--yes", help="Confirm: purged messages are gone for good."),
    as_json: bool = JsonOption,
) -> None:
    """Delete dead letters for good."""
    chosen = _one_or_all(message_id, every)
    if not yes:
        fail("purging deletes messages for good: add --yes to confirm", 2)
    from workers.operations import dead_letters
    from workers.runtime.settings import get_settings

    purged = asyncio.run(dead_letters.purge(get_settings(), queue, chosen))
    if as_json:
        print_json({"queue": queue, "purged": purged})
    else:
        typer.echo(f"purged {purged} message(s) from {queue}")
