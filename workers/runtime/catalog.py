"""The services of this fleet, by name, and where each one's ``Service`` is declared.

The runtime knows services only by these names: a service's package is imported when it is
loaded, never at import time here, so the runtime imports no service (and ``fleet --help``
reads the names without loading any).

A new service: its package under ``workers/``, a line in ``MODULES``, its migrations under
``db/migrations/<name>`` (README, "Where to add a service").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.runtime.service import Service

# service name -> the module whose ``service`` attribute is its Service. Every service owns
# one database (DESIGN.md's Domain table); the order here is the order of `fleet up`.
MODULES: dict[str, str] = {
    "order": "workers.order.handlers",
    "inventory": "workers.inventory.handlers",
    "payment": "workers.payment.handlers",
    "shipping": "workers.shipping.handlers",
    "orchestrator": "workers.orchestrator.handlers",
    "order_view": "workers.order_view.handlers",
}
SERVICES: tuple[str, ...] = tuple(MODULES)


class UnknownService(ValueError):
    pass


def load(name: str) -> Service:
    if name not in MODULES:
        raise UnknownService(f"unknown service {name!r}; services are {', '.join(SERVICES)}")
    service: Service = importlib.import_module(MODULES[name]).service
    return service


def load_all() -> list[Service]:
    return [load(name) for name in SERVICES]
