"""Replaying dead letters at scale, editing one and replaying the copy, and following what
was replayed until it settles (``fleet dlq replay``, ``fleet dlq edit``, ``fleet dlq
pending``).

A replay goes through ``dead_letters.sweep``: each DLQ's depth is its snapshot, so what
fails after the start (a replayed copy failing again included) is not part of the run. Per
chunk it publishes the copies pipelined and confirmed, records their *letter keys* in the
operations database's ``replays`` table (one transaction), and only then acks the letters.
A letter whose key is already recorded was replayed by a run that was interrupted before
its ack: it is acked and not sent again, so a run can be killed and started again without
replaying anything twice. (Killed between the confirm and the commit, a chunk is sent again
next time: the same message ids, which the handlers' inboxes take once.)

A letter key says which dead letter this is: the same message dead-lettered twice is two
letters, told apart by when it failed (our ``x-failed-at``, else the broker's x-death).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pydantic
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import PublishError

from contracts import OutgoingMessage, registry
from contracts.envelope import VERSION_HEADER
from contracts.errors import ContractError
from contracts.registry import summarize
from db.adapters import store_once
from workers.operations import InvalidRequest, Progress, no_progress, ops_db
from workers.operations.dead_letters import (
    CHUNK,
    FIRST_SENT_HEADERS,
    DeadLetter,
    DeadLetterError,
    Selection,
    Taken,
    browse,
    depths,
    first_sent,
    sweep,
)
from workers.runtime import catalog, topology, tracing
from workers.runtime.consumer import ATTEMPTS_HEADER, ERROR_HEADERS
from workers.runtime.publisher import ConfirmedPublisher, sent_on
from workers.runtime.settings import Settings

REPLAYED_AT_HEADER = "x-replayed-at"
REPLAY_RUN_HEADER = "x-replay-run"  # which run sent the copy: a dead letter of it failed again
REPLAY_OF_HEADER = "x-replay-of"  # an edited copy (a new message id): the original's id

# Settled replays ``pending`` still shows.
RECENTLY_SETTLED = timedelta(hours=24)


def letter_key(letter: DeadLetter) -> str:
    """Which dead letter this is, stable however often it is read or moved in its DLQ: its
    message id and when it failed (a replayed copy carries neither x-failed-at nor x-death,
    so failing again makes a new key)."""
    message_id = letter.message_id or "(no id)"
    failed_at = letter.headers.get("x-failed-at")
    if isinstance(failed_at, bytes):
        failed_at = failed_at.decode(errors="replace")
    if failed_at:
        return f"{message_id}@{failed_at}"
    deaths = letter.headers.get("x-death") or []
    if deaths:  # dead-lettered by the broker itself
        death = dict(deaths[0])
        when = death.get("time")
        when_text = when.isoformat() if isinstance(when, datetime) else str(when)
        return (
            f"{message_id}@broker:{death.get('reason')}:{death.get('queue')}"
            f":{when_text}:{death.get('count')}"
        )
    # No record of failing at all (published to the DLQ by hand): the contents tell it.
    digest = hashlib.sha256(letter.body)
    digest.update(json.dumps(letter.headers, sort_keys=True, default=str).encode())
    return f"{message_id}@sha256:{digest.hexdigest()[:32]}"


def validated_body(type_: str | None, version: object, data: str) -> bytes:
    """``data`` (JSON text) as the body of a ``type_`` v``version`` message, checked against
    its contract; InvalidRequest naming the field otherwise."""
    if type_ is None or type_ not in registry.types():
        raise InvalidRequest(f"cannot edit a message of unknown type {type_!r}")
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    if isinstance(version, str) and version.strip().isdigit():
        version = int(version)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidRequest(f"the letter's {VERSION_HEADER} header {version!r} is not a version")
    try:
        model = registry.model_for(type_, version)
    except ContractError as error:
        raise InvalidRequest(f"cannot edit {type_} v{version}: {error}") from None
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError as error:
        raise InvalidRequest(f"the edited body is not JSON: {error}") from None
    try:
        return registry.encode(model.model_validate(parsed))
    except pydantic.ValidationError as error:
        problem = summarize(error)
        wrong = f"the edited body is not a valid {type_} v{version}: {problem}"
        raise InvalidRequest(wrong) from None


def editable_body(letter: DeadLetter) -> str:
    """The body as an operator edits it: pretty-printed JSON, or the text as it is."""
    text = letter.body.decode("utf-8", errors="replace")
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
    except json.JSONDecodeError:
        return text


# --- Replay. ------------------------------------------------------------------------------


@dataclass
class QueueReplay:
    """What one run did with one DLQ's letters."""

    replayed: list[str] = field(default_factory=list)  # sent (dry run: would be)
    skipped: list[str] = field(default_factory=list)  # replayed before, acked, not sent


