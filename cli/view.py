"""``fleet view rebuild``: throw the read model away and build it again from events."""

from __future__ import annotations

import asyncio

import typer

from cli.output import JsonOption, command_group, print_json, progress_bars

app = command_group("The read model (order_view): rebuild it from events.")


@app.command("rebuild")
def rebuild(
    timeout: float = typer.Option(
        600.0, "--timeout", min=0.1, help="Give up waiting after this many seconds."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Empty the view and rebuild it from the order events.

    The order service replays its event store, in order, to the view's replay queue.
    """
    from workers.operations.rebuild import VIEW, run_rebuild
    from workers.runtime.settings import get_settings

    def warn(line: str) -> None:
        typer.echo(f"warning: {line}", err=True)

    with progress_bars(enabled=not as_json) as progress:
        result = asyncio.run(run_rebuild(get_settings(), timeout, warn=warn, progress=progress))
    if as_json:
        print_json(result)
        return
    typer.echo(
        f"rebuilt {VIEW} from {result['events']} event(s) in {result['seconds']} s "
        f"({result['events_per_second']} events/s): {result['orders']} order(s)"
    )
