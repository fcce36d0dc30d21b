"""The shipping's wiring: each handler is a decision of ``domain`` on the shipments
``store.load_shipments`` reads, written back by ``store.write_shipments``."""

from __future__ import annotations

from contracts import command_or_choreography
from workers.runtime.service import Service
from workers.shipping import domain, store
from workers.shipping.settings import ShippingSettings

service = Service(
    "shipping",
    settings=ShippingSettings,
    emits=("shipment.created", "shipment.failed", "shipment.cancelled"),
)

service.handler(
    domain.create_shipment,
    load=store.load_shipments,
    write=store.write_shipments,
    when=command_or_choreography,
)
# Only the orchestrator cancels a shipment: choreography has no step after it.
service.handler(domain.cancel_shipment, load=store.load_shipments, write=store.write_shipments)