@dataclass
class ReplayReport:
    run_id: str
    dry_run: bool
    to_queue: str | None
    queues: dict[str, QueueReplay] = field(default_factory=dict)
    snapshot: dict[str, int] = field(default_factory=dict)  # each DLQ's depth at the start
    moved_aside: int = 0  # letters in the way, not selected, moved to their DLQ's tail
    reconnects: int = 0  # times the broker connection was lost and reopened

    @property
    def replayed(self) -> list[str]:
        return [message_id for done in self.queues.values() for message_id in done.replayed]

    @property
    def skipped(self) -> list[str]:
        return [message_id for done in self.queues.values() for message_id in done.skipped]

    def of(self, queue: str) -> QueueReplay:
        return self.queues.setdefault(queue, QueueReplay())

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "to": self.to_queue,
            "replayed": self.replayed,
            "skipped": self.skipped,
            "moved_aside": self.moved_aside,
            "reconnects": self.reconnects,
            "queues": {
                name: {"depth_at_start": self.snapshot.get(name), **asdict(done)}
                for name, done in self.queues.items()
            },
        }


class _Pacer:
    """At most ``rate`` messages a second: a chunk of n waits n / rate seconds after the
    one before it."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.next_at = 0.0

    async def wait(self, count: int) -> None:
        if self.rate is None:
            return
        loop = asyncio.get_running_loop()
        delay = self.next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        self.next_at = loop.time() + count / self.rate


def chunk_for(rate: float | None) -> int:
    """Letters taken at once: with a rate, about one second's worth (at least one)."""
    if rate is None:
        return CHUNK
    return max(1, min(CHUNK, int(rate)))


async def replay(
    settings: Settings,
    selection: Selection,
    *,
    limit: int | None = None,
    rate: float | None = None,
    dry_run: bool = False,
    to_queue: str | None = None,
    progress: Progress = no_progress,
    operator: str,
) -> ReplayReport:
    """Send the selected dead letters (at most ``limit``, at most ``rate`` a second) back
    to their queue, or to ``to_queue``; each is removed from its DLQ once its copy is
    confirmed and recorded. ``dry_run``: what would be replayed, nothing changed."""
    if limit is not None and limit < 1:
        raise InvalidRequest("--limit must be at least 1")
    if rate is not None and rate <= 0:
        raise InvalidRequest("--rate must be more than 0 messages a second")
    report = ReplayReport(run_id=str(uuid.uuid4()), dry_run=dry_run, to_queue=to_queue)
    if to_queue is not None:
        await _must_exist(settings, to_queue)
    async with _holding(settings, selection.queues(settings)) as conn:
        completed = False
        try:
            if dry_run:
                await _dry_run(settings, conn, selection, limit, report)
            else:
                await _replay(settings, conn, selection, limit, rate, progress, report)
            completed = True
        finally:
            # One audit line per run, also for one interrupted (what it sent is in it).
            await ops_db.record(
                conn,
                action="dlq.replay",
                target=selection.describe(),
                message_ids=report.replayed,
                operator=operator,
                detail={
                    "run_id": report.run_id,
                    "limit": limit,
                    "rate": rate,
                    "to": to_queue,
                    "dry_run": dry_run,
                    "skipped": len(report.skipped),
                    "completed": completed,
                },
            )
    if selection.message_id is not None and not (report.replayed or report.skipped):
        where = dataclasses.replace(selection, message_id=None).describe()
        raise DeadLetterError(f"no message with id {selection.message_id} in {where}")
    return report


