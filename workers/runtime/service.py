"""How a service declares its handlers: the one shape every service package uses.

    service = Service("inventory", emits=("stock.reserved", ...))

    @service.handler(when=command_or_choreography)
    async def reserve_stock(uow: UnitOfWork, message: ReserveStock | OrderPlacedV2) -> None: ...

The message parameter's annotation (a contract class, or a union of them) says what the
handler reads: its queue ``<ns>.<service>.<handler>`` is bound to those types, and each class
must be the newest version of its type, because the runtime decodes and upcasts every
message to the newest before the handler sees it. ``when`` is a filter the runtime applies
after decoding and before any transaction: a message it refuses is acknowledged with no
transaction and no inbox row. A handler that needs its service's own settings takes them as
a third parameter, annotated with the class the service declares.

The handler runs inside a unit of work whose inbox entry (consumer ``<service>.<handler>``),
state and outbox rows commit together.
"""

from __future__ import annotations

import asyncio
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contracts import Message, registry
from contracts.routing import exchange_for, replays_exchange
from db.unit_of_work import UnitOfWork
from workers.runtime.settings import ServiceSettings
from workers.runtime.topology import QueueSpec

if TYPE_CHECKING:
    import asyncpg
    from aio_pika.abc import AbstractConnection

    from workers.runtime.settings import Settings

HandlerFunction = Callable[..., Awaitable[None]]
# Which decoded messages a handler takes (True) or leaves, acknowledged, to others (False).
MessageFilter = Callable[[Message], bool]
# Work a service does besides handling messages (the orchestrator's deadline watcher): runs
# from the worker's start until ``stop`` is set, given the settings, the service's own
# section (None when it declares none) and the pool of its database's connections.
BackgroundTask = Callable[
    ["Settings", Any, "asyncpg.Pool", asyncio.Event], Coroutine[Any, Any, None]
]


# Gauges of a service's own (the orchestrator's sagas, the view's lag), set by the worker's
# metrics sampler every FLEET_METRICS_INTERVAL seconds: given the settings, a connection to
# the service's database and one to the broker.
Sampler = Callable[
    ["Settings", "asyncpg.Connection", "AbstractConnection"], Coroutine[Any, Any, None]
]


class DeclarationError(TypeError):
    """A handler whose signature does not say what it reads (raised at import)."""


@dataclass(frozen=True)
class Handler:
    service: str
    name: str
    # The contract classes the handler reads (the newest version of each type), in the
    # order of its annotation.
    models: tuple[type[Message], ...]
    function: HandlerFunction
    when: MessageFilter | None = None
    # True: the function's third parameter takes the service's settings section.
    takes_settings: bool = False
    # True: the queue takes what event stores replay to this service (the replays exchange,
    # routing key = the service's name), not the live events of ``types``.
    from_replays: bool = False

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(model.TYPE for model in self.models)

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
            tuple((exchange_for(namespace, model.KIND), model.TYPE) for model in self.models),
        )

    def accepts(self, message: Message) -> bool:
        return self.when is None or self.when(message)

    async def apply(
        self, uow: UnitOfWork, message: Message, section: ServiceSettings | None
    ) -> None:
        if self.takes_settings:
            await self.function(uow, message, section)
        else:
            await self.function(uow, message)


@dataclass
class Service:
    name: str
    # The service's own settings section, if it has knobs of its own.
    settings: type[ServiceSettings] | None = None
    # The types this service's handlers (and background tasks) emit, for the AsyncAPI
    # document; tests/unit/test_asyncapi.py checks them against what the code constructs.
    emits: tuple[str, ...] = ()
    handlers: list[Handler] = field(default_factory=list)
    background: list[BackgroundTask] = field(default_factory=list)
    samplers: list[Sampler] = field(default_factory=list)

    def __post_init__(self) -> None:
        for type_ in self.emits:
            registry.latest_version(type_)  # fail at import on a type with no contract

    def handler(
        self,
        *,
        name: str | None = None,
        when: MessageFilter | None = None,
        from_replays: bool = False,
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        def register(function: HandlerFunction) -> HandlerFunction:
            handler_name = name or function.__name__
            if any(h.name == handler_name for h in self.handlers):
                raise DeclarationError(f"{self.name} already has a handler named {handler_name}")
            models, takes_settings = self._read_signature(function)
            self.handlers.append(
                Handler(
                    self.name,
                    handler_name,
                    models,
                    function,
                    when=when,
                    takes_settings=takes_settings,
                    from_replays=from_replays,
                )
            )
            return function

        return register

    def handler_named(self, name: str) -> Handler:
        for handler in self.handlers:
            if handler.name == name:
                return handler
        raise KeyError(f"{self.name} has no handler named {name}")

    def section(self) -> ServiceSettings | None:
        """The service's settings section as the environment gives it."""
        return self.settings() if self.settings is not None else None

    def queue_specs(self, namespace: str) -> list[QueueSpec]:
        return [handler.queue_spec(namespace) for handler in self.handlers]

    def _read_signature(self, function: HandlerFunction) -> tuple[tuple[type[Message], ...], bool]:
        """(the message classes, whether it takes the settings) from the annotations."""
        where = f"handler {self.name}.{function.__name__}"
        parameters = list(inspect.signature(function).parameters)
        if len(parameters) not in (2, 3):
            raise DeclarationError(f"{where} must take (uow, message) or (uow, message, settings)")
        hints = typing.get_type_hints(function)
        annotation = hints.get(parameters[1])
        members = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
        models: list[type[Message]] = []
        for member in members:
            if not (isinstance(member, type) and issubclass(member, Message)):
                raise DeclarationError(
                    f"{where}: its message parameter must be annotated with contract classes"
                    f" (one, or a union), not {member!r}"
                )
            newest = registry.model_for(member.TYPE, registry.latest_version(member.TYPE))
            if newest is not member:
                raise DeclarationError(
                    f"{where} reads {member.__name__}, but the runtime hands handlers the"
                    f" newest version of {member.TYPE}: {newest.__name__}"
                )
            models.append(member)
        if len(parameters) == 3:
            wanted = hints.get(parameters[2])
            if self.settings is None or wanted is not self.settings:
                declared = self.settings.__name__ if self.settings else "no settings"
                raise DeclarationError(
                    f"{where} asks for {wanted!r} as settings; service {self.name} declares"
                    f" {declared}"
                )
        return tuple(models), len(parameters) == 3


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)
