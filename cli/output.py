"""How commands answer: a rich table or line for people, JSON for scripts, one-line errors,
progress bars, and JSON log lines for the long-running commands.

Imported by every command module at start-up, so it imports only typer: rich is loaded
when something is printed with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from workers.runtime import log_context

if TYPE_CHECKING:
    from workers.operations import Progress

JsonOption = typer.Option(False, "--json", help="Answer in JSON, for scripts.")

# Help as plain text: rich's help formatting loads markdown and syntax highlighting for
# every --help, several times what typer itself costs (bench/cli_start.py).
PLAIN_HELP = None


def command_group(help: str) -> typer.Typer:
    """A group of subcommands (``fleet dlq ...``), as every group of the CLI is made."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=PLAIN_HELP)


class CliError(Exception):
    """A request that cannot be carried out; its message is the one line the user sees."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = 1) -> NoReturn:
    raise CliError(message, exit_code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console().print(table)


def first_error(error: Exception) -> str:
    """The first problem of a pydantic ValidationError, as "field: message"."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc']) or 'body'}: {first['msg']}"
    return str(error)


@contextlib.contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Progress]:
    """A rich progress bar per stage a tool reports (``workers.operations.Progress``)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield report


# The log formatters live with the log context they read (a library, not the CLI).
PlainLogFormatter = log_context.PlainLogFormatter
JsonLogFormatter = log_context.JsonLogFormatter


def log_as_json() -> None:
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonLogFormatter())
