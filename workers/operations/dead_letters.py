"""Inspecting and repairing dead-letter queues over plain AMQP (no management plugin).

AMQP has no peek: to read a queue without changing it we take messages unacked and close
the channel, which puts every one of them back where it was (DLQs are classic queues, so
no delivery count changes). Actions on many letters (a replay, an archive) go through
``sweep``; replaying is in ``replays.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import ChannelNotFoundEntity

from workers.operations import (
    InvalidRequest,
    OperatorError,
    Progress,
    no_progress,
    ops_db,
    reconnect,
)
from workers.runtime import catalog, connections, topology
from workers.runtime.amqp_reading import read_amqp_leniently
from workers.runtime.publisher import ConfirmedPublisher, sent_on
from workers.runtime.service import Service
from workers.runtime.settings import Settings

read_amqp_leniently()  # a DLQ may hold what a foreign client sent, odd bytes and all


class DeadLetterError(OperatorError):
    """A request about dead letters that cannot be carried out (one-line reason)."""


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    type: str | None
    headers: dict[str, Any]
    body: bytes

    @property
    def _death(self) -> dict[str, Any] | None:
        """The broker's own record of dead-lettering it (the newest x-death), if it did."""
        deaths = self.headers.get("x-death") or []
        return dict(deaths[0]) if deaths else None

    @property
    def reason(self) -> str:
        """Ours (x-error-*) or, for what the broker dead-lettered itself, its x-death."""
        if "x-error-type" in self.headers:
            return f"{self.headers['x-error-type']}: {self.headers.get('x-error-message', '')}"
        if (death := self._death) is not None:
            return f"broker: {death.get('reason')} (from {death.get('queue')})"
        return "unknown"

    @property
    def signature(self) -> str:
        """What groups it with others that failed the same way: our x-error-signature (the
        error type and where in the fleet's code), or the broker's reason and queue."""
        ours = self.headers.get("x-error-signature")
        if ours:
            return str(ours)
        if "x-error-type" in self.headers:  # dead-lettered before signatures existed
            return str(self.headers["x-error-type"])
        if (death := self._death) is not None:
            return f"broker: {death.get('reason')} from {death.get('queue')}"
        return "unknown"

    @property
    def error_type(self) -> str:
        if "x-error-type" in self.headers:
            return str(self.headers["x-error-type"])
        death = self._death
        return f"broker: {death.get('reason')}" if death is not None else "unknown"

    @property
    def failed_at(self) -> datetime | None:
        text = self.headers.get("x-failed-at")
        if isinstance(text, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(text)
        when = self._death.get("time") if self._death is not None else None
        if isinstance(when, datetime):
            return when if when.tzinfo else when.replace(tzinfo=UTC)
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "type": self.type,
            "reason": self.reason,
            "signature": self.signature,
            "headers": _plain(self.headers),
            "body": self.body.decode("utf-8", errors="replace"),
        }


def dead_letter_queues(settings: Settings, services: list[Service]) -> list[str]:
    return [
        topology.dead_letter_queue(spec.name)
        for service in services
        for spec in service.queue_specs(settings.namespace)
    ] + [topology.unrouted_queue(settings.namespace)]


