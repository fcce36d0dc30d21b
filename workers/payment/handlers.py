"""The payment's wiring: each handler is a decision of ``domain`` on the books
``store.load_books`` reads, written back by ``store.write_books``."""

from __future__ import annotations

from contracts import command_or_choreography
from workers.payment import domain, store
from workers.runtime.service import Service

service = Service("payment", emits=("payment.completed", "payment.failed", "payment.refunded"))

service.handler(
    domain.charge_payment,
    load=store.load_books,
    write=store.write_books,
    when=command_or_choreography,
)
service.handler(
    domain.refund_payment,
    load=store.load_books,
    write=store.write_books,
    when=command_or_choreography,
)
