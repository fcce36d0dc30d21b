"""Pausing and resuming handlers: ``fleet pause SERVICE[.HANDLER]``, ``fleet resume``.

A target is a service (every handler it has) or one handler, ``service.handler``, as the
catalog names them. A paused handler's consumers stop taking messages, which wait in its
queue; its workers stay connected (``workers.runtime.control`` says how they hear it).

    state = await pause(settings, "inventory.reserve_stock")
    state.changed    # ("inventory.reserve_stock",), or () when it was paused already
    state.paused     # every paused handler of the fleet now
    await resume(settings, "inventory")
    await paused(settings)

Pausing what is paused, or resuming what is not, changes nothing, is no error, and is not
recorded; every change is, as ``pause`` or ``resume`` in the audit log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractConnection

from workers.operations import InvalidRequest, ops_db
from workers.runtime import catalog, connections, control
from workers.runtime.service import Handler, Service
from workers.runtime.settings import Settings

PAUSE = "pause"
RESUME = "resume"


@dataclass(frozen=True)
class PauseState:
    """What a pause or a resume did: the handlers its target names, those whose state it
    changed (the others were so already), and every paused handler afterwards."""

    action: str  # PAUSE or RESUME
    target: str
    handlers: tuple[str, ...]
    changed: tuple[str, ...]
    paused: tuple[str, ...]

    @property
    def unchanged(self) -> tuple[str, ...]:
        return tuple(name for name in self.handlers if name not in self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "target": self.target,
            "handlers": list(self.handlers),
            "changed": list(self.changed),
            "unchanged": list(self.unchanged),
            "paused": list(self.paused),
        }


def handler_names(services: Iterable[Service]) -> dict[str, tuple[str, ...]]:
    """Service name -> the names of its handlers, in declaration order."""
    return {service.name: tuple(h.name for h in service.handlers) for service in services}


def resolve_target(target: str, handlers: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The handlers (``service.handler``) that ``target`` names: a service's every handler,
    or the one named; ``handlers`` maps each service to its handlers' names. Anything else
    is an InvalidRequest naming what exists."""
    service, dot, handler = target.partition(".")
    if not service:
        raise InvalidRequest(
            f"no service in {target!r}: give SERVICE or SERVICE.HANDLER;"
            f" services are {', '.join(handlers)}"
        )
    if service not in handlers:
        raise InvalidRequest(f"unknown service {service!r}; services are {', '.join(handlers)}")
    known = handlers[service]
    if not dot:
        return tuple(f"{service}.{name}" for name in known)
    if handler not in known:
        raise InvalidRequest(
            f"{service} has no handler {handler!r}; its handlers are {', '.join(known)}"
        )
    return (f"{service}.{handler}",)


def _catalog_handlers() -> tuple[dict[str, Handler], dict[str, tuple[str, ...]]]:
    """Every handler of the fleet by its name (``service.handler``), and the names by
    service."""
    services = catalog.load_all()
    by_name = {handler.consumer: handler for service in services for handler in service.handlers}
    return by_name, handler_names(services)


async def paused(settings: Settings) -> tuple[str, ...]:
    """Every paused handler of the fleet (``service.handler``), in the catalog's order."""
    by_name, _ = _catalog_handlers()
    queues = {name: handler.queue(settings.namespace) for name, handler in by_name.items()}
    connection = await connections.connect(settings.broker_urls)
    try:
        paused_queues = await control.paused_queues(connection, queues.values())
    finally:
        await connection.close()
    return tuple(name for name, queue in queues.items() if queue in paused_queues)


async def pause(settings: Settings, target: str, *, operator: str) -> PauseState:
    """Pause the handlers ``target`` names (a service, or ``service.handler``)."""
    return await _change(settings, target, PAUSE, operator)


async def resume(settings: Settings, target: str, *, operator: str) -> PauseState:
    """Resume the handlers ``target`` names; those not paused are left as they are."""
    return await _change(settings, target, RESUME, operator)


async def _change(settings: Settings, target: str, action: str, operator: str) -> PauseState:
    by_name, names_by_service = _catalog_handlers()
    named = resolve_target(target, names_by_service)
    queues = {name: handler.queue(settings.namespace) for name, handler in by_name.items()}
    pausing = action == PAUSE
    # One change at a time across operators: what was paused before is read under the lock.
    async with ops_db.connect(settings, transaction=True) as conn:
        await ops_db.lock(conn, "pause")
        connection = await connections.connect(settings.broker_urls)
        try:
            if not pausing:
                await _refuse_resuming_a_tripped_breaker(settings, connection, named)
            before = await control.paused_queues(connection, queues.values())
            changed = tuple(name for name in named if (queues[name] in before) != pausing)
            changed_queues = {queues[name] for name in changed}
            after = before | changed_queues if pausing else before - changed_queues
            now_paused = tuple(name for name, queue in queues.items() if queue in after)
            if changed:
                # Recorded first, committed last: if the broker refuses, neither stays.
                await ops_db.record(
                    conn,
                    action=action,
                    target=target,
                    count=len(changed),
                    operator=operator,
                    detail={"handlers": list(changed), "paused": list(now_paused)},
                )
                channel = await connection.channel()  # confirms the announcement
                for name in changed:
                    await control.set_paused(channel, queues[name], pausing)
                await control.announce(
                    channel,
                    settings.namespace,
                    {"action": action, "handlers": list(changed), "paused": list(now_paused)},
                )
        finally:
            await connection.close()
    return PauseState(action, target, named, changed, now_paused)


async def _refuse_resuming_a_tripped_breaker(
    settings: Settings, connection: AbstractConnection, named: Sequence[str]
) -> None:
    """A handler whose service's breaker is tripped resumes by itself once its dependency
    answers: an operator cannot resume it before (it would only fail)."""
    services = sorted({name.partition(".")[0] for name in named})
    tripped = await control.tripped_services(connection, settings.namespace, services)
    if tripped:
        service, outage = next(iter(tripped.items()))
        raise InvalidRequest(
            f"{service} is paused automatically: {outage.get('dependency', 'a dependency')}"
            f" unreachable since {outage.get('since', '?')}; it resumes by itself once that"
            " answers"
        )
