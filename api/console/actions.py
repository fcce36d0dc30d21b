"""The console's actions: for each, what its confirmation page says will happen (``plan``)
and the library call that does it (``run``). Each calls the same function as the CLI, with
the console token's name as the operator recorded in the audit log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from contracts.envelope import VERSION_HEADER
from workers.operations import (
    InvalidRequest,
    OperatorError,
    archive,
    dead_letters,
    pausing,
    replays,
    sagas,
)
from workers.runtime import catalog
from workers.runtime.settings import Settings


class Form:
    """An urlencoded form's fields (every value of each)."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields

    def one(self, name: str) -> str | None:
        """The field's last value, stripped; None when absent or empty."""
        values = self.fields.get(name) or [""]
        return values[-1].strip() or None

    def required(self, name: str) -> str:
        value = self.one(name)
        if value is None:
            raise InvalidRequest(f"the form has no {name}")
        return value

    def text(self, name: str) -> str:
        """The field as typed (not stripped), '' when absent: a message body."""
        values = self.fields.get(name) or [""]
        return values[-1]

    def every(self, name: str) -> list[str]:
        return [value.strip() for value in self.fields.get(name, []) if value.strip()]

    def number(self, name: str) -> int | None:
        value = self.one(name)
        if value is None:
            return None
        if not value.isdigit() or int(value) < 1:
            raise InvalidRequest(f"{name} must be a whole number above 0, not {value!r}")
        return int(value)

    def flag(self, name: str) -> bool:
        return self.one(name) in ("1", "true", "on", "yes")


@dataclass(frozen=True)
class Plan:
    """What the confirmation page says: exactly what will happen, to how many messages."""

    title: str
    what: str
    count: int | None  # messages (or sagas, handlers) it concerns; None: not counted
    fields: dict[str, str]  # carried, hidden, to the confirmed POST
    message_ids: list[str] = field(default_factory=list)
    danger: bool = False  # cannot be undone
    body: str | None = None  # an edited body, shown and carried
    unit: str = "message"  # what count counts


@dataclass(frozen=True)
class Outcome:
    title: str
    lines: list[str]
    back: str  # where to look at the result


# (settings, the form, the operator an action would be recorded as) -> the plan
Planner = Callable[[Settings, Form, str], Awaitable[Plan]]
Runner = Callable[[Settings, Form, str], Awaitable[Outcome]]


@dataclass(frozen=True)
class Action:
    plan: Planner
    run: Runner


def dlq_page(queue: str) -> str:
    return f"/console/dlq/{quote(queue, safe='')}"


# --- Replay and archive: a selection of dead letters. ----------------------------------


def _selection(form: Form) -> dead_letters.Selection:
    return dead_letters.Selection(
        queue=form.one("queue"),
        group=form.one("group"),
        all_queues=form.flag("all_queues"),
        message_id=form.one("message_id"),
    )


def _selection_fields(selection: dead_letters.Selection, limit: int | None) -> dict[str, str]:
    fields = {
        "queue": selection.queue,
        "group": selection.group,
        "all_queues": "1" if selection.all_queues else None,
        "message_id": selection.message_id,
        "limit": None if limit is None else str(limit),
    }
    return {key: value for key, value in fields.items() if value is not None}


async def _selected_count(settings: Settings, selection: dead_letters.Selection) -> int:
    """How many dead letters the selection takes now, as the groups and depths say."""
    if selection.message_id is not None:
        return 1
    if selection.group is not None:
        found = await dead_letters.groups(settings)
        return next((group.count for group in found if group.key == selection.group), 0)
    depths = await dead_letters.depths(settings, selection.queues(settings))
    if selection.queue is not None and depths[selection.queue] is None:
        raise InvalidRequest(f"no queue named {selection.queue}")
    return sum(depth or 0 for depth in depths.values())


def _back(selection: dead_letters.Selection) -> str:
    if selection.queue is not None:
        return dlq_page(selection.queue)
    return "/console/groups"


async def _planned(
    settings: Settings, form: Form, verb: str
) -> tuple[dead_letters.Selection, int | None, int]:
    """The form's selection and limit, and how many letters the action would take now."""
    selection, limit = _selection(form), form.number("limit")
    count = await _selected_count(settings, selection)
    if limit is not None:
        count = min(count, limit)
    if count == 0:
        raise OperatorError(f"nothing to {verb}: no dead letter in {selection.describe()}")
    return selection, limit, count


