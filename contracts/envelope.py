"""What travels in AMQP properties and headers around every message body."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contracts.errors import InvalidEnvelope

VERSION_HEADER = "x-contract-version"
CAUSATION_HEADER = "x-causation-id"
# Set by an event-sourced producer: the event's version in its stream, so that consumers
# can apply one aggregate's events in stream order whatever order they arrive in.
STREAM_VERSION_HEADER = "x-stream-version"
# Set on replayed events: which replay they belong to, and how many events it expects to send
# in all (for a progress bar).
REPLAY_ID_HEADER = "x-replay-id"
REPLAY_EXPECTED_HEADER = "x-replay-expected"
CONTENT_TYPE = "application/json"
UNKNOWN_PRODUCER = "unknown"


def _now() -> datetime:
    # The AMQP timestamp property holds whole seconds; dropping the rest here makes an envelope
    # survive the trip through AMQP properties unchanged.
    return datetime.now(UTC).replace(microsecond=0)


def _text(value: object) -> str | None:
    """A property or header as text; empty means absent. Headers may arrive as bytes."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True, slots=True)
class Envelope:
    message_id: str  # UUID text: the idempotency key every inbox records
    type: str
    version: int
    correlation_id: str  # the order/saga the message belongs to
    causation_id: str | None  # message_id of the message that caused this one
    occurred_at: datetime  # tz-aware, UTC
    producer: str  # the producing service (AMQP app_id)

    def __post_init__(self) -> None:
        try:
            message_id = str(uuid.UUID(self.message_id))
        except (TypeError, ValueError, AttributeError):
            reason = f"message_id {self.message_id!r} is not a UUID"
            raise InvalidEnvelope(reason, self.type) from None
        object.__setattr__(self, "message_id", message_id)  # one spelling per id
        if not self.type:
            raise InvalidEnvelope("type is missing")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise InvalidEnvelope(f"version {self.version!r} is not a positive int", self.type)
        if not self.correlation_id:
            raise InvalidEnvelope("correlation_id is empty", self.type)
        if self.causation_id == "":
            raise InvalidEnvelope("causation_id is empty (use None)", self.type)
        if self.occurred_at.tzinfo is None:
            raise InvalidEnvelope("occurred_at has no time zone", self.type)
        object.__setattr__(self, "occurred_at", self.occurred_at.astimezone(UTC))
        if not self.producer:
            raise InvalidEnvelope("producer is empty", self.type)

    @classmethod
    def new(
        cls,
        type: str,
        version: int,
        producer: str,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        message_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Envelope:
        """A fresh envelope; a message that starts a conversation correlates to itself.
        ``occurred_at`` is for messages sent again as they first were (replays)."""
        message_id = message_id or str(uuid.uuid4())
        return cls(
            message_id=message_id,
            type=type,
            version=version,
            correlation_id=correlation_id or message_id,
            causation_id=causation_id,
            occurred_at=_now() if occurred_at is None else occurred_at.replace(microsecond=0),
            producer=producer,
        )

    @classmethod
    def from_amqp(
        cls,
        message_id: str | None = None,
        type: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        timestamp: datetime | float | None = None,
        app_id: str | None = None,
    ) -> Envelope:
        """The envelope of a consumed message; InvalidEnvelope if it cannot be one of ours."""
        headers = headers or {}
        message_type = _text(type)
        if message_type is None:
            raise InvalidEnvelope("type property is missing")
        found_id = _text(message_id)
        if found_id is None:
            raise InvalidEnvelope("message_id property is missing", message_type)
        return cls(
            message_id=found_id,
            type=message_type,
            version=_version(headers.get(VERSION_HEADER), message_type),
            correlation_id=_text(correlation_id) or found_id,
            causation_id=_text(headers.get(CAUSATION_HEADER)),
            occurred_at=_occurred_at(timestamp, message_type),
            producer=_text(app_id) or UNKNOWN_PRODUCER,
        )


def _version(value: object, message_type: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = _text(value)
    if text is None:
        raise InvalidEnvelope(f"{VERSION_HEADER} header is missing", message_type)
    if not re.fullmatch(r"[0-9]+", text.strip()):
        raise InvalidEnvelope(f"{VERSION_HEADER} header {value!r} is not an int", message_type)
    return int(text)


def _occurred_at(timestamp: object, message_type: str) -> datetime:
    if timestamp is None:
        return _now()
    if isinstance(timestamp, datetime):
        # AMQP timestamps are seconds since the epoch, UTC: a naive one is UTC.
        return timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        try:
            return datetime.fromtimestamp(timestamp, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    raise InvalidEnvelope(f"timestamp {timestamp!r} is not a time", message_type)


@dataclass(frozen=True, slots=True)
class Received:
    """A message as it arrived: the cause of what its handler sends, and what a handler may
    need besides the body (a projection orders an aggregate's events by the stream version
    in their headers)."""

    envelope: Envelope
    headers: Mapping[str, Any]