async def _replay(
    settings: Settings,
    conn: asyncpg.Connection,
    selection: Selection,
    limit: int | None,
    rate: float | None,
    progress: Progress,
    report: ReplayReport,
) -> None:
    pacer = _Pacer(rate)

    async def act(publisher: ConfirmedPublisher, chunk: list[Taken]) -> None:
        fresh = await _not_yet_replayed(conn, chunk, report)
        if not fresh:
            return
        await pacer.wait(len(fresh))
        copies = [_copy(settings, item, report.run_id, report.to_queue) for item, _ in fresh]
        await _publish_traced(publisher, [item for item, _ in fresh], copies)
        sent = [(item, key, copy) for (item, key), copy in zip(fresh, copies, strict=True)]
        await _record(conn, sent, report)
        for item, _ in fresh:
            await item.message.ack()
            report.of(item.queue).replayed.append(_id(item.message))

    swept = await sweep(
        settings, selection, act, limit=limit, chunk=chunk_for(rate), progress=progress
    )
    report.snapshot = swept.snapshot
    report.moved_aside = swept.moved_aside
    report.reconnects = swept.reconnects


async def _not_yet_replayed(
    conn: asyncpg.Connection, chunk: list[Taken], report: ReplayReport
) -> list[tuple[Taken, str]]:
    """The letters of ``chunk`` no run has replayed yet, with their keys; the others (a run
    was interrupted after recording them, before its acks) are acked here."""
    keys = [letter_key(item.letter) for item in chunk]
    rows = await conn.fetch("SELECT letter_key FROM replays WHERE letter_key = ANY($1)", keys)
    seen = {row["letter_key"] for row in rows}
    fresh: list[tuple[Taken, str]] = []
    for item, key in zip(chunk, keys, strict=True):
        if key in seen:  # replayed before, or twice in this chunk (a move to the tail cut short)
            await item.message.ack()
            report.of(item.queue).skipped.append(_id(item.message))
        else:
            seen.add(key)
            fresh.append((item, key))
    return fresh


async def _record(
    conn: asyncpg.Connection,
    sent: Sequence[tuple[Taken, str, OutgoingMessage]],
    report: ReplayReport,
    replay_of: str | None = None,
) -> None:
    """The sent copies' letters in ``replays``: one transaction (then they may be acked)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO replays (letter_key, message_id, replay_of, from_queue, to_queue, run_id)"
            " SELECT key, message_id, $3, from_queue, to_queue, $4"
            " FROM unnest($1::text[], $2::text[], $5::text[], $6::text[])"
            "   AS r(key, message_id, from_queue, to_queue)"
            " ON CONFLICT (letter_key) DO NOTHING",
            [key for _, key, _ in sent],
            [copy.message_id for _, _, copy in sent],
            replay_of,
            report.run_id,
            [item.queue for item, _, _ in sent],
            [_destination(copy) for _, _, copy in sent],
        )


def _destination(copy: OutgoingMessage) -> str:
    return copy.routing_key if copy.exchange == "" else f"{copy.exchange}/{copy.routing_key}"


async def _publish_traced(
    publisher: ConfirmedPublisher, items: list[Taken], copies: list[OutgoingMessage]
) -> None:
    """Publish the copies pipelined, each confirmed, each in a ``replay <dlq>`` span of its
    message's own trace (its headers carry it)."""
    await publisher.channel()  # opened once, before the publishes race for it

    async def send(item: Taken, copy: OutgoingMessage) -> None:
        with tracing.span(
            f"replay {item.queue}",
            parent_headers=item.message.headers or {},
            attributes={
                "messaging.message.id": str(item.message.message_id),
                "messaging.rabbitmq.destination.routing_key": copy.routing_key,
            },
        ):
            await publisher.publish(copy)

    results = await asyncio.gather(
        *(send(item, copy) for item, copy in zip(items, copies, strict=True)),
        return_exceptions=True,
    )
    for result, copy in zip(results, copies, strict=True):
        if isinstance(result, PublishError):
            raise DeadLetterError(f"cannot replay to {_destination(copy)}: no such queue")
        if isinstance(result, BaseException):
            raise result


