"""How a service declares its handlers: the one shape every service package uses.

    service = Service("inventory", emits=("stock.reserved", ...))
    service.handler(
        domain.reserve_stock,          # decide: (state, message) -> Decision, pure
        load=store.load_stock,         # async (conn, messages) -> state, one statement a kind
        write=store.write_stock,       # async (conn, changes), one statement a kind of row
        when=command_or_choreography,  # which messages are this handler's business
    )

The runtime (``workers.runtime.consumer``) handles a batch of a queue's deliveries in one
transaction: it records them in the inbox (a duplicate stops there), takes the lock of each
message's order (``key``), calls *load* once for the whole batch, *decide* for each message
in delivery order (each sees the changes of those before it, ``State.apply``), *write* once
with all the changes, and puts the messages the decisions send in the outbox; then commits,
then acks. A handler with nothing to load leaves ``load`` out, and its decide takes the
message alone; one with nothing to store leaves ``write`` out.

Decide's message parameter's annotation (a contract class, or a union of them) says what
the handler reads: its queue ``<ns>.<service>.<handler>`` is bound to those types, and each
class must be the newest version of its type, because the runtime decodes and upcasts every
message to the newest before the handler sees it. ``when`` is a filter the runtime applies
after decoding and before any transaction: a message it refuses is acknowledged with no
transaction and no inbox row.

Decide and load may ask for more by keyword-only parameters, named for what they get:
``settings`` (the service's own settings section, annotated with the class the service
declares) and, for decide, ``received`` (the message's envelope and headers).
"""

from __future__ import annotations

import asyncio
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contracts import Message, Received, registry
from contracts.routing import exchange_for, replays_exchange
from workers.runtime.decision import Decision
from workers.runtime.settings import ServiceSettings
from workers.runtime.topology import QueueSpec

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection

    from db.store import Store
    from workers.runtime.outages import OutOfReach
    from workers.runtime.settings import Settings

# The three parts of a handler (their keyword-only extras aside).
Decide = Callable[..., Decision[Any]]
Load = Callable[..., Awaitable[Any]]  # (conn, messages) -> the batch's state
# conn: the engine's connection (asyncpg's, or db.mariadb.MariaConnection), in the batch's
# transaction.
Write = Callable[[Any, Sequence[Any]], Awaitable[None]]
# What a handler does once its batch has committed (metrics of what happened).
AfterCommit = Callable[[Sequence[Any]], None]
# Which decoded messages a handler takes (True) or leaves, acknowledged, to others (False).
MessageFilter = Callable[[Message], bool]
# The order a message is about: the runtime holds its lock from before load to commit.
# (Any: a handler's key reads the message types of its own annotation.)
LockKey = Callable[[Any], str | None]
# Work a service does besides handling messages (the orchestrator's deadline watcher): runs
# from the worker's start until ``stop`` is set, given the settings, the service's own
# section (None when it declares none), the store of its database and what
# the worker knows of outages (``workers.runtime.outages.OutOfReach``).
BackgroundTask = Callable[
    ["Settings", Any, "Store", asyncio.Event, "OutOfReach"], Coroutine[Any, Any, None]
]


# Gauges of a service's own (the orchestrator's sagas, the view's lag), set by the worker's
# metrics sampler every FLEET_METRICS_INTERVAL seconds: given the settings, a connection to
# the service's database and one to the broker.
Sampler = Callable[["Settings", Any, "AbstractConnection"], Coroutine[Any, Any, None]]


def order_of(message: Message) -> str | None:
    """The default lock key: the order a saga message names."""
    order_id = getattr(message, "order_id", None)
    return order_id if isinstance(order_id, str) else None


class DeclarationError(TypeError):
    """A handler whose signature does not say what it reads (raised at import)."""