async def _plan_replay(settings: Settings, form: Form, operator: str) -> Plan:
    selection, limit, count = await _planned(settings, form, "replay")
    return Plan(
        f"Replay {selection.describe()}",
        f"Send {count} dead letter(s) of {selection.describe()} back to the queue each"
        " failed in, for its handler to take again; each leaves its DLQ once RabbitMQ has"
        " confirmed the copy. What fails from now on is not part of this replay.",
        count,
        _selection_fields(selection, limit),
        [selection.message_id] if selection.message_id else [],
    )


async def _run_replay(settings: Settings, form: Form, operator: str) -> Outcome:
    selection, limit = _selection(form), form.number("limit")
    report = await replays.replay(settings, selection, limit=limit, operator=operator)
    lines = []
    for queue, done in report.queues.items():
        line = f"{queue}: {len(done.replayed)} replayed"
        if done.skipped:
            line += f", {len(done.skipped)} replayed before (removed, not sent again)"
        lines.append(line)
    if report.moved_aside:
        lines.append(f"{report.moved_aside} other letter(s) in the way moved to their DLQ's tail")
    lines.append("follow them on the Pending replays page")
    return Outcome(
        f"Replayed {len(report.replayed)} dead letter(s) of {selection.describe()}",
        lines,
        _back(selection),
    )


async def _plan_archive(settings: Settings, form: Form, operator: str) -> Plan:
    selection, limit, count = await _planned(settings, form, "archive")
    return Plan(
        f"Archive {selection.describe()}",
        f"Move {count} dead letter(s) of {selection.describe()} out of their DLQ into the"
        " archive (the operations database). They can be restored to their DLQ from the"
        f" Archived page until they are {_days(settings)} old; then they are deleted.",
        count,
        _selection_fields(selection, limit),
        [selection.message_id] if selection.message_id else [],
    )


def _days(settings: Settings) -> str:
    retention = settings.archive_retention
    if retention.total_seconds() % 86400 == 0:
        return f"{retention.days} day(s)"
    return f"{retention.total_seconds() / 3600:g} hour(s)"


async def _run_archive(settings: Settings, form: Form, operator: str) -> Outcome:
    selection, limit = _selection(form), form.number("limit")
    report = await archive.archive(settings, selection, limit=limit, operator=operator)
    lines = [f"{queue}: {count} archived" for queue, count in report.by_queue.items()]
    if report.expired:
        lines.append(f"{report.expired} letter(s) past the retention deleted from the archive")
    return Outcome(
        f"Archived {report.archived} dead letter(s) of {selection.describe()}",
        lines,
        "/console/archived",
    )


# --- Restore from the archive. ----------------------------------------------------------

# A restore's confirmation counts the archived letters it takes, up to this many.
COUNT_LIMIT = 100_000


def _restore_args(form: Form) -> dict[str, object]:
    ids = []
    for value in form.every("ids"):
        if not value.isdigit():
            raise InvalidRequest(f"ids must be archive ids (numbers), not {value!r}")
        ids.append(int(value))
    args: dict[str, object] = {
        "ids": ids or None,
        "message_id": form.one("message_id"),
        "queue": form.one("queue"),
        "every": form.flag("every"),
    }
    return args


async def _plan_restore(settings: Settings, form: Form, operator: str) -> Plan:
    args = _restore_args(form)
    ids = args["ids"]
    fields: dict[str, str] = {}
    if isinstance(ids, list):
        count, what = len(ids), f"archived letter(s) {', '.join(map(str, ids))}"
    elif args["message_id"]:
        message_id = str(args["message_id"])
        found = [
            letter
            for letter in await archive.archived(settings, limit=COUNT_LIMIT)
            if letter.message_id == message_id
        ]
        count, what = len(found), f"the archived letter(s) of message {message_id}"
        fields["message_id"] = message_id
    elif args["queue"]:
        queue = str(args["queue"])
        count = len(await archive.archived(settings, queue=queue, limit=COUNT_LIMIT))
        what = f"every letter archived from {queue}"
        fields["queue"] = queue
    elif args["every"]:
        count = len(await archive.archived(settings, limit=COUNT_LIMIT))
        what = "every archived letter"
        fields["every"] = "1"
    else:
        raise InvalidRequest("choose what to restore: archive ids, a message id, a queue or every")
    if count == 0:
        raise OperatorError(f"nothing to restore: no {what.removeprefix('the ')} in the archive")
    return Plan(
        f"Restore {what}",
        f"Put {count} {what} back in the DLQ each came from, with its headers and body as"
        " they were (then it can be replayed); each leaves the archive once RabbitMQ has"
        " confirmed it.",
        count,
        fields,
    )


