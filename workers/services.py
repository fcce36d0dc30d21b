"""The services this fleet can run, by name."""

from __future__ import annotations

import importlib

from workers.service import Service
from workers.settings import SERVICES

# service name -> module whose ``service`` attribute is its Service.
_MODULES = {
    "inventory": "workers.inventory.handlers",
    "order": "workers.order.handlers",
    "payment": "workers.payment.handlers",
    "shipping": "workers.shipping.handlers",
    "orchestrator": "workers.orchestrator.handlers",
    "order_view": "workers.order_view.handlers",
}


class UnknownService(ValueError):
    pass


def runnable() -> list[str]:
    return [name for name in SERVICES if name in _MODULES]


def load(name: str) -> Service:
    if name not in SERVICES:
        raise UnknownService(f"unknown service {name!r}; services are {', '.join(SERVICES)}")
    if name not in _MODULES:
        raise UnknownService(
            f"service {name!r} has no worker yet; runnable: {', '.join(runnable())}"
        )
    service: Service = importlib.import_module(_MODULES[name]).service
    return service


def load_all() -> list[Service]:
    return [load(name) for name in runnable()]
