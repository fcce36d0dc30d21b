"""The order's wiring: each handler is a decision of ``domain`` on the order streams
``store.load_orders`` reads, appended by ``store.write_orders``; the replay reads pages of
the store (``store.load_pages``) and writes nothing.

The runtime holds each order's lock while its batch decides, so two handlers never decide
on one version of an order. A writer that appended to the stream all the same collides on
the stream's primary key: the batch is rolled back (``ConcurrencyConflict``, transient) and
its message retried, when it decides again on that writer's outcome.

In orchestration only the orchestrator's commands confirm and reject orders: the other
services' events are left, acknowledged, to the orchestrator (``command_or_choreography``).
"""

from __future__ import annotations

from contracts import command_or_choreography
from workers.order import domain, store
from workers.order.settings import OrderSettings
from workers.runtime.service import Service

service = Service(
    "order",
    settings=OrderSettings,
    emits=(
        "order.placed",
        "order.confirmed",
        "order.rejected",
        "order.replay_events",  # the next page of a replay, to itself
        # not order.events_replayed: it goes to <ns>.replays only, which emits cannot say
    ),
)


# A PlaceOrder may leave its order id to us: its lock is the order it places.
service.handler(
    domain.place_order, load=store.load_orders, write=store.write_orders, key=domain.order_id_for
)
service.handler(domain.replay_events, load=store.load_pages)
service.handler(
    domain.confirm_order,
    load=store.load_orders,
    write=store.write_orders,
    when=command_or_choreography,
)
service.handler(
    domain.reject_order,
    load=store.load_orders,
    write=store.write_orders,
    when=command_or_choreography,
)
