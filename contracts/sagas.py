"""Who acts on a saga's messages. Every saga message names its saga's style, and each handler
declares with one of these which messages are its business; the runtime applies it after
decoding and before any transaction, so a message of the other style is acknowledged
without a transaction or an inbox row.

In choreography the services react to each other's events; in orchestration the
orchestrator reacts to them and sends the services commands.
"""

from __future__ import annotations

from contracts.base import Message


def command_or_choreography(message: Message) -> bool:
    """A service's share: every command sent to it, and the events of choreographed sagas."""
    return message.KIND == "command" or getattr(message, "saga", None) == "choreography"


def not_choreography(message: Message) -> bool:
    """The orchestrator's share: every message not of a choreographed saga. A message with
    no style (an event stored before its contract said it) is let through: the
    orchestrator then finds whether it runs a saga for the order."""
    return getattr(message, "saga", None) != "choreography"
