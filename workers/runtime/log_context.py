"""What a log line is about: the message being handled, and no password from a URL.

    with log_context.about(message_id, correlation_id):
        log.warning(...)          # a JSON log line carries both, and the trace id

A context variable, so each delivery's task (and the code it calls) sees its own message;
the formatters below (plain, and JSON for ``--json``) read it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar, Token

_ABOUT: ContextVar[dict[str, str] | None] = ContextVar("fleet_log_about", default=None)
# scheme://user:password@host -> scheme://user:***@host; up to the last @ of the authority,
# as URL parsers read it, so an unescaped @ in the password shows no part of it (a URL
# never holds a raw space, slash, quote or angle bracket there).
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s/\"<>]+@")
# ...?password=secret (libpq's and asyncpg's URLs take it as a query parameter too)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s#]+", re.IGNORECASE)


def enter(
    message_id: str | None, correlation_id: str | None, traceparent: object = None
) -> Token[dict[str, str] | None]:
    """``about`` without a context manager, for the hot path: ``leave`` with the token.
    Empty ids are kept as "" and left out by ``current``."""
    fields = {"message_id": message_id or "", "correlation_id": correlation_id or ""}
    if isinstance(traceparent, str):
        fields["traceparent"] = traceparent
    return _ABOUT.set(fields)


def leave(token: Token[dict[str, str] | None]) -> None:
    _ABOUT.reset(token)


@contextlib.contextmanager
def about(
    message_id: str | None, correlation_id: str | None, traceparent: object = None
) -> Iterator[None]:
    """``traceparent``: the one the message carries, for its trace id where no span of
    this process is recording (the trace id is read from it only when a line is logged)."""
    token = enter(message_id, correlation_id, traceparent)
    try:
        yield
    finally:
        leave(token)


def current() -> dict[str, str]:
    """The fields of the message being handled here (empty outside a handler): its
    message_id, correlation_id and the trace_id of the traceparent it carried."""
    fields = {key: value for key, value in (_ABOUT.get() or {}).items() if value}
    traceparent = fields.pop("traceparent", None)
    if traceparent is not None:
        parts = traceparent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            fields["trace_id"] = parts[1]
    return fields


def without_passwords(text: str) -> str:
    """``text`` with the password of every URL in it masked (``***``)."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


class PlainLogFormatter(logging.Formatter):
    """The default log line, with any password in a URL masked."""

    def format(self, record: logging.LogRecord) -> str:
        return without_passwords(super().format(record))


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line, for log shippers (``--json`` on long-running commands).
    A line about a message carries its message_id, correlation_id and trace_id."""

    def format(self, record: logging.LogRecord) -> str:
        from workers.runtime import tracing  # OpenTelemetry's API, once a line is logged

        line = {
            "time": self.formatTime(record),
            "logger": record.name,
            "level": record.levelname,
            "message": without_passwords(record.getMessage()),
            **current(),
        }
        # The span recording here, if any (a delivery's own), else the one it was sent in.
        if line.get("message_id") and (trace_id := tracing.trace_id()):
            line["trace_id"] = trace_id
        if record.exc_info:
            line["exception"] = without_passwords(self.formatException(record.exc_info))
        return json.dumps(line)
