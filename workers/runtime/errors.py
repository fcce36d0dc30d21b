"""Which failures are worth a delayed retry, and which go straight to the dead-letter queue.

Transient: the database or broker is unreachable or restarting, a serialization failure or
deadlock, an optimistic concurrency conflict; waiting helps. Everything else is permanent:
a message that cannot be decoded, a contract we do not know, a bug in a handler; retrying
it would only fail again, so it goes to the DLQ at once with the reason, to be replayed once
fixed. Business refusals (out of stock) are not errors at all: handlers emit events for them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import asyncpg

from db import mariadb
from db.event_store import ConcurrencyConflict


class TransientError(Exception):
    """Raise from a handler to ask for a delayed retry (e.g. a concurrency conflict)."""


class PermanentError(Exception):
    """Raise from a handler for a message that can never succeed."""


# SQLSTATE classes that mean "try again later": 08 connection exception, 40 transaction
# rollback (serialization failure, deadlock), 53 insufficient resources, 55 object not in
# prerequisite state (database not accepting connections, lock not available), 57P operator
# intervention (server shutting down, backend terminated), and the connection-time refusals
# an operator mends (28 authorization, 3D000 no such database): waiting costs nothing, and
# what still fails ends in the DLQ, replayable.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "28", "3D000", "40", "53", "55", "57P")


def _sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of asyncpg's error, or of the one it was raised from."""
    current: BaseException | None = error
    while current is not None:
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str):
            return state
        current = current.__cause__
    return None


def is_transient(error: BaseException) -> bool:
    # A concurrency conflict aborted the transaction: the retry decides again on fresh state.
    if isinstance(error, (TransientError, ConcurrencyConflict)):
        return True
    if isinstance(error, PermanentError):
        return False
    # Refused or lost connections; a pool with no connection free in time (TimeoutError).
    if isinstance(error, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError)):
        return True
    # MariaDB's: a deadlock victim, a lock wait timed out, the server out of reach.
    if mariadb.judged(error):
        return mariadb.worth_retrying(error)
    state = _sqlstate(error)
    return state is not None and state.startswith(_TRANSIENT_SQLSTATE_PREFIXES)


@contextlib.contextmanager
def broker_loss_as_connection_error() -> Iterator[None]:
    """A broker connection lost to a missed heartbeat raises ConnectionError here, as any
    other loss does. aiormq ends that connection by cancelling its reader task, and every
    call waiting on it (a confirm, a channel opening, a declare) then raises the reader's
    CancelledError: a BaseException, which ``except Exception`` lets through, so a relay or
    sampler took it for its own cancellation and ended for good (found by freezing the
    broker, tests/integration/test_server_faults.py). A task being cancelled itself still
    gets its CancelledError."""
    try:
        yield
    except asyncio.CancelledError as error:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise ConnectionError("the broker connection was lost (no heartbeat)") from error


# The fleet's own packages: where in them an error arose names its group of dead letters.
FLEET_PACKAGES = ("contracts", "db", "workers", "api", "cli")


def signature(error: BaseException) -> str:
    """``<error type> at <module.function>``: the error's type and the innermost frame of
    the fleet's own code it passed through, without a line number, so that one failure's
    dead letters form one group that survives unrelated edits. Where no fleet frame is on
    the traceback (an error made, not raised), the type alone."""
    where = None
    tb = error.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.split(".")[0] in FLEET_PACKAGES:
            where = f"{module}.{tb.tb_frame.f_code.co_qualname}"
        tb = tb.tb_next
    name = type(error).__qualname__
    return f"{name} at {where}" if where else name
