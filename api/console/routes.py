"""The console's pages, at /console: read-only pages for anyone, and actions (each through a
confirmation page) for whoever logged in with the console token. Each page calls the same
library functions as the CLI (workers.operations)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from api.console import auth
from api.console.actions import ACTIONS, Action, Form, Plan
from api.console.pages import (
    HERE,
    ConsoleRoute,
    error_page,
    form_of,
    render,
    session_of,
    settings_of,
    token_of,
)
from workers.operations import (
    InvalidRequest,
    archive,
    dead_letters,
    ops_db,
    orders,
    pausing,
    replays,
    sagas,
    status,
)
from workers.runtime import catalog, topology
from workers.runtime.consumer import ATTEMPTS_HEADER
from workers.runtime.durations import parse_duration

router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)

# The overview counts the sagas not ended that nothing changed for this long.
STUCK_FOR = "10m"
# A message page reads its DLQ from the head; past this many letters it gives up.
MESSAGE_SEARCH_LIMIT = 10_000


@router.get("/static/console.css")
async def stylesheet() -> FileResponse:
    return FileResponse(HERE / "static" / "console.css", media_type="text/css")


# --- Overview. --------------------------------------------------------------------------


@router.get("")
async def overview(request: Request) -> Response:
    settings = settings_of(request)
    fleet = await status.fleet_status(settings)
    paused: tuple[str, ...] = ()
    group_count: int | None = None
    if fleet.broker_error is None:
        paused = await pausing.paused(settings)
        group_count = len(await dead_letters.groups(settings))
    stuck: int | None = None
    if fleet.sagas is not None:
        stuck_for = parse_duration(STUCK_FOR)
        stuck = len(await sagas.list_sagas(settings, stuck_for=stuck_for, limit=1000))
    # Each handler's queue by its name (service.handler), for the pause/resume buttons.
    handlers = {
        handler.queue(settings.namespace): handler.consumer
        for service in catalog.load_all()
        for handler in service.handlers
    }
    dead = sum(
        queue.dead_letters.messages or 0
        for service in fleet.services
        for queue in service.queues or ()
    ) + ((fleet.unrouted.messages or 0) if fleet.unrouted is not None else 0)
    return render(
        request,
        "overview.html",
        fleet=fleet,
        handlers=handlers,
        paused=set(paused),
        group_count=group_count,
        dead_letters=dead,
        stuck=stuck,
        stuck_for=STUCK_FOR,
    )


# --- Dead letters. ----------------------------------------------------------------------


@router.get("/groups")
async def groups(request: Request, by: Annotated[str, Query()] = "signature") -> Response:
    if by not in dead_letters.GROUP_KEYS:
        keys = ", ".join(dead_letters.GROUP_KEYS)
        raise InvalidRequest(f"group by one of {keys}, not {by!r}")
    found = await dead_letters.groups(settings_of(request), by)
    return render(request, "groups.html", groups=found, by=by, keys=dead_letters.GROUP_KEYS)


@router.get("/group")
async def group(request: Request, signature: Annotated[str, Query()]) -> Response:
    """One group (by signature) and its letters, read from the queues it spans."""
    settings = settings_of(request)
    found = next((g for g in await dead_letters.groups(settings) if g.key == signature), None)
    letters: list[tuple[str, dead_letters.DeadLetter]] = []
    if found is not None:
        selection = dead_letters.Selection(group=signature)
        for queue in found.queues:
            depth = (await dead_letters.depths(settings, [queue]))[queue] or 0
            for letter in await dead_letters.browse(settings, queue, depth):
                if selection.matches(letter):
                    letters.append((queue, letter))
    return render(
        request,
        "group.html",
        signature=signature,
        group=found,
        letters=letters[:100],
        shown=min(len(letters), 100),
    )


@router.get("/dlq")
async def dead_letter_queues(request: Request) -> Response:
    depths = await dead_letters.depth_of_every_dlq(settings_of(request))
    return render(request, "dlqs.html", depths=depths)


@router.get("/dlq/{queue}")
async def dead_letter_queue(
    request: Request, queue: str, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> Response:
    settings = settings_of(request)
    _is_dead_letter_queue(queue)
    depth = (await dead_letters.depths(settings, [queue]))[queue]
    if depth is None:
        return error_page(request, 404, "No such queue", f"no queue named {queue}")
    letters = await dead_letters.browse(settings, queue, limit)
    return render(request, "dlq.html", queue=queue, depth=depth, letters=letters, limit=limit)


@router.get("/dlq/{queue}/{message_id}")
async def message(request: Request, queue: str, message_id: str) -> Response:
    return await _message_page(request, queue, message_id)


async def _message_page(
    request: Request,
    queue: str,
    message_id: str,
    *,
    edited: str | None = None,
    edit_error: str | None = None,
) -> Response:
    """A dead letter's page; after a refused edit, with the edited body and why."""
    settings = settings_of(request)
    _is_dead_letter_queue(queue)
    depth = (await dead_letters.depths(settings, [queue]))[queue]
    if depth is None:
        return error_page(request, 404, "No such queue", f"no queue named {queue}")
    letters = await dead_letters.browse(settings, queue, min(depth, MESSAGE_SEARCH_LIMIT))
    letter = next((each for each in letters if each.message_id == message_id), None)
    if letter is None:
        return error_page(
            request, 404, "No such message", f"no message with id {message_id} in {queue}"
        )
    headers = letter.as_dict()["headers"]
    return render(
        request,
        "message.html",
        400 if edit_error else 200,
        queue=queue,
        letter=letter,
        headers=headers,
        attempts=headers.get(ATTEMPTS_HEADER),
        original_queue=headers.get("x-original-queue") or _original_queue(queue),
        trace_id=trace_id(headers.get("traceparent")),
        edited=replays.editable_body(letter) if edited is None else edited,
        edit_error=edit_error,
    )