def _copy(
    settings: Settings,
    item: Taken,
    run_id: str,
    to_queue: str | None,
    *,
    message_id: str | None = None,
    body: bytes | None = None,
) -> OutgoingMessage:
    """The letter as it was first sent, without what failing added to it, marked replayed
    (a new ``message_id`` and ``body`` for an edited copy)."""
    message = item.message
    exchange, routing_key = ("", to_queue) if to_queue else _target(settings, item)
    headers = {
        key: value
        for key, value in (message.headers or {}).items()
        if key not in ERROR_HEADERS and key not in (ATTEMPTS_HEADER, "x-death", *FIRST_SENT_HEADERS)
    }
    headers[REPLAYED_AT_HEADER] = datetime.now(UTC).isoformat()
    headers[REPLAY_RUN_HEADER] = run_id
    copy = sent_on(message, exchange=exchange, routing_key=routing_key, headers=headers)
    if message_id is None:
        return copy
    headers[REPLAY_OF_HEADER] = str(message.message_id)
    return dataclasses.replace(
        copy, message_id=message_id, body=copy.body if body is None else body, headers=headers
    )


def _target(settings: Settings, item: Taken) -> tuple[str, str]:
    """(exchange, routing key) the dead letter goes back to."""
    message = item.message
    if item.queue == topology.unrouted_queue(settings.namespace):
        # Unroutable when first sent: send it as it was sent, now that queues may be bound.
        return first_sent(message)
    origin = (message.headers or {}).get("x-original-queue")
    if isinstance(origin, bytes):
        origin = origin.decode(errors="replace")
    return "", str(origin) if origin else topology.original_queue(item.queue)


async def _dry_run(
    settings: Settings,
    conn: asyncpg.Connection,
    selection: Selection,
    limit: int | None,
    report: ReplayReport,
) -> None:
    """What a run would replay: the DLQs read as ``dlq show`` reads them, left as they were."""
    chosen = 0
    for name in selection.queues(settings):
        if limit is not None and chosen >= limit:
            break
        depth = (await _depth(settings, name)) or 0
        report.snapshot[name] = depth
        if not depth:
            continue
        letters = await browse(settings, name, depth)
        keys = [letter_key(letter) for letter in letters]
        rows = await conn.fetch("SELECT letter_key FROM replays WHERE letter_key = ANY($1)", keys)
        seen = {row["letter_key"] for row in rows}
        for letter, key in zip(letters, keys, strict=True):
            if limit is not None and chosen >= limit:
                break
            if not selection.matches(letter):
                report.moved_aside += 1
                continue
            chosen += 1
            target = report.of(name).skipped if key in seen else report.of(name).replayed
            target.append(letter.message_id or "(no id)")
            seen.add(key)


async def _depth(settings: Settings, name: str) -> int | None:
    return (await depths(settings, [name]))[name]


async def _must_exist(settings: Settings, queue: str) -> None:
    if (await _depth(settings, queue)) is None:
        raise DeadLetterError(f"no queue named {queue} to replay to")


