"""Broker middlewares (FastStream attaches them to the broker, so every subscriber has them)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import BaseMiddleware
from faststream.message import StreamMessage
from faststream.rabbit.response import RabbitPublishCommand

from db.unit_of_work import Cause, current_cause


class CorrelationMiddleware(BaseMiddleware):
    """While a message is handled, it is the cause of whatever the handler emits.

    The unit of work reads ``current_cause`` when a handler emits through the outbox, so
    every emitted message carries the handled message's correlation id and names it as its
    causation id. Direct FastStream publishes (not the fleet's way, but possible) are made
    persistent and given a message id, which FastStream never sets by itself.
    """

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        raw = msg.raw_message
        # FastStream invents a message id when there is none; the broker's own is the truth.
        message_id = getattr(raw, "message_id", None)
        cause = (
            Cause(message_id, getattr(raw, "correlation_id", None) or message_id)
            if message_id
            else None
        )
        token = current_cause.set(cause)
        try:
            return await call_next(msg)
        finally:
            current_cause.reset(token)

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        command = RabbitPublishCommand.from_cmd(cmd)
        command.message_options["persist"] = True
        if not command.message_options.get("message_id"):
            command.message_options["message_id"] = str(uuid.uuid4())
        return await call_next(command)