def _is_dead_letter_queue(queue: str) -> None:
    try:
        topology.original_queue(queue)
    except ValueError as error:
        raise InvalidRequest(str(error)) from None


def _original_queue(queue: str) -> str | None:
    try:
        return topology.original_queue(queue)
    except ValueError:
        return None


def trace_id(traceparent: Any) -> str | None:
    """The trace id of a W3C traceparent (``00-<trace id>-<span id>-<flags>``)."""
    if not isinstance(traceparent, str):
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


# --- The archive and the pending replays. ----------------------------------------------


@router.get("/archived")
async def archived(
    request: Request,
    queue: Annotated[str | None, Query()] = None,
    group: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    letters = await archive.archived(
        settings_of(request), queue=queue or None, group=group or None, limit=limit
    )
    return render(
        request,
        "archived.html",
        letters=letters,
        queue=queue,
        group=group,
        limit=limit,
        retention=settings_of(request).archive_retention,
    )


@router.get("/pending")
async def pending(request: Request) -> Response:
    found = await replays.pending(settings_of(request))
    states = ("pending", "applied", "failed")
    counts = {state: sum(each.state == state for each in found) for state in states}
    return render(request, "pending.html", replays=found, counts=counts)


# --- Sagas. -----------------------------------------------------------------------------


@router.get("/sagas")
async def saga_list(
    request: Request,
    state: Annotated[str | None, Query()] = None,
    style: Annotated[str | None, Query()] = None,
    stuck_for: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    stuck = None
    if stuck_for:
        try:
            stuck = parse_duration(stuck_for)
        except ValueError as error:
            raise InvalidRequest(f"stuck for: {error}") from None
    rows = await sagas.list_sagas(
        settings_of(request),
        state=state or None,
        style=style or None,
        stuck_for=stuck,
        limit=limit,
    )
    return render(
        request,
        "sagas.html",
        rows=rows,
        state=state,
        style=style,
        stuck_for=stuck_for,
        limit=limit,
        states=sagas.STATES,
        styles=sagas.STYLES,
        duration=sagas.duration_text,
    )


@router.get("/sagas/{order_id}")
async def saga(request: Request, order_id: str) -> Response:
    details = await orders.saga_details(settings_of(request), order_id)
    if details is None:
        return error_page(
            request, 404, "No such saga", f"no saga and no events for order {order_id}"
        )
    return render(request, "saga.html", order_id=order_id, saga=details)


# --- History. ---------------------------------------------------------------------------


@router.get("/history")
async def history(
    request: Request,
    action: Annotated[str | None, Query()] = None,
    target: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    entries = await ops_db.history(
        settings_of(request), limit=limit, action=action or None, target=target or None
    )
    return render(
        request, "history.html", entries=entries, action=action, target=target, limit=limit
    )


# --- Logging in and out. ----------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, next: str = "/console") -> Response:
    return render(request, "login.html", next=_local(next), failed=False)


@router.post("/login")
async def login(request: Request) -> Response:
    form = Form(await form_of(request))
    token = token_of(request)
    next_page = _local(form.one("next") or "/console")
    if token is None:
        raise auth.Refused(auth.NOT_CONFIGURED)
    if not token.accepts(form.text("token")):
        return render(request, "login.html", 403, next=next_page, failed=True)
    response = RedirectResponse(next_page, status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        token.session(time.time()),
        max_age=auth.SESSION_SECONDS,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = Form(await form_of(request))
    _authorise(request, form)
    response = RedirectResponse("/console", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/console")
    return response


def _local(target: str) -> str:
    """Only a page of the console: a login must not send the browser elsewhere."""
    return target if target.startswith("/console") and "//" not in target else "/console"


def _authorise(request: Request, form: Form) -> str:
    """The operator's name, or Refused (a 403 page) without a token, login or valid form."""
    return auth.authorise(
        token_of(request),
        request.cookies.get(auth.SESSION_COOKIE),
        form.one("csrf"),
        time.time(),
    )


# --- Actions: a confirmation page, then the confirmed POST. -----------------------------


def _operator(request: Request) -> str:
    """Who an action would be recorded as: the token's name."""
    token = token_of(request)
    return token.name if token is not None else auth.DEFAULT_NAME


def _action(name: str) -> Action:
    if name not in ACTIONS:
        raise InvalidRequest(f"no action {name!r}; actions are {', '.join(ACTIONS)}")
    return ACTIONS[name]


@router.post("/confirm/edit")
async def confirm_edit(request: Request) -> Response:
    """An edited body: checked against its contract first; refused, the message's page
    again with the edit kept and the error naming the field (nothing changed)."""
    form = Form(await form_of(request))
    try:
        plan = await ACTIONS["edit"].plan(settings_of(request), form, _operator(request))
    except InvalidRequest as error:
        return await _message_page(
            request,
            form.required("queue"),
            form.required("message_id"),
            edited=form.text("data"),
            edit_error=str(error),
        )
    return _confirmation(request, "edit", plan)


@router.api_route("/confirm/{name}", methods=["GET", "POST"])
async def confirm(request: Request, name: str) -> Response:
    """What the action will do, with a Confirm button; changes nothing. (POST too: an
    edited body is too large for a link.)"""
    form = Form(await form_of(request))
    plan = await _action(name).plan(settings_of(request), form, _operator(request))
    return _confirmation(request, name, plan)


def _confirmation(request: Request, name: str, plan: Plan) -> Response:
    return render(
        request,
        "confirm.html",
        name=name,
        plan=plan,
        logged_in=session_of(request) is not None,
        back=request.headers.get("referer") or "/console",
    )


@router.post("/actions/{name}")
async def act(request: Request, name: str) -> Response:
    form = Form(await form_of(request))
    action = _action(name)
    operator = _authorise(request, form)  # before anything is read or changed
    outcome = await action.run(settings_of(request), form, operator)
    return render(request, "done.html", outcome=outcome, operator=operator)
