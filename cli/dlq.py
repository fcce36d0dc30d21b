"""``fleet dlq``: list, show, group, replay, edit and purge the dead-letter queues, and
follow what was replayed."""

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
    queue: str | None = typer.Argument(
        None, help="A dead-letter queue (or --group, --all-queues)."
    ),
    group: str | None = typer.Option(
        None, "--group", help="Every DLQ's letters of this signature (as dlq groups shows it)."
    ),
    all_queues: bool = typer.Option(False, "--all-queues", help="The letters of every DLQ."),
    message_id: str | None = MessageIdOption,
    every: bool = typer.Option(
        False, "--all", help="Every letter of QUEUE (what QUEUE alone means; for old scripts)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many."),
    rate: float | None = typer.Option(
        None, "--rate", min=0.001, help="At most this many messages a second."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be replayed; change nothing."
    ),
    to: str | None = typer.Option(
        None, "--to", help="Send to this queue instead of the original one."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Send dead letters back to their queue (or --to another), in chunks, with progress.

    Only what is in the DLQs when the command starts is replayed. Each letter is removed
    only once its copy is confirmed and recorded, so an interrupted run can simply be run
    again: nothing is replayed twice.
    """
    if every and (queue is None or message_id is not None):
        fail("--all means every letter of QUEUE: give a QUEUE and no --message-id", 2)
    from cli.operator import operator_name
    from cli.output import progress_bars
    from workers.operations import replays
    from workers.operations.dead_letters import Selection
    from workers.runtime import tracing
    from workers.runtime.settings import get_settings

    selection = Selection(queue=queue, group=group, all_queues=all_queues, message_id=message_id)
    tracing.configure("fleet-cli")
    with progress_bars(enabled=not as_json and not dry_run) as progress:
        report = asyncio.run(
            replays.replay(
                get_settings(),
                selection,
                limit=limit,
                rate=rate,
                dry_run=dry_run,
                to_queue=to,
                progress=progress,
                operator=operator_name(),
            )
        )
    if as_json:
        print_json(report.as_dict())
        return
    verb = "would replay" if dry_run else "replayed"
    for name, done in report.queues.items():
        line = f"{verb} {len(done.replayed)} message(s) from {name}"
        if done.skipped:
            line += f"; {len(done.skipped)} replayed before, removed without sending again"
        typer.echo(line)
    if not report.queues:
        typer.echo(f"nothing to replay in {selection.describe()}")
    if report.moved_aside:
        what = "would be passed" if dry_run else "moved to the tail of their DLQ"
        typer.echo(f"{report.moved_aside} letter(s) not selected {what}")
    if report.reconnects:
        typer.echo(f"lost RabbitMQ {report.reconnects} time(s) and went on where it was")
    if not dry_run:
        typer.echo(f"run {report.run_id}: follow it with 'fleet dlq pending'")


@app.command()
def edit(
    queue: str = typer.Argument(..., help="A dead-letter queue."),
    message_id: str = typer.Option(..., "--message-id", help="The dead letter to edit."),
    data: str | None = typer.Option(
        None, "--data", help="The new body (JSON); without it, $EDITOR opens on the body."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Fix a dead letter's body and replay it as a copy with a new message id.

    The body must be valid for the message's contract (the field at fault is named
    otherwise, and nothing changes). The copy carries x-replay-of: <old id>; the original
    is removed once the copy is confirmed.
    """
    from cli.operator import operator_name
    from workers.operations import replays
    from workers.runtime import tracing
    from workers.runtime.settings import get_settings

    settings = get_settings()
    if data is None:
        original = replays.editable_body(asyncio.run(replays.letter(settings, queue, message_id)))
        import click

        edited = click.edit(original, extension=".json")
        if edited is None or not edited.strip() or edited == original:
            fail("the body was not changed: nothing done")
        data = edited
    tracing.configure("fleet-cli")
    report = asyncio.run(replays.edit(settings, queue, message_id, data, operator=operator_name()))
    if as_json:
        print_json(report.as_dict())
        return
    typer.echo(
        f"replayed {report.replay_of} edited as {report.message_id} ({report.type}"
        f" v{report.version}) to {report.to_queue}"
    )


@app.command()
def pending(
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many of each."),
    as_json: bool = JsonOption,
) -> None:
    """Replayed messages until their handler applied them or they failed again.

    Pending ones first, then those settled in the last 24 hours.
    """
    from workers.operations import replays
    from workers.runtime.settings import get_settings

    found = asyncio.run(replays.pending(get_settings(), limit=limit))
    if as_json:
        print_json([one.as_dict() for one in found])
        return
    if not found:
        typer.echo("no replays pending or recently settled")
        return
    print_table(
        "replayed messages",
        ["message id", "state", "from", "to", "replayed", "settled", "replay of"],
        [
            (
                one.message_id,
                one.state,
                one.from_queue,
                one.to_queue,
                _when(one.replayed_at),
                _when(one.settled_at),
                one.replay_of,
            )
            for one in found
        ],
    )


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
    from cli.operator import operator_name
    from workers.operations import dead_letters
    from workers.runtime.settings import get_settings

    purged = asyncio.run(
        dead_letters.purge(get_settings(), queue, chosen, operator=operator_name())
    )
    if as_json:
        print_json({"queue": queue, "purged": purged})
    else:
        typer.echo(f"purged {purged} message(s) from {queue}")
