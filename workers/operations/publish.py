"""``fleet publish``: test messages straight to the broker, confirmed, valid or deliberately
not (``raw``: the body as given, unvalidated, to see how the fleet treats a bad message)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pydantic
from aiormq.exceptions import PublishError

from contracts import Envelope, OutgoingMessage, registry
from contracts.registry import summarize
from contracts.routing import commands_exchange, events_exchange, exchange_for
from workers.operations import InvalidRequest, OperatorError
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.settings import Settings

EXCHANGES = ("events", "commands")


@dataclass(frozen=True)
class TestMessage:
    """What to send: a body of ``type`` v``version`` to ``exchange``, keyed by the type."""

    type: str
    version: int
    exchange: str
    body: bytes


def prepare(
    settings: Settings,
    type_: str,
    data: str,
    *,
    version: int | None = None,
    raw: bool = False,
    exchange: str | None = None,
) -> TestMessage:
    """The message to send, checked against its contract unless ``raw``; InvalidRequest
    names what is wrong."""
    known = type_ in registry.types()
    if raw:
        chosen = version or (registry.latest_version(type_) if known else 1)
        body = data.encode()
    else:
        if not known:
            raise InvalidRequest(f"unknown message type {type_!r} (use --raw to send it anyway)")
        chosen = version or registry.latest_version(type_)
        try:
            parsed = json.loads(data)
        except json.JSONDecodeError as error:
            raise InvalidRequest(f"--data is not JSON: {error}") from None
        model = registry.model_for(type_, chosen)
        try:
            body = registry.encode(model.model_validate(parsed))
        except pydantic.ValidationError as error:
            reason = summarize(error)
            raise InvalidRequest(f"--data is not a valid {type_} v{chosen}: {reason}") from None
    if exchange is None:
        ns = settings.namespace
        target = exchange_for(ns, registry.kind(type_)) if known else events_exchange(ns)
    elif exchange in EXCHANGES:
        target = (events_exchange if exchange == "events" else commands_exchange)(
            settings.namespace
        )
    else:
        raise InvalidRequest(f"--exchange must be events or commands, not {exchange!r}")
    return TestMessage(type_, chosen, target, body)


async def publish(
    settings: Settings,
    message: TestMessage,
    *,
    count: int = 1,
    correlation_id: str | None = None,
    message_id: str | None = None,
) -> list[str | None]:
    """Send ``message`` ``count`` times, each confirmed; the message ids sent (one id
    ``count`` times when ``message_id`` is given: duplicates on purpose)."""
    publisher = await ConfirmedPublisher.connect(settings.broker_urls)
    sent: list[str | None] = []
    try:
        for _ in range(count):
            envelope = Envelope.new(
                message.type,
                message.version,
                "fleet-cli",
                correlation_id=correlation_id,
                message_id=message_id,
            )
            outgoing = OutgoingMessage.of(
                envelope, message.body, exchange=message.exchange, routing_key=message.type
            )
            await publisher.publish(outgoing)
            sent.append(outgoing.message_id)
    except PublishError:
        raise OperatorError(
            f"no queue is bound for {message.type} on {message.exchange}:"
            " start a worker or run 'fleet topology'"
        ) from None
    finally:
        await publisher.close()
    return sent