@dataclass(frozen=True)
class Handler:
    service: str
    name: str
    # The contract classes the handler reads (the newest version of each type), in the
    # order of its annotation.
    models: tuple[type[Message], ...]
    decide: Decide
    load: Load | None = None
    write: Write | None = None
    when: MessageFilter | None = None
    key: LockKey = order_of
    after_commit: AfterCommit | None = None
    # True: the queue takes what event stores replay to this service (the replays exchange,
    # routing key = the service's name), not the live events of ``types``.
    from_replays: bool = False
    # The keyword-only extras decide and load asked for (read once, at declaration).
    decide_wants: frozenset[str] = frozenset()
    load_wants: frozenset[str] = frozenset()

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

    # --- What the runtime calls, in this order, in a batch's transaction. ---------------

    async def load_state(
        self,
        conn: Any,
        messages: Sequence[Message],
        section: ServiceSettings | None,
    ) -> Any:
        """The state the batch's decisions start from (None for a handler without load)."""
        if self.load is None:
            return None
        if "settings" in self.load_wants:
            return await self.load(conn, messages, settings=section)
        return await self.load(conn, messages)

    def decision(
        self,
        state: Any,
        message: Message,
        received: Received,
        section: ServiceSettings | None,
    ) -> Decision[Any]:
        extras: dict[str, Any] = {}
        if "settings" in self.decide_wants:
            extras["settings"] = section
        if "received" in self.decide_wants:
            extras["received"] = received
        if self.load is None:
            return self.decide(message, **extras)
        return self.decide(state, message, **extras)

    async def store(self, conn: Any, changes: Sequence[Any]) -> None:
        if self.write is not None and changes:
            await self.write(conn, changes)


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
        decide: Decide,
        *,
        load: Load | None = None,
        write: Write | None = None,
        name: str | None = None,
        when: MessageFilter | None = None,
        key: LockKey = order_of,
        after_commit: AfterCommit | None = None,
        from_replays: bool = False,
    ) -> Handler:
        """Declare a handler (see the module's docstring); its name is decide's unless
        given, and names its queue and its inbox."""
        handler_name = name or decide.__name__
        if any(h.name == handler_name for h in self.handlers):
            raise DeclarationError(f"{self.name} already has a handler named {handler_name}")
        where = f"handler {self.name}.{handler_name}"
        models, decide_wants = self._read_decide(where, decide, takes_state=load is not None)
        load_wants = self._read_extras(where, load, ("conn", "messages"), {"settings"})
        self._read_extras(where, write, ("conn", "changes"), set())
        handler = Handler(
            self.name,
            handler_name,
            models,
            decide,
            load=load,
            write=write,
            when=when,
            key=key,
            after_commit=after_commit,
            from_replays=from_replays,
            decide_wants=decide_wants,
            load_wants=load_wants,
        )
        self.handlers.append(handler)
        return handler

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

    def _read_decide(
        self, where: str, decide: Decide, *, takes_state: bool
    ) -> tuple[tuple[type[Message], ...], frozenset[str]]:
        """(the message classes, the extras it asks for) from decide's signature."""
        positional = 2 if takes_state else 1
        shape = ("state", "message") if takes_state else ("message",)
        wants = self._read_extras(where, decide, shape, {"settings", "received"})
        parameters = list(inspect.signature(decide).parameters)
        hints = typing.get_type_hints(decide)
        annotation = hints.get(parameters[positional - 1])
        members = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
        models: list[type[Message]] = []
        for member in members:
            if not (isinstance(member, type) and issubclass(member, Message)):
                raise DeclarationError(
                    f"{where}: decide's message parameter must be annotated with contract"
                    f" classes (one, or a union), not {member!r}"
                )
            newest = registry.model_for(member.TYPE, registry.latest_version(member.TYPE))
            if newest is not member:
                raise DeclarationError(
                    f"{where} reads {member.__name__}, but the runtime hands handlers the"
                    f" newest version of {member.TYPE}: {newest.__name__}"
                )
            models.append(member)
        if "settings" in wants:
            wanted = hints.get("settings")
            if self.settings is None or wanted is not self.settings:
                declared = self.settings.__name__ if self.settings else "no settings"
                raise DeclarationError(
                    f"{where} asks for {wanted!r} as settings; service {self.name} declares"
                    f" {declared}"
                )
        return tuple(models), wants

    def _read_extras(
        self,
        where: str,
        function: Callable[..., Any] | None,
        shape: tuple[str, ...],
        allowed: set[str],
    ) -> frozenset[str]:
        """The keyword-only parameters ``function`` asks for, after the positional ones
        ``shape`` names (a decide without load takes the message alone)."""
        if function is None:
            return frozenset()
        parameters = inspect.signature(function).parameters.values()
        plain = [p for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        extras = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
        name = getattr(function, "__name__", repr(function))
        if len(plain) != len(shape):
            raise DeclarationError(
                f"{where}: {name} must take ({', '.join(shape)}), then keywords only"
            )
        unknown = extras - allowed
        if unknown:
            raise DeclarationError(
                f"{where}: {name} asks for {', '.join(sorted(unknown))}; it may ask for"
                f" {', '.join(sorted(allowed)) or 'nothing more'}"
            )
        return frozenset(extras)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)