@contextlib.asynccontextmanager
async def _holding(settings: Settings, queues: list[str]) -> AsyncIterator[asyncpg.Connection]:
    """An operations connection holding every one of ``queues``' operator lock for as long
    as it is open (a session lock: two replays of one DLQ would see each other's letters
    as their own); refused at once if another holds one. A killed run's lock goes with its
    connection."""
    async with ops_db.connect(settings) as conn:
        for queue in queues:
            if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", f"ops:{queue}"):
                raise DeadLetterError(
                    f"another operator action on {queue} is running: try again when it ends"
                )
        yield conn


def _id(message: AbstractIncomingMessage) -> str:
    return message.message_id or "(no id)"


# --- Edit and replay. ---------------------------------------------------------------------


@dataclass(frozen=True)
class EditReport:
    queue: str  # the DLQ the original was in
    replay_of: str  # the original's message id
    message_id: str  # the copy's, new
    type: str
    version: int
    to_queue: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def letter(settings: Settings, queue: str, message_id: str) -> DeadLetter:
    """The dead letter ``message_id`` of ``queue``, the queue left as it was."""
    depth = await _depth(settings, queue)
    if depth is None:
        raise DeadLetterError(f"no queue named {queue}")
    found = [one for one in await browse(settings, queue, depth) if one.message_id == message_id]
    if not found:
        raise DeadLetterError(f"no message with id {message_id} in {queue}")
    return found[0]


async def edit(
    settings: Settings, queue: str, message_id: str, data: str, *, operator: str
) -> EditReport:
    """Replace the body of dead letter ``message_id`` with ``data`` (JSON, valid for its
    contract: InvalidRequest names the field otherwise, and nothing changes) and send it
    back as a copy with a new message id and ``x-replay-of``; the original is removed once
    the copy is confirmed and recorded."""
    selection = Selection(queue=queue, message_id=message_id)
    original = await letter(settings, queue, message_id)
    body = validated_body(original.type, original.headers.get(VERSION_HEADER), data)
    version = int(str(original.headers.get(VERSION_HEADER)))
    report = ReplayReport(run_id=str(uuid.uuid4()), dry_run=False, to_queue=None)
    new_id = str(uuid.uuid4())
    sent: list[OutgoingMessage] = []
    async with _holding(settings, [queue]) as conn:

        async def act(publisher: ConfirmedPublisher, chunk: list[Taken]) -> None:
            item = chunk[0]
            # The letter taken is the one checked (the same id), unless it changed since.
            headers = item.message.headers or {}
            validated_body(item.message.type, headers.get(VERSION_HEADER), data)
            copy = _copy(settings, item, report.run_id, None, message_id=new_id, body=body)
            await _publish_traced(publisher, [item], [copy])
            key = letter_key(item.letter)
            await _record(conn, [(item, key, copy)], report, replay_of=message_id)
            await item.message.ack()
            sent.append(copy)

        await sweep(settings, selection, act, limit=1)
        if not sent:
            raise DeadLetterError(f"no message with id {message_id} in {queue}")
        await ops_db.record(
            conn,
            action="dlq.edit",
            target=queue,
            message_ids=[message_id, new_id],
            count=1,
            operator=operator,
            detail={"replay_of": message_id, "message_id": new_id, "to": _destination(sent[0])},
        )
    return EditReport(
        queue=queue,
        replay_of=message_id,
        message_id=new_id,
        type=str(original.type),
        version=version,
        to_queue=_destination(sent[0]),
    )


# --- Pending replays. ---------------------------------------------------------------------


@dataclass(frozen=True)
class PendingReplay:
    message_id: str | None
    replay_of: str | None
    from_queue: str
    to_queue: str
    run_id: str
    replayed_at: datetime
    state: str  # pending | applied | failed
    settled_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = "id, message_id, replay_of, from_queue, to_queue, run_id, replayed_at, state, settled_at"