@contextlib.asynccontextmanager
async def _connection(settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    connection = await connections.connect(settings.broker_urls)
    try:
        yield connection
    finally:
        await connection.close()


async def _open_dlq(
    connection: aio_pika.abc.AbstractConnection, name: str
) -> tuple[AbstractChannel, AbstractQueue]:
    topology.original_queue(name)  # refuses a queue that is not a DLQ
    channel = await connection.channel(publisher_confirms=False)
    try:
        queue = await channel.declare_queue(name, passive=True)
    except ChannelNotFoundEntity:
        raise DeadLetterError(f"no queue named {name}") from None
    return channel, queue


async def depths(settings: Settings, names: list[str]) -> dict[str, int | None]:
    """Messages in each queue; None where the queue has not been declared yet."""
    async with _connection(settings) as connection:
        return await topology.depths(connection, names)


async def depth_of_every_dlq(settings: Settings) -> dict[str, int | None]:
    """Every dead-letter queue of the fleet's services, with its depth (``fleet dlq list``)."""
    return await depths(settings, dead_letter_queues(settings, catalog.load_all()))


async def _take(queue: AbstractQueue, limit: int) -> list[AbstractIncomingMessage]:
    """Up to ``limit`` messages from the head, unacked (they return on channel close)."""
    taken: list[AbstractIncomingMessage] = []
    while len(taken) < limit:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        taken.append(message)
    return taken


def _as_dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    return DeadLetter(message.message_id, message.type, dict(message.headers or {}), message.body)


async def browse(settings: Settings, name: str, limit: int) -> list[DeadLetter]:
    async with _connection(settings) as connection:
        channel, queue = await _open_dlq(connection, name)
        messages = await _take(queue, limit)
        await channel.close()  # everything taken goes back, in place
    return [_as_dead_letter(message) for message in messages]


GROUP_KEYS = ("signature", "type", "queue", "service")


@dataclass(frozen=True)
class Group:
    """Dead letters that failed the same way (or share a type, queue or service)."""

    key: str
    count: int
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    latest_reason: str  # the error message of the latest failure
    example_message_id: str | None
    queues: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "count": self.count,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
            "latest_reason": self.latest_reason,
            "example_message_id": self.example_message_id,
            "queues": list(self.queues),
        }


async def groups(settings: Settings, by: str = "signature") -> list[Group]:
    """Every dead letter of the fleet's DLQs, grouped ``by`` one of GROUP_KEYS, largest
    first. The queues are read and left as they were."""
    if by not in GROUP_KEYS:
        raise DeadLetterError(f"group by one of {', '.join(GROUP_KEYS)}, not {by!r}")
    found: list[tuple[str, DeadLetter]] = []
    async with _connection(settings) as connection:
        depths = await topology.depths(connection, dead_letter_queues(settings, catalog.load_all()))
        for name, depth in depths.items():
            if not depth:
                continue
            channel, queue = await _open_dlq(connection, name)
            messages = await _take(queue, depth)
            await channel.close()  # everything taken goes back, in place
            found += [(name, _as_dead_letter(message)) for message in messages]
    grouped: dict[str, list[tuple[str, DeadLetter]]] = {}
    for name, letter in found:
        grouped.setdefault(_group_key(settings, by, name, letter), []).append((name, letter))
    result = [_group(key, members) for key, members in grouped.items()]
    return sorted(result, key=lambda group: (-group.count, group.key))


def _group_key(settings: Settings, by: str, queue: str, letter: DeadLetter) -> str:
    if by == "signature":
        return letter.signature
    if by == "type":
        return letter.error_type
    if by == "queue":
        return queue
    # <ns>.<service>.<handler>.dlq; the unrouted DLQ belongs to no service
    parts = queue.removeprefix(f"{settings.namespace}.").split(".")
    return parts[0] if parts[0] in catalog.SERVICES else "(unrouted)"


def _group(key: str, members: list[tuple[str, DeadLetter]]) -> Group:
    dated = [(letter.failed_at, letter) for _, letter in members if letter.failed_at is not None]
    dated.sort(key=lambda pair: pair[0])
    latest = dated[-1][1] if dated else members[-1][1]
    return Group(
        key=key,
        count=len(members),
        first_failed_at=dated[0][0] if dated else None,
        last_failed_at=dated[-1][0] if dated else None,
        latest_reason=latest.reason,
        example_message_id=latest.message_id,
        queues=tuple(sorted({queue for queue, _ in members})),
    )


@dataclass(frozen=True)
class Selection:
    """Which dead letters an action takes: those of one ``queue``, of one ``group`` (a
    signature, as ``fleet dlq groups`` shows it) or of every queue (``all_queues``); of
    those, only ``message_id`` when given."""

    queue: str | None = None
    group: str | None = None
    all_queues: bool = False
    message_id: str | None = None

    def __post_init__(self) -> None:
        if (self.queue is not None) + (self.group is not None) + self.all_queues != 1:
            raise InvalidRequest("choose the dead letters: a QUEUE, --group G or --all-queues")
        if self.queue is not None:
            try:
                topology.original_queue(self.queue)
            except ValueError as error:
                raise InvalidRequest(str(error)) from None

    def queues(self, settings: Settings) -> list[str]:
        if self.queue is not None:
            return [self.queue]
        return dead_letter_queues(settings, catalog.load_all())

    def matches(self, letter: DeadLetter) -> bool:
        if self.group is not None and letter.signature != self.group:
            return False
        return self.message_id is None or letter.message_id == self.message_id

    def describe(self) -> str:
        """The selection in a few words, for the audit log and progress lines."""
        chosen = self.queue or (f"group {self.group}" if self.group else "every DLQ")
        return f"{chosen}, message {self.message_id}" if self.message_id else chosen


