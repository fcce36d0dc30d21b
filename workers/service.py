"""How a service declares its handlers: the one shape every service package uses.

    service = Service("inventory")

    @service.handler("inventory.reserve_stock", "order.placed")
    async def reserve_stock(uow: UnitOfWork, message: ReserveStock | OrderPlaced) -> None: ...

Each handler gets its own durable queue ``<ns>.<service>.<handler>`` bound to the types it
names, and its own inbox consumer name ``<service>.<handler>``; it receives the message
already decoded and upcast to the newest version, inside a unit of work whose inbox entry,
state and outbox rows commit together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contracts import registry
from contracts.routing import exchange_for, replays_exchange
from db.unit_of_work import UnitOfWork
from workers.topology import QueueSpec

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from workers.settings import Settings

HandlerFunction = Callable[[UnitOfWork, Any], Awaitable[None]]
# Work a service does besides handling messages (the orchestrator's deadline watcher): runs
# from the worker's start until ``stop`` is set.
BackgroundTask = Callable[["Settings", "AsyncEngine", asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Handler:
    service: str
    name: str
    types: tuple[str, ...]
    apply: HandlerFunction
    # True: the queue takes what event stores replay to this service (the replays exchange,
    # routing key = the service's name), not the live events of ``types``.
    from_replays: bool = False

    @property
    def consumer(self) -> str:
        """The name under which this handler's inbox remembers messages."""
        return f"{self.service}.{self.name}"

    def queue(self, namespace: str) -> str:
        return f"{namespace}.{self.service}.{self.name}"

    def queue_spec(self, namespace: str) -> QueueSpec:
        if self.from_replays:
            return QueueSpec(self.queue(namespace), ((replays_exchange(namespace), self.service),))
        return QueueSpec(
            self.queue(namespace),
            tuple((exchange_for(namespace, registry.kind(t)), t) for t in self.types),
        )


@dataclass
class Service:
    name: str
    handlers: list[Handler] = field(default_factory=list)
    background: list[BackgroundTask] = field(default_factory=list)
    # The types this service's handlers (and background tasks) emit, for the AsyncAPI
    # document; tests/unit/test_asyncapi.py checks them against what the code constructs.
    emits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for type_ in self.emits:
            registry.latest_version(type_)  # fail at import on a type with no contract

    def handler(
        self, *types: str, name: str | None = None, from_replays: bool = False
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        for type_ in types:
            registry.latest_version(type_)  # fail at import on a type with no contract

        def register(function: HandlerFunction) -> HandlerFunction:
            handler_name = name or function.__name__
            if any(h.name == handler_name for h in self.handlers):
                raise ValueError(f"{self.name} already has a handler named {handler_name}")
            self.handlers.append(
                Handler(self.name, handler_name, types, function, from_replays=from_replays)
            )
            return function

        return register

    def queue_specs(self, namespace: str) -> list[QueueSpec]:
        return [handler.queue_spec(namespace) for handler in self.handlers]
