"""The archive of dead letters: set aside in the operations database, restored on demand.

``archive`` takes the selected letters out of their DLQs (``dead_letters.sweep``): each chunk
is inserted into ``archived_letters`` in one committed transaction, and only then acked, so
a crash in between leaves a letter in both places, never in neither. ``restore`` publishes
an archived letter back to its DLQ, confirmed, with its properties and headers as they were,
and only then deletes its row (a crash leaves a duplicate, never a loss). Letters archived
longer ago than ``FLEET_ARCHIVE_RETENTION`` are deleted whenever the archive is used.

AMQP header values are richer than JSON (bytes, timestamps, decimals, nested tables), so
they are stored tagged (``{"$timestamp": "..."}``) and read back as the same values: a
restored letter shows the same reason and signature and can be replayed like any other.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from aiormq.exceptions import PublishError

from contracts import OutgoingMessage
from workers.operations import InvalidRequest, OperatorError, Progress, no_progress, ops_db
from workers.operations.dead_letters import FIRST_SENT_HEADERS, Selection, Taken, sweep
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.settings import Settings

# Archived letters a restore publishes (and deletes) per transaction.
RESTORE_CHUNK = 100
# The audit log's target for what concerns the whole archive (expiry, restore --all).
ARCHIVE = "archive"


class ArchiveError(OperatorError):
    """A request about the archive that cannot be carried out (one-line reason)."""


@dataclass(frozen=True)
class ArchivedLetter:
    id: int
    queue: str  # the DLQ it came from, and goes back to
    message_id: str | None
    type: str | None
    signature: str
    reason: str
    failed_at: datetime | None
    archived_at: datetime
    properties: dict[str, Any]  # AMQP properties, and the exchange and routing key it came by
    headers: dict[str, Any]  # as the broker delivered them (bytes, datetimes, tables...)
    body: bytes

    def as_dict(self, *, with_body: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "queue": self.queue,
            "message_id": self.message_id,
            "type": self.type,
            "signature": self.signature,
            "reason": self.reason,
            "failed_at": self.failed_at,
            "archived_at": self.archived_at,
        }
        if with_body:
            data["properties"] = _readable(self.properties)
            data["headers"] = _readable(self.headers)
            data["body"] = self.body.decode("utf-8", errors="replace")
        return data


@dataclass
class ArchiveReport:
    archived: int = 0
    message_ids: list[str] = field(default_factory=list)
    by_queue: dict[str, int] = field(default_factory=dict)
    snapshot: dict[str, int] = field(default_factory=dict)  # each DLQ's depth at the start
    moved_aside: int = 0  # letters in the way, moved to their DLQ's tail
    expired: int = 0  # archived letters past the retention, deleted first

    def as_dict(self) -> dict[str, Any]:
        return {
            "archived": self.archived,
            "message_ids": self.message_ids,
            "by_queue": self.by_queue,
            "snapshot": self.snapshot,
            "moved_aside": self.moved_aside,
            "expired": self.expired,
        }


@dataclass
class RestoreReport:
    restored: int = 0
    ids: list[int] = field(default_factory=list)  # the archive's ids, now deleted
    message_ids: list[str] = field(default_factory=list)
    by_queue: dict[str, int] = field(default_factory=dict)
    expired: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "restored": self.restored,
            "ids": self.ids,
            "message_ids": self.message_ids,
            "by_queue": self.by_queue,
            "expired": self.expired,
        }


async def archive(
    settings: Settings,
    selection: Selection,
    *,
    limit: int | None = None,
    progress: Progress = no_progress,
    operator: str,
) -> ArchiveReport:
    """Move the selected dead letters (at most ``limit``) from their DLQs to the archive."""
    if limit is not None and limit < 1:
        raise InvalidRequest("--limit must be at least 1")
    report = ArchiveReport(expired=await expire(settings))
    queues = selection.queues(settings)
    async with ops_db.connect(settings) as writer, ops_db.connect(settings) as locks:
        # Held for the whole run: another operator's sweep of the same DLQ (a replay, an
        # archive) would take the letters this one moves to the tail, and the other way round.
        async with locks.transaction():
            for queue in queues:
                await ops_db.lock(locks, queue)

            async def store(_publisher: ConfirmedPublisher, chunk: list[Taken]) -> None:
                async with writer.transaction():
                    await writer.executemany(_INSERT, [_row(item) for item in chunk])
                for item in chunk:  # durable now: out of the DLQ
                    await item.message.ack()
                for item in chunk:
                    report.archived += 1
                    report.by_queue[item.queue] = report.by_queue.get(item.queue, 0) + 1
                    if item.message.message_id is not None:
                        report.message_ids.append(item.message.message_id)

            try:
                swept = await sweep(settings, selection, store, limit=limit, progress=progress)
                report.snapshot, report.moved_aside = swept.snapshot, swept.moved_aside
            finally:  # what was archived is recorded, even when the run was cut short
                if report.archived:
                    async with writer.transaction():
                        await ops_db.record(
                            writer,
                            action="dlq.archive",
                            target=selection.describe(),
                            message_ids=report.message_ids,
                            count=report.archived,
                            operator=operator,
                            detail={"by_queue": report.by_queue, "limit": limit},
                        )
    if not report.archived and (selection.message_id is not None or selection.group is not None):
        raise ArchiveError(f"no dead letter to archive in {selection.describe()}")
    return report


_INSERT = (
    "INSERT INTO archived_letters"
    " (queue, message_id, type, signature, reason, failed_at, properties, headers, body)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)


def _row(item: Taken) -> tuple[Any, ...]:
    letter, message = item.letter, item.message
    properties = {
        "message_id": message.message_id,
        "type": message.type,
        "correlation_id": message.correlation_id,
        "timestamp": message.timestamp,
        "app_id": message.app_id,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "delivery_mode": int(message.delivery_mode) if message.delivery_mode else None,
        "priority": message.priority,
        "expiration": message.expiration,
        "reply_to": message.reply_to,
        "user_id": message.user_id,
        # How it reached the DLQ (for the unrouted DLQ: where it was first sent).
        "exchange": message.exchange,
        "routing_key": message.routing_key,
    }
    return (
        item.queue,
        letter.message_id,
        letter.type,
        letter.signature,
        letter.reason,
        letter.failed_at,
        to_json({key: value for key, value in properties.items() if value is not None}),
        to_json(letter.headers),
        letter.body,
    )


_COLUMNS = (
    "id, queue, message_id, type, signature, reason, failed_at, archived_at,"
    " properties, headers, body"
)


def _letter(row: asyncpg.Record) -> ArchivedLetter:
    values = dict(row)
    values["properties"] = from_json(values["properties"])
    values["headers"] = from_json(values["headers"])
    return ArchivedLetter(**values)


async def archived(
    settings: Settings, *, queue: str | None = None, group: str | None = None, limit: int = 50
) -> list[ArchivedLetter]:
    """Archived letters, newest first: of one DLQ, of one group (a signature), or all."""
    if limit < 1:
        raise InvalidRequest("--limit must be at least 1")
    await expire(settings)
    async with ops_db.connect(settings) as conn:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM archived_letters"
            " WHERE ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR signature = $2)"
            " ORDER BY archived_at DESC, id DESC LIMIT $3",
            queue,
            group,
            limit,
        )
    return [_letter(row) for row in rows]


async def archived_letter(settings: Settings, letter_id: int) -> ArchivedLetter:
    """One archived letter, with its properties, headers and body."""
    await expire(settings)
    async with ops_db.connect(settings) as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM archived_letters WHERE id = $1", letter_id
        )
    if row is None:
        raise ArchiveError(f"no archived letter with id {letter_id}")
    return _letter(row)


async def restore(
    settings: Settings,
    *,
    ids: Sequence[int] | None = None,
    message_id: str | None = None,
    queue: str | None = None,
    every: bool = False,
    operator: str,
) -> RestoreReport:
    """Put archived letters back in their DLQs: those with these ``ids``, with this
    ``message_id``, archived from ``queue``, or ``every`` one. Each is published (persistent,
    confirmed) before its row is deleted, in the same transaction that holds the row: a
    crash in between leaves it in both places; two restores at once never take the same."""
    chosen = sum((bool(ids), message_id is not None, queue is not None, every))
    if chosen != 1:
        raise InvalidRequest(
            "choose what to restore: --id N (repeatable), --message-id ID, --queue Q or --all"
        )
    report = RestoreReport(expired=await expire(settings))
    async with ops_db.connect(settings) as conn:
        # Only what is archived now: a letter archived while this runs waits for the next.
        last_id = await conn.fetchval("SELECT max(id) FROM archived_letters") or 0
        if ids:
            wanted = sorted(set(ids))
            found = await conn.fetch(
                "SELECT id FROM archived_letters WHERE id = ANY($1::bigint[])", wanted
            )
            missing = sorted(set(wanted) - {row["id"] for row in found})
            if missing:
                listed = ", ".join(str(letter_id) for letter_id in missing)
                raise ArchiveError(f"no archived letter with id {listed}")
        publisher = await ConfirmedPublisher.connect(settings.broker_urls)
        try:
            while True:
                async with conn.transaction():
                    rows = await conn.fetch(
                        f"SELECT {_COLUMNS} FROM archived_letters"
                        " WHERE id <= $1"
                        " AND ($2::bigint[] IS NULL OR id = ANY($2))"
                        " AND ($3::text IS NULL OR message_id = $3)"
                        " AND ($4::text IS NULL OR queue = $4)"
                        " ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED",
                        last_id,
                        list(ids) if ids else None,
                        message_id,
                        queue,
                        RESTORE_CHUNK,
                    )
                    if not rows:
                        break
                    letters = [_letter(row) for row in rows]
                    await _publish(publisher, letters)
                    await conn.execute(
                        "DELETE FROM archived_letters WHERE id = ANY($1::bigint[])",
                        [letter.id for letter in letters],
                    )
                for letter in letters:
                    report.restored += 1
                    report.ids.append(letter.id)
                    report.by_queue[letter.queue] = report.by_queue.get(letter.queue, 0) + 1
                    if letter.message_id is not None:
                        report.message_ids.append(letter.message_id)
        finally:
            await publisher.close()
            if report.restored:
                async with conn.transaction():
                    await ops_db.record(
                        conn,
                        action="dlq.restore",
                        target=_restore_target(ids, message_id, queue),
                        message_ids=report.message_ids,
                        count=report.restored,
                        operator=operator,
                        detail={"ids": report.ids, "by_queue": report.by_queue},
                    )
    if not report.restored and message_id is not None:
        raise ArchiveError(f"no archived letter with message id {message_id}")
    return report


def _restore_target(ids: Sequence[int] | None, message_id: str | None, queue: str | None) -> str:
    if queue is not None:
        return queue
    if message_id is not None:
        return f"{ARCHIVE}, message {message_id}"
    if ids:
        return f"{ARCHIVE}, ids {', '.join(str(letter_id) for letter_id in ids)}"
    return ARCHIVE


async def _publish(publisher: ConfirmedPublisher, letters: list[ArchivedLetter]) -> None:
    try:
        await publisher.publish_many([_as_sent(letter) for letter in letters])
    except PublishError:
        queues = ", ".join(sorted({letter.queue for letter in letters}))
        raise ArchiveError(f"cannot restore to {queues}: no such queue") from None


def _as_sent(letter: ArchivedLetter) -> OutgoingMessage:
    """The letter as it was, straight to its DLQ (persistent: every publish of the fleet is).
    Properties the fleet never sets (priority, expiration, reply_to...) stay in the archive:
    an expiration would let a restored letter vanish from its DLQ."""
    properties = letter.properties
    headers = letter.headers
    if FIRST_SENT_HEADERS[0] not in headers and "exchange" in properties:
        # (an unroutable message: where it was first sent, for its replay)
        first = (properties["exchange"], properties.get("routing_key", ""))
        if letter.queue.endswith(".unrouted.dlq"):  # topology.unrouted_queue(namespace)
            headers = {**headers, **dict(zip(FIRST_SENT_HEADERS, first, strict=True))}
    return OutgoingMessage(
        exchange="",
        routing_key=letter.queue,
        body=letter.body,
        message_id=properties.get("message_id"),
        type=properties.get("type"),
        correlation_id=properties.get("correlation_id"),
        timestamp=properties.get("timestamp"),
        app_id=properties.get("app_id"),
        content_type=properties.get("content_type"),
        headers=headers,
    )


async def expire(settings: Settings) -> int:
    """Delete the letters archived longer ago than the retention; how many. Recorded in the
    audit log when there were any."""
    async with ops_db.connect(settings, transaction=True) as conn:
        gone = await conn.fetch(
            "DELETE FROM archived_letters WHERE archived_at < now() - $1::interval"
            " RETURNING message_id",
            settings.archive_retention,
        )
        if gone:
            await ops_db.record(
                conn,
                action="dlq.expire",
                target=ARCHIVE,
                message_ids=[row["message_id"] for row in gone if row["message_id"] is not None],
                count=len(gone),
                operator="retention",
                detail={"retention_seconds": settings.archive_retention.total_seconds()},
            )
    return len(gone)


# AMQP values as JSON and back. JSON has strings, numbers, booleans, null, objects and
# arrays; the rest is tagged with a one-key object. A table that looks like a tag (its one
# key one of these) is wrapped in {"$table": ...}, so nothing is read back as what it is not.
_TAGS = ("$bytes", "$bytearray", "$timestamp", "$decimal", "$float", "$table")


def to_json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        # NaN and infinities are no JSON numbers
        return value if value == value and abs(value) != float("inf") else {"$float": repr(value)}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$timestamp": value.isoformat()}
    if isinstance(value, bytearray):  # AMQP's byte array ('x')
        return {"$bytearray": base64.b64encode(value).decode()}
    if isinstance(value, bytes):  # a long string that is not UTF-8
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        table = {str(key): to_json(item) for key, item in value.items()}
        return {"$table": table} if _looks_tagged(table) else table
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    raise TypeError(f"not an AMQP value: {type(value).__name__}")


def from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    if _looks_tagged(value):
        ((tag, content),) = value.items()
        if tag == "$table":
            return {key: from_json(item) for key, item in content.items()}
        if tag == "$timestamp":
            return datetime.fromisoformat(content)
        if tag == "$decimal":
            return Decimal(content)
        if tag == "$float":
            return float(content)
        if tag == "$bytearray":
            return bytearray(base64.b64decode(content))
        if tag == "$bytes":
            # Sent back as a byte array: the client cannot send a long string that is not UTF-8.
            return bytearray(base64.b64decode(content))
    return {key: from_json(item) for key, item in value.items()}


def _looks_tagged(table: dict[str, Any]) -> bool:
    return len(table) == 1 and next(iter(table)) in _TAGS


def _readable(value: Any) -> Any:
    """AMQP values as plain JSON for people and scripts (bytes as text, times as ISO)."""
    if isinstance(value, dict):
        return {str(key): _readable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_readable(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value