@dataclass(frozen=True)
class Taken:
    """A dead letter taken from its DLQ, unacknowledged: whoever takes it acks it once what
    it did with the letter is durable; if not, it returns to its place when the channel
    closes."""

    queue: str
    message: AbstractIncomingMessage

    @property
    def letter(self) -> DeadLetter:
        return _as_dead_letter(self.message)


# What an action does with one chunk of selected letters: publish copies, archive them...
# and ack each letter once that is durable. It is given the sweep's confirmed publisher.
ChunkAction = Callable[[ConfirmedPublisher, list[Taken]], Awaitable[None]]


@dataclass
class SweepReport:
    snapshot: dict[str, int] = field(default_factory=dict)  # each DLQ's depth at the start
    selected: int = 0  # letters handed to the action
    moved_aside: int = 0  # letters in the way, moved to their DLQ's tail
    reconnects: int = 0


# Dead letters a sweep holds unacknowledged at once, at most.
CHUNK = 100
# Reconnects a sweep tries (after the pauses of reconnect.DELAYS) before it gives up.
_MAX_RECONNECTS = 30


async def sweep(
    settings: Settings,
    selection: Selection,
    act: ChunkAction,
    *,
    limit: int | None = None,
    chunk: int = CHUNK,
    progress: Progress = no_progress,
) -> SweepReport:
    """Hand the selected dead letters to ``act``, ``chunk`` at a time, at most ``limit``.

    The snapshot is each DLQ's depth when the sweep reaches it: a DLQ is first in, first
    out, and only the sweep takes from it, so its first ``depth`` letters are exactly those
    that were there, and what is dead-lettered meanwhile (a replayed message failing again
    included) queues up behind them and is left alone. A letter in the way that is not
    selected is moved to the tail (a confirmed copy, then its ack), so no more than one
    chunk is ever held unacknowledged, however large the DLQ. A lost connection is
    reopened and the sweep goes on where it was: what was not acked went back in place.
    """
    report = SweepReport()
    for name in selection.queues(settings):
        place = _Place()
        while True:
            connection = None
            try:
                connection = await connections.connect(settings.broker_urls)
                await _sweep_queue(
                    connection, name, selection, act, place, report, limit, chunk, progress
                )
                break
            except Exception as error:
                if not reconnect.broker_lost(error) or not _is_lost(connection):
                    raise
                # What was settled before the loss is gone from the head; the rest of the
                # chunk went back in place.
                settled = [item for item in place.in_flight if item.message.processed]
                place.done += len(settled)
                report.selected += sum(1 for item in settled if selection.matches(item.letter))
                place.in_flight = []
                if report.reconnects >= _MAX_RECONNECTS:
                    raise DeadLetterError(
                        f"lost RabbitMQ and could not get it back: {error}"
                    ) from error
                delay = reconnect.DELAYS[min(report.reconnects, len(reconnect.DELAYS) - 1)]
                report.reconnects += 1
                progress(f"{name}: connection lost, reconnecting", place.done, place.depth)
                await asyncio.sleep(delay)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
        if limit is not None and report.selected >= limit:
            break
    return report


def _is_lost(connection: aio_pika.abc.AbstractConnection | None) -> bool:
    """Whether the connection is gone (aio-pika learns it a little after aiormq does)."""
    if connection is None or connection.is_closed:
        return True
    transport = connection.transport
    return transport is None or transport.connection.is_closed


@dataclass
class _Place:
    """How far a sweep of one DLQ got: it survives a reconnect."""

    depth: int | None = None  # the snapshot: the DLQ's depth when first reached
    done: int = 0  # letters of the snapshot dealt with (acted on, or moved aside)
    in_flight: list[Taken] = field(default_factory=list)  # the chunk being dealt with


