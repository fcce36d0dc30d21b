"""Where a message goes on the broker: part of the contract between services.

Events go to the topic exchange ``<ns>.events`` with routing key = type; commands go to
``<ns>.commands`` with routing key ``<service>.<command>``, which is also their type. A
replay of stored events goes to ``<ns>.replays`` with routing key = the read model's name.
"""

from __future__ import annotations

from contracts.base import MessageKind


def events_exchange(namespace: str) -> str:
    return f"{namespace}.events"


def commands_exchange(namespace: str) -> str:
    return f"{namespace}.commands"


def replays_exchange(namespace: str) -> str:
    """A direct exchange: a replay of an event store goes to one read model only, routed by
    the read model's name (``ReplayOrderEvents.target``)."""
    return f"{namespace}.replays"


def exchange_for(namespace: str, kind: MessageKind) -> str:
    return events_exchange(namespace) if kind == "event" else commands_exchange(namespace)
