"""The inventory's wiring: each handler is a decision of ``domain`` on the stock
``store.load_stock`` reads, written back by ``store.write_stock``."""

from __future__ import annotations

from contracts import command_or_choreography
from workers.inventory import domain, store
from workers.runtime.service import Service

service = Service(
    "inventory", emits=("stock.reserved", "stock.reservation_failed", "stock.released")
)

service.handler(
    domain.reserve_stock,
    load=store.load_stock,
    write=store.write_stock,
    when=command_or_choreography,
)
service.handler(
    domain.release_stock,
    load=store.load_stock,
    write=store.write_stock,
    when=command_or_choreography,
)