async def _sweep_queue(
    connection: aio_pika.abc.AbstractConnection,
    name: str,
    selection: Selection,
    act: ChunkAction,
    place: _Place,
    report: SweepReport,
    limit: int | None,
    chunk: int,
    progress: Progress,
) -> None:
    try:
        channel, queue = await _open_dlq(connection, name)
    except DeadLetterError:
        if selection.queue is not None:
            raise
        return  # a group or every DLQ: one not declared yet holds nothing
    if place.depth is None:
        place.depth = queue.declaration_result.message_count or 0
        report.snapshot[name] = place.depth
    publisher = ConfirmedPublisher(connection)
    while place.done < place.depth and (limit is None or report.selected < limit):
        size = min(chunk, place.depth - place.done)
        if limit is not None:
            size = min(size, limit - report.selected)
        place.in_flight = [Taken(name, message) for message in await _take(queue, size)]
        if not place.in_flight:
            break  # someone else emptied it
        chosen = [item for item in place.in_flight if selection.matches(item.letter)]
        passed = [item for item in place.in_flight if item not in chosen]
        if passed:
            await _move_to_tail(publisher, passed)
            report.moved_aside += len(passed)
        if chosen:
            await act(publisher, chosen)
            report.selected += len(chosen)
        place.done += len(place.in_flight)
        place.in_flight = []
        progress(name, place.done, place.depth)
    await channel.close()  # anything still held goes back in place


async def _move_to_tail(publisher: ConfirmedPublisher, items: list[Taken]) -> None:
    """Letters the sweep must pass: copies at their DLQ's tail (confirmed together), then
    the originals acked. (A crash in between leaves them there twice, never lost.)"""
    await publisher.publish_many(
        [
            sent_on(
                item.message,
                exchange="",
                routing_key=item.queue,
                headers=keeping_first_sent(item.message),
            )
            for item in items
        ]
    )
    for item in items:
        await item.message.ack()


# An unroutable message reaches its DLQ by the exchange and routing key it was sent with, and
# a replay sends it there again; once moved within the DLQ (by the default exchange), these
# headers remember them.
FIRST_SENT_HEADERS = ("x-first-exchange", "x-first-routing-key")


def first_sent(message: AbstractIncomingMessage) -> tuple[str, str]:
    """(exchange, routing key) the message was sent with before it was dead-lettered."""
    headers = message.headers or {}
    if FIRST_SENT_HEADERS[0] in headers:
        exchange, routing_key = (headers.get(name) or b"" for name in FIRST_SENT_HEADERS)
        return _text(exchange), _text(routing_key)
    return message.exchange or "", message.routing_key or ""


def keeping_first_sent(message: AbstractIncomingMessage) -> dict[str, Any]:
    """The message's headers, with where it was first sent added unless already there."""
    headers = dict(message.headers or {})
    if FIRST_SENT_HEADERS[0] not in headers:
        headers.update(zip(FIRST_SENT_HEADERS, first_sent(message), strict=True))
    return headers


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def purge(settings: Settings, name: str, message_id: str | None, *, operator: str) -> int:
    """Delete dead letters for good: every one in ``name``, or those with ``message_id``."""
    purged_ids: list[str] = []
    async with _connection(settings) as connection:
        channel, queue = await _open_dlq(connection, name)
        if message_id is None:
            purged = (await queue.purge()).message_count or 0
        else:
            depth = queue.declaration_result.message_count or 0
            for message in await _take(queue, depth):
                if message.message_id == message_id:
                    await message.ack()
                    purged_ids.append(message_id)
            purged = len(purged_ids)
            if not purged:
                raise DeadLetterError(f"no message with id {message_id} in {name}")
        await channel.close()
    async with ops_db.connect(settings) as conn:
        await ops_db.record(
            conn,
            action="dlq.purge",
            target=name,
            message_ids=purged_ids,
            count=purged,
            operator=operator,
            detail={"message_id": message_id},
        )
    return purged


def _plain(value: Any) -> Any:
    """AMQP header values (bytes, datetimes, nested tables) as JSON-friendly values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    return value
