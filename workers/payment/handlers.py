"""The payment's handlers: decode (done by the runtime), decide (domain), write + emit."""

from __future__ import annotations

import uuid
from decimal import Decimal

from contracts import (
    ChargePayment,
    Money,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    RefundPayment,
    ShipmentFailed,
    StockReserved,
    command_or_choreography,
)
from db.unit_of_work import UnitOfWork
from workers.payment import domain, store
from workers.runtime.errors import PermanentError
from workers.runtime.service import Service

service = Service("payment", emits=("payment.completed", "payment.failed", "payment.refunded"))


def _money(amount: Decimal, currency: str) -> Money:
    return Money.of(format(amount, "f"), currency)


def _new_payment_id() -> str:
    return str(uuid.uuid4())


@service.legacy_handler(when=command_or_choreography)
async def charge_payment(uow: UnitOfWork, message: ChargePayment | StockReserved) -> None:
    """Charge once per order; insufficient funds, an unknown customer or another currency
    than the account's is a refusal event, not an error. In choreography the charge follows
    ``stock.reserved``; an orchestrated ``stock.reserved`` is the orchestrator's to act on."""
    amount = message.total if isinstance(message, StockReserved) else message.amount
    order_id = message.order_id
    await uow.lock(order_id)
    existing = await store.load_payment(uow.conn, order_id)
    account = await store.lock_account(uow.conn, message.customer_id) if existing is None else None
    decision = domain.decide_charge(
        existing, account, message.customer_id, amount.amount, amount.currency
    )
    if isinstance(decision, domain.Refuse):
        if decision.new:
            await store.refuse(
                uow.conn,
                order_id,
                _new_payment_id(),
                message.customer_id,
                decision.amount,
                amount.currency,
                decision.reason,
            )
        uow.emit(PaymentFailed(order_id=order_id, reason=decision.reason, saga=message.saga))
        return
    if isinstance(decision, domain.Charge):
        assert account is not None  # a new charge is only decided from an account
        payment_id = _new_payment_id()
        await store.charge(
            uow.conn,
            order_id,
            payment_id,
            account,
            domain.balance_after(account, decision),
            decision.amount,
            decision.currency,
        )
        charged = _money(decision.amount, decision.currency)
    else:
        # Charged before: answer the same, so a repeated request gets its reply again.
        payment_id = decision.payment_id
        charged = _money(decision.amount, decision.currency)
    uow.emit(
        PaymentCompleted(
            order_id=order_id,
            payment_id=payment_id,
            amount=charged,
            saga=message.saga,
            country=message.country,
            items=message.items,
        )
    )


@service.legacy_handler(when=command_or_choreography)
async def refund_payment(uow: UnitOfWork, message: RefundPayment | ShipmentFailed) -> None:
    """Give the charge back once; before any charge, leave a tombstone instead. Every refund
    is answered with ``payment.refunded`` (zero when nothing was charged). In choreography the
    refund follows ``shipment.failed``; an orchestrated one is the orchestrator's to act on."""
    if isinstance(message, ShipmentFailed):
        reason = f"shipment failed: {message.reason}"
    else:
        reason = message.reason
    order_id = message.order_id
    await uow.lock(order_id)
    existing = await store.load_payment(uow.conn, order_id)
    decision = domain.decide_refund(existing)
    if isinstance(decision, domain.Refund):
        account = await store.lock_account(uow.conn, decision.customer_id)
        if account is None:
            raise PermanentError(
                f"order {order_id} was charged to {decision.customer_id}, who has no account"
            )
        await store.refund(
            uow.conn,
            order_id,
            account,
            domain.balance_after(account, decision),
            decision.amount,
            reason,
        )
        payment_id = decision.payment_id
    elif isinstance(decision, domain.LeaveTombstone):
        payment_id = _new_payment_id()
        await store.leave_tombstone(uow.conn, order_id, payment_id, reason)
    else:
        payment_id = decision.payment_id
    uow.emit(
        PaymentRefunded(
            order_id=order_id,
            payment_id=payment_id,
            amount=_money(decision.amount, decision.currency),
            saga=message.saga,
        )
    )
