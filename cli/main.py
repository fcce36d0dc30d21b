"""The ``fleet`` command: run workers, publish test messages, repair dead letters.

Thin and lazy: each command parses its options, calls one library function and prints;
the command modules import only typer at start-up and the library inside each command,
so ``fleet --help`` costs little more than typer itself (``bench/cli_start.py``).

Every command answers bad input or an unreachable server with one line on stderr and a
non-zero exit (2 for bad usage, 1 for everything else), never a traceback.
"""

from __future__ import annotations

import logging
import sys

import typer

from cli import archive as archive_commands
from cli import db as db_commands
from cli import dlq, docs, history, load, orders, pausing, run, status, up, view
from cli.api import api
from cli.chaos import chaos
from cli.output import PLAIN_HELP, CliError, PlainLogFormatter

app = typer.Typer(
    help="A worker fleet over RabbitMQ: order processing with outbox, inbox, sagas and DLQs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=PLAIN_HELP,
)
app.add_typer(db_commands.app, name="db")
app.add_typer(dlq.app, name="dlq")
dlq.app.command("archive")(archive_commands.archive)
dlq.app.command("archived")(archive_commands.archived)
dlq.app.command("restore")(archive_commands.restore)
app.add_typer(view.app, name="view")
app.add_typer(docs.app, name="docs")
run.register(app)
app.command()(up.up)
app.command()(db_commands.teardown)
app.add_typer(orders.order_app, name="order")
app.add_typer(orders.saga_app, name="saga")
app.add_typer(orders.orders_app, name="orders")
app.command()(orders.verify)
app.command()(status.status)
app.command()(history.history)
app.command()(pausing.pause)
app.command()(pausing.resume)
app.command()(load.load)
app.command()(chaos)
app.command()(api)


def _one_line(error: BaseException) -> tuple[str, int]:
    """The message and exit code for an error that reached the top, with any password in a
    URL masked. The library's error types are imported here, on the way out: a command that
    failed has loaded them."""
    from workers.runtime.log_context import without_passwords

    message, code = _described(error)
    return without_passwords(message), code


def _described(error: BaseException) -> tuple[str, int]:
    if isinstance(error, CliError):
        return str(error), error.exit_code
    import socket

    import asyncpg
    import pydantic
    from aiormq.exceptions import AMQPConnectionError, AMQPError
    from sqlalchemy import exc as sa_exc

    from contracts import ContractError
    from db.provision import ProvisioningError
    from workers.operations import InvalidRequest, OperatorError
    from workers.runtime.catalog import UnknownService
    from workers.runtime.role_secrets import SecretsError

    if isinstance(error, InvalidRequest | SecretsError):  # a setting to fix: bad usage
        return str(error), 2
    if isinstance(error, (ContractError, OperatorError, UnknownService, ProvisioningError)):
        return str(error), 1
    if isinstance(error, pydantic.ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"invalid setting {where}: {first['msg']}", 2
    # aio-pika's failures to connect are AMQPConnectionError; asyncpg's are plain OSErrors
    # (refused, unknown host), told apart by where they were raised.
    if isinstance(error, AMQPConnectionError) or (
        isinstance(error, ConnectionError | socket.gaierror) and not _raised_in(error, "asyncpg")
    ):
        return f"cannot reach RabbitMQ: {error}", 1
    if isinstance(error, AMQPError):
        return f"RabbitMQ refused: {error}", 1
    if isinstance(error, sa_exc.DBAPIError):
        reason = str(error.orig).rsplit(": ", 1)[-1] if error.orig else str(error)
        return f"cannot use PostgreSQL: {reason} (has 'fleet db init' run for this namespace?)", 1
    if isinstance(error, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        return f"cannot use PostgreSQL: {type(error).__name__}: {error}", 1
    return f"unexpected {type(error).__name__}: {error}", 1


def _raised_in(error: BaseException, package: str) -> bool:
    """Whether ``error`` was raised in (or passed through) ``package``'s code."""
    frame = error.__traceback__
    while frame is not None:
        if str(frame.tb_frame.f_globals.get("__name__", "")).startswith(f"{package}."):
            return True
        frame = frame.tb_next
    return False


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(PlainLogFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    # One-shot commands report a failure in their one line; the long-running ones (worker,
    # relay) turn the driver's own logging back on.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    try:
        result = app(standalone_mode=False)
    except typer.TyperException as error:  # bad usage: unknown option, missing argument...
        context = getattr(error, "ctx", None)
        path = context.command_path if context is not None else "fleet"
        message = " ".join(error.format_message().split())
        print(f"fleet: {message} (see '{path} --help')", file=sys.stderr)
        sys.exit(error.exit_code)
    except typer.Abort:
        print("fleet: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        message, code = _one_line(error)
        print(f"fleet: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(code)
    sys.exit(result if isinstance(result, int) else 0)
