"""What the console's pages share: the templates, the page context (who is logged in, a
CSRF token per form), and the route class that turns refusals and failures into pages."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import Request, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from api.console.auth import SESSION_COOKIE, ConsoleToken, Refused
from workers.operations import InvalidRequest, OperatorError, status
from workers.runtime.settings import Settings

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# The pages in the header, in order.
NAV = (
    ("/console", "Overview"),
    ("/console/groups", "Failed messages"),
    ("/console/dlq", "Dead-letter queues"),
    ("/console/archived", "Archived"),
    ("/console/pending", "Pending replays"),
    ("/console/sagas", "Sagas"),
    ("/console/history", "History"),
)

# A server that cannot be reached is a 503 page saying which, never a traceback.
UNREACHABLE = status.BROKER_ERRORS + status.DATABASE_ERRORS


def settings_of(request: Request) -> Settings:
    held: Settings = request.app.state.resources.settings
    return held


def token_of(request: Request) -> ConsoleToken | None:
    return ConsoleToken.parse(settings_of(request).console_token)


def session_of(request: Request) -> str | None:
    """The session cookie, if it is a valid login with the configured token."""
    token = token_of(request)
    value = request.cookies.get(SESSION_COOKIE)
    if token is None or not token.session_valid(value, time.time()):
        return None
    return value


async def form_of(request: Request) -> dict[str, list[str]]:
    """The fields of an urlencoded form (every value of each), plus the query string's."""
    fields = parse_qs(request.url.query, keep_blank_values=True)
    if request.method == "POST":
        body = (await request.body()).decode("utf-8", errors="replace")
        for name, values in parse_qs(body, keep_blank_values=True).items():
            fields.setdefault(name, []).extend(values)
    return fields


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    token = token_of(request)
    session = session_of(request)

    def csrf() -> str:
        """A fresh CSRF token for one form ('' when not logged in: the POST is refused)."""
        return token.csrf(session) if token is not None and session is not None else ""

    return templates.TemplateResponse(
        request,
        template,
        {
            "namespace": settings_of(request).namespace,
            "token_configured": token is not None,
            "operator": token.name if token is not None and session is not None else None,
            "csrf": csrf,
            "path": request.url.path,
            # Where a login from this page comes back to: a page read, not an action sent.
            "here": str(request.url.replace(scheme="", netloc=""))
            if request.method == "GET"
            else "/console",
            **context,
        },
        status_code=status_code,
    )


def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    return render(request, "error.html", status_code, title=title, message=message)


class ConsoleRoute(APIRoute):
    """Every console route answers with a page: a refused action is a 403 page saying why,
    a bad request 400, an action the library cannot carry out 409, a server that cannot be
    reached 503."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except Refused as refusal:
                return render(request, "refused.html", 403, reason=str(refusal))
            except InvalidRequest as error:
                return error_page(request, 400, "Not possible as asked", str(error))
            except OperatorError as error:
                return error_page(request, 409, "Could not be done", str(error))
            except UNREACHABLE as error:
                return error_page(request, 503, "A server cannot be reached", status._reason(error))

        return handler


# --- Filters the templates use. ---------------------------------------------------------


def when(value: datetime | str | None) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: datetime | None) -> str:
    """How long ago, in the largest whole unit ('3 min ago')."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = (datetime.now(UTC) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            amount = f"{int(seconds // size)} {unit}"
            break
    else:
        amount = f"{int(seconds)} s"
    return f"in {amount}" if future else f"{amount} ago"


def pretty_body(body: bytes | str) -> str:
    """A body as indented JSON when it is JSON, as text when not."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def query(**params: Any) -> str:
    """A query string of the params that are set."""
    return urlencode({key: value for key, value in params.items() if value not in (None, "")})


templates.env.filters.update(when=when, ago=ago, pretty_body=pretty_body)
templates.env.globals.update(query=query, nav=NAV)