async def pending(settings: Settings, *, limit: int = 100) -> list[PendingReplay]:
    """Every replay still pending is checked and settled if it has: applied once its
    handler's inbox holds its message id, failed once a dead letter of it (carrying its
    run) is back in its queue's DLQ. The pending ones (oldest first, at most ``limit``),
    then those settled in the last RECENTLY_SETTLED (newest first, at most ``limit``)."""
    async with ops_db.connect(settings) as conn:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM replays WHERE state = 'pending' ORDER BY replayed_at, id"
        )
        settled = await _settle(settings, [dict(row) for row in rows])
        for state in ("applied", "failed"):
            ids = [row_id for row_id, became in settled.items() if became == state]
            if ids:
                await conn.execute(
                    "UPDATE replays SET state = $2, settled_at = now()"
                    " WHERE id = ANY($1) AND state = 'pending'",
                    ids,
                    state,
                )
        still = await conn.fetch(
            f"SELECT {_COLUMNS} FROM replays WHERE state = 'pending'"
            " ORDER BY replayed_at, id LIMIT $1",
            limit,
        )
        recent = await conn.fetch(
            f"SELECT {_COLUMNS} FROM replays WHERE state <> 'pending'"
            " AND settled_at > now() - $1::interval ORDER BY settled_at DESC, id DESC LIMIT $2",
            RECENTLY_SETTLED,
            limit,
        )
    return [_pending_replay(row) for row in [*still, *recent]]


def _pending_replay(row: asyncpg.Record) -> PendingReplay:
    values = dict(row)
    values.pop("id")
    return PendingReplay(**values)


async def _settle(settings: Settings, rows: list[dict[str, Any]]) -> dict[int, str]:
    """Of the pending ``rows``, those that settled: row id -> applied | failed."""
    settled: dict[int, str] = {}
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["message_id"] is not None:
            by_queue.setdefault(row["to_queue"], []).append(row)
    for queue, waiting in by_queue.items():
        handler = handler_of(settings, queue)
        if handler is None:  # sent to an exchange or a queue no handler reads: unknowable
            continue
        service, consumer = handler
        applied = await _in_inbox(settings, service, consumer, [r["message_id"] for r in waiting])
        settled.update({r["id"]: "applied" for r in waiting if r["message_id"] in applied})
        rest = [r for r in waiting if r["id"] not in settled]
        if rest:
            failed = await _dead_again(settings, topology.dead_letter_queue(queue))
            settled.update(
                {r["id"]: "failed" for r in rest if (r["message_id"], r["run_id"]) in failed}
            )
    return settled


def handler_of(settings: Settings, queue: str) -> tuple[str, str] | None:
    """(service, inbox consumer name) of the handler reading ``queue``
    (``<ns>.<service>.<handler>``), or None if no handler does."""
    prefix = f"{settings.namespace}."
    if not queue.startswith(prefix):
        return None
    service_name, _, handler_name = queue.removeprefix(prefix).partition(".")
    if service_name not in catalog.SERVICES:
        return None
    try:
        handler = catalog.load(service_name).handler_named(handler_name)
    except KeyError:
        return None
    return service_name, handler.consumer


async def _in_inbox(
    settings: Settings, service: str, consumer: str, message_ids: list[str]
) -> set[str]:
    """Which of ``message_ids`` ``consumer``'s inbox holds, read as the service's role."""
    async with store_once(settings.database_url(service)) as store, store.connection() as conn:
        return await store.inbox_holds(conn, consumer, message_ids)


async def _dead_again(settings: Settings, dlq: str) -> set[tuple[str | None, str]]:
    """(message id, replay run) of every letter in ``dlq`` that a replayed copy became."""
    depth = await _depth(settings, dlq)
    if not depth:
        return set()
    found: set[tuple[str | None, str]] = set()
    for one in await browse(settings, dlq, depth):
        run = one.headers.get(REPLAY_RUN_HEADER)
        if isinstance(run, bytes):
            run = run.decode(errors="replace")
        if run:
            found.add((one.message_id, str(run)))
    return found