async def _run_restore(settings: Settings, form: Form, operator: str) -> Outcome:
    args = _restore_args(form)
    ids = args["ids"]
    report = await archive.restore(
        settings,
        ids=ids if isinstance(ids, list) else None,
        message_id=str(args["message_id"]) if args["message_id"] else None,
        queue=str(args["queue"]) if args["queue"] else None,
        every=bool(args["every"]),
        operator=operator,
    )
    lines = [f"{queue}: {count} restored" for queue, count in report.by_queue.items()]
    return Outcome(f"Restored {report.restored} archived letter(s)", lines, "/console/archived")


# --- Edit and replay. -------------------------------------------------------------------


async def _plan_edit(settings: Settings, form: Form, operator: str) -> Plan:
    queue, message_id, data = form.required("queue"), form.required("message_id"), form.text("data")
    original = await replays.letter(settings, queue, message_id)
    # The library's own check, before the confirmation: an invalid edit changes nothing.
    replays.validated_body(original.type, original.headers.get(VERSION_HEADER), data)
    return Plan(
        f"Edit and replay {message_id}",
        f"Send a copy of {original.type} {message_id} with the body below and a new message"
        f" id (x-replay-of: {message_id}) to the queue it failed in; the original leaves"
        f" {queue} once RabbitMQ has confirmed the copy.",
        1,
        {"queue": queue, "message_id": message_id},
        [message_id],
        body=data,
    )


async def _run_edit(settings: Settings, form: Form, operator: str) -> Outcome:
    queue, message_id, data = form.required("queue"), form.required("message_id"), form.text("data")
    report = await replays.edit(settings, queue, message_id, data, operator=operator)
    return Outcome(
        f"Replayed an edited copy of {message_id}",
        [
            f"new message id {report.message_id} ({report.type} v{report.version})",
            f"sent to {report.to_queue}; the original left {queue}",
        ],
        dlq_page(queue),
    )


# --- Sagas: retry and compensate, through the orchestrator. -----------------------------

# A saga action waits this long for the orchestrator's answer, to show it.
SAGA_WAIT_SECONDS = 5.0


async def _question(ask: Callable[[sagas.Confirm], Awaitable[object]]) -> str:
    """The library's own confirmation question for a saga action, once it has checked the
    request makes sense; nothing is sent (the question is answered no)."""
    asked: list[str] = []

    def capture(question: str) -> bool:
        asked.append(question)
        return False

    try:
        await ask(capture)
    except OperatorError:
        if not asked:
            raise  # refused before the question: the saga cannot be asked
    return asked[0]


async def _plan_retry(settings: Settings, form: Form, operator: str) -> Plan:
    order_id = form.required("order_id")
    question = await _question(
        lambda confirm: sagas.retry(settings, order_id, operator=operator, confirm=confirm)
    )
    return Plan(
        f"Retry saga {order_id}",
        f"{question.removesuffix('?')}: the orchestrator is asked (a message); it decides, and"
        " answers in the saga's step log.",
        1,
        {"order_id": order_id},
        unit="saga",
    )


async def _plan_compensate(settings: Settings, form: Form, operator: str) -> Plan:
    order_id, reason = form.required("order_id"), form.one("reason")

    def ask(confirm: sagas.Confirm) -> Awaitable[object]:
        return sagas.compensate(
            settings, order_id, reason=reason, operator=operator, confirm=confirm
        )

    question = await _question(ask)
    return Plan(
        f"Compensate saga {order_id}",
        f"{question.removesuffix('?')}: the orchestrator is asked (a message); it undoes what"
        " the saga did (stock released, payment refunded) and rejects the order.",
        1,
        {"order_id": order_id, **({"reason": reason} if reason else {})},
        danger=True,
        unit="saga",
    )


def _saga_outcome(sent: sagas.SagaAction) -> Outcome:
    lines = [f"request {sent.message_id} sent to the orchestrator"]
    if sent.answer:
        lines.append(f"the orchestrator answered: {sent.answer}")
    else:
        lines.append(f"no answer within {SAGA_WAIT_SECONDS:g} s yet: see the saga's timeline")
    if sent.after is not None:
        lines.append(f"the saga is now {sent.after.state} at {sent.after.step}")
    done = "Retry" if sent.action == "retry" else "Compensation"
    return Outcome(
        f"{done} of saga {sent.order_id} requested",
        lines,
        f"/console/sagas/{quote(sent.order_id, safe='')}",
    )


