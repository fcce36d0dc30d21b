"""The inventory's handlers: decode (done by the runtime), decide (domain), write + emit."""

from __future__ import annotations

from contracts import (
    OrderPlacedV2,
    PaymentFailed,
    ReleaseStock,
    ReserveStock,
    ShipmentFailed,
    StockReleased,
    StockReservationFailed,
    StockReserved,
    command_or_choreography,
)
from db.unit_of_work import UnitOfWork
from workers.inventory import domain, store
from workers.runtime.service import Service

service = Service(
    "inventory", emits=("stock.reserved", "stock.reservation_failed", "stock.released")
)


@service.handler(when=command_or_choreography)
async def reserve_stock(uow: UnitOfWork, command: ReserveStock | OrderPlacedV2) -> None:
    """All lines or none; out of stock or an unknown SKU is a refusal event, not an error.
    In choreography the reservation follows ``order.placed``; an orchestrated order waits
    for the orchestrator's command."""
    await uow.lock(command.order_id)
    lines = domain.merge_lines(domain.Line(item.sku, item.quantity) for item in command.items)
    existing, available = await store.load_for_reserving(
        uow.conn, command.order_id, [line.sku for line in lines]
    )
    decision = domain.decide_reservation(existing, available, lines)
    if isinstance(decision, domain.Refuse):
        if decision.new:
            await store.refuse(uow.conn, command.order_id, decision.reason)
        uow.emit(
            StockReservationFailed(
                order_id=command.order_id,
                reason=decision.reason,
                saga=command.saga,
                customer_id=command.customer_id,
            )
        )
        return
    if isinstance(decision, domain.Reserve):
        await store.reserve(uow.conn, command.order_id, decision.lines)
    # Reserved now or before: answer the same, so a repeated command gets its reply again.
    uow.emit(
        StockReserved(
            order_id=command.order_id,
            items=command.items,
            saga=command.saga,
            customer_id=command.customer_id,
            total=command.total,
            country=command.country,
        )
    )


@service.handler(when=command_or_choreography)
async def release_stock(
    uow: UnitOfWork, command: ReleaseStock | PaymentFailed | ShipmentFailed
) -> None:
    """Give the order's stock back; before any reservation, leave a tombstone instead.
    In choreography a failed payment or shipment releases the stock."""
    await uow.lock(command.order_id)
    existing = await store.load_reservation(uow.conn, command.order_id)
    decision = domain.decide_release(existing)
    if isinstance(decision, domain.Release):
        await store.release(uow.conn, command.order_id, decision.lines, command.reason)
    elif isinstance(decision, domain.LeaveTombstone):
        await store.leave_tombstone(uow.conn, command.order_id, command.reason)
    uow.emit(StockReleased(order_id=command.order_id, saga=command.saga))