async def _run_retry(settings: Settings, form: Form, operator: str) -> Outcome:
    sent = await sagas.retry(
        settings, form.required("order_id"), operator=operator, wait=SAGA_WAIT_SECONDS
    )
    return _saga_outcome(sent)


async def _run_compensate(settings: Settings, form: Form, operator: str) -> Outcome:
    sent = await sagas.compensate(
        settings,
        form.required("order_id"),
        reason=form.one("reason"),
        operator=operator,
        wait=SAGA_WAIT_SECONDS,
    )
    return _saga_outcome(sent)


# --- Purge. -----------------------------------------------------------------------------


async def _plan_purge(settings: Settings, form: Form, operator: str) -> Plan:
    queue, message_id = form.required("queue"), form.one("message_id")
    fields = {"queue": queue, **({"message_id": message_id} if message_id else {})}
    if message_id is not None:
        return Plan(
            f"Purge message {message_id}",
            f"Delete dead letter {message_id} from {queue} for good. It cannot be replayed"
            " or restored afterwards.",
            1,
            fields,
            [message_id],
            danger=True,
        )
    depth = (await dead_letters.depths(settings, [queue]))[queue]
    if depth is None:
        raise InvalidRequest(f"no queue named {queue}")
    return Plan(
        f"Purge {queue}",
        f"Delete every dead letter in {queue} ({depth} now) for good. They cannot be"
        " replayed or restored afterwards.",
        depth,
        fields,
        danger=True,
    )


async def _run_purge(settings: Settings, form: Form, operator: str) -> Outcome:
    queue, message_id = form.required("queue"), form.one("message_id")
    purged = await dead_letters.purge(settings, queue, message_id, operator=operator)
    return Outcome(f"Purged {purged} dead letter(s)", [f"from {queue}"], dlq_page(queue))


# --- Pause and resume. ------------------------------------------------------------------


async def _plan_pause(settings: Settings, form: Form, operator: str) -> Plan:
    target = form.required("target")
    handlers = pausing.resolve_target(target, pausing.handler_names(catalog.load_all()))
    return Plan(
        f"Pause {target}",
        f"Stop the consumers of {', '.join(handlers)} taking messages: they stay"
        " connected, and new messages wait in the queue until resumed.",
        len(handlers),
        {"target": target},
        unit="handler",
    )


async def _plan_resume(settings: Settings, form: Form, operator: str) -> Plan:
    target = form.required("target")
    handlers = pausing.resolve_target(target, pausing.handler_names(catalog.load_all()))
    return Plan(
        f"Resume {target}",
        f"Let the consumers of {', '.join(handlers)} take messages again, starting with"
        " those waiting in the queue.",
        len(handlers),
        {"target": target},
        unit="handler",
    )


def _pause_outcome(state: pausing.PauseState) -> Outcome:
    done = "paused" if state.action == pausing.PAUSE else "resumed"
    lines = [f"{name}: {done}" for name in state.changed]
    lines += [f"{name}: already {done}, left as it was" for name in state.unchanged]
    lines.append(f"paused now: {', '.join(state.paused) or 'nothing'}")
    return Outcome(f"{state.target} {done}", lines, "/console")


async def _run_pause(settings: Settings, form: Form, operator: str) -> Outcome:
    return _pause_outcome(await pausing.pause(settings, form.required("target"), operator=operator))


async def _run_resume(settings: Settings, form: Form, operator: str) -> Outcome:
    state = await pausing.resume(settings, form.required("target"), operator=operator)
    return _pause_outcome(state)


ACTIONS: dict[str, Action] = {
    "replay": Action(_plan_replay, _run_replay),
    "edit": Action(_plan_edit, _run_edit),
    "archive": Action(_plan_archive, _run_archive),
    "restore": Action(_plan_restore, _run_restore),
    "retry": Action(_plan_retry, _run_retry),
    "compensate": Action(_plan_compensate, _run_compensate),
    "purge": Action(_plan_purge, _run_purge),
    "pause": Action(_plan_pause, _run_pause),
    "resume": Action(_plan_resume, _run_resume),
}
