"""``fleet order``, ``fleet saga`` and ``fleet verify``: where orders and sagas stand;
``fleet orders``: the read model (order_view), which answers from the view's database alone."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

import typer

from cli.output import JsonOption, fail, first_error, print_json, print_table
from contracts import Money, OrderLine, PlaceOrder
from db.engine import create_engine
from workers.orchestrator import store as saga_store
from workers.order import store as order_store
from workers.order.placing import DEFAULT_COUNTRY, send_place_order
from workers.order_view import domain as view_domain
from workers.order_view.queries import summary_dict, view_query
from workers.publisher import ConfirmedPublisher
from workers.settings import SERVICES, Settings, get_settings
from workers.verify import verify as run_verify

order_app = typer.Typer(help="Place orders and see where they stand.", no_args_is_help=True)
saga_app = typer.Typer(help="The sagas that drive orders.", no_args_is_help=True)
orders_app = typer.Typer(
    help="The read model: orders as the order_view projects them.", no_args_is_help=True
)


def parse_item(text: str, currency: str) -> OrderLine:
    sku, _, rest = text.partition(":")
    quantity, _, price = rest.partition(":")
    try:
        if not sku or int(quantity) < 1:
            raise ValueError
        return OrderLine(
            sku=sku, quantity=int(quantity), unit_price=Money.of(str(Decimal(price)), currency)
        )
    except (ValueError, InvalidOperation):
        fail(f"--item {text!r} is not SKU:QTY:PRICE with QTY >= 1 and PRICE like 9.90", 2)
    except Exception as error:  # pydantic's ValidationError
        fail(f"--item {text!r}: {first_error(error)}", 2)


async def place_order(settings: Settings, command: PlaceOrder) -> str:
    """Send PlaceOrder (confirmed) over a connection of its own; return the order's id."""
    publisher = await ConfirmedPublisher.connect(settings.amqp_url)
    try:
        return await send_place_order(publisher, settings.namespace, command, producer="fleet-cli")
    finally:
        await publisher.close()


async def order_status(settings: Settings, order_id: str) -> dict[str, Any] | None:
    engine = create_engine(settings.database_url("order"), pool_size=1)
    try:
        async with engine.connect() as conn:
            loaded = await order_store.load_order(conn, order_id)
    finally:
        await engine.dispose()
    order = loaded.order
    if order is None:
        return None
    return {
        "order_id": order.order_id,
        "status": str(order.status),
        "customer_id": order.customer_id,
        "total": str(order.total),
        "country": order.country,
        "saga": order.saga,
        "reason": order.rejection_reason,
        "version": loaded.version,
    }


async def wait_until_final(
    settings: Settings, order_id: str, seconds: float
) -> dict[str, Any] | None:
    deadline = time.monotonic() + seconds
    status = None
    while time.monotonic() < deadline:
        status = await order_status(settings, order_id)
        if status is not None and status["status"] in ("CONFIRMED", "REJECTED"):
            return status
        await asyncio.sleep(0.2)
    return status


@order_app.command("place")
def place(
    customer: str = typer.Option(..., "--customer", help="The customer's id (see fleet seed)."),
    item: list[str] = typer.Option(..., "--item", help="SKU:QTY:PRICE, repeatable."),
    country: str = typer.Option(DEFAULT_COUNTRY, "--country", help="Destination, 2 letters."),
    saga: str = typer.Option("orchestration", "--saga", help="orchestration or choreography."),
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key", help="Same key, same order."
    ),
    currency: str = typer.Option("EUR", "--currency"),
    wait: float | None = typer.Option(
        None, "--wait", min=0, help="Wait this many seconds for the end."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Place an order; prints its id (and, with --wait, how it ended: exit 1 if not in time)."""
    if saga not in ("orchestration", "choreography"):
        fail(f"--saga must be orchestration or choreography, not {saga!r}", 2)
    lines = [parse_item(text, currency) for text in item]
    try:
        command = PlaceOrder(
            idempotency_key=idempotency_key or str(uuid.uuid4()),
            customer_id=customer,
            items=lines,
            country=country,
            saga=saga,
        )
    except Exception as error:  # pydantic's ValidationError
        fail(f"invalid order: {first_error(error)}", 2)
    settings = get_settings()
    order_id = asyncio.run(place_order(settings, command))
    status = asyncio.run(wait_until_final(settings, order_id, wait)) if wait is not None else None
    if as_json:
        print_json({"order_id": order_id, **({"order": status} if wait is not None else {})})
    else:
        typer.echo(order_id)
        if wait is not None:
            typer.echo(status["status"] if status else "not known yet")
    if wait is not None and (status is None or status["status"] not in ("CONFIRMED", "REJECTED")):
        raise typer.Exit(1)


@order_app.command("status")
def status(order_id: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """Where an order stands (read from the order service's event store)."""
    found = asyncio.run(order_status(get_settings(), order_id))
    if found is None:
        fail(f"no order {order_id}")
    if as_json:
        print_json(found)
    else:
        for key, value in found.items():
            if value is not None:
                typer.echo(f"{key}: {value}")


async def saga_details(settings: Settings, order_id: str) -> dict[str, Any] | None:
    engine = create_engine(settings.database_url("orchestrator"), pool_size=1)
    try:
        async with engine.connect() as conn:
            saga = await saga_store.load(conn, order_id)
            steps = await saga_store.step_log(conn, order_id) if saga else []
    finally:
        await engine.dispose()
    if saga is not None:
        return {
            "order_id": order_id,
            "style": "orchestration",
            "status": saga.status,
            "step": saga.step,
            "completed": list(saga.completed),
            "pending": list(saga.pending),
            "reason": saga.reason,
            "deadline_at": saga.deadline_at,
            "version": saga.version,
            "log": steps,
        }
    seen = await events_seen(settings, order_id)
    if not seen:
        return None
    return {"order_id": order_id, "style": "choreography", "events": seen}


async def events_seen(settings: Settings, order_id: str) -> list[dict[str, Any]]:
    """What every service emitted for the order (its correlation id), oldest first; kept
    as long as the outbox keeps published rows."""
    seen: list[dict[str, Any]] = []
    for service in SERVICES:
        engine = create_engine(settings.database_url(service), pool_size=1)
        try:
            async with engine.connect() as conn:
                rows = await conn.exec_driver_sql(
                    "SELECT occurred_at, producer, type, published_at IS NOT NULL AS published"
                    " FROM outbox WHERE correlation_id = $1",
                    (order_id,),
                )
                seen.extend(dict(row._mapping) for row in rows)
        finally:
            await engine.dispose()
    # Envelope times have whole seconds (as AMQP timestamps do): within one second, show
    # the events in the order the saga produces them.
    return sorted(seen, key=lambda row: (row["occurred_at"], _SAGA_ORDER.get(row["type"], 99)))


_SAGA_ORDER = {
    type_: position
    for position, types in enumerate(
        [
            ("order.placed",),
            ("stock.reserved", "stock.reservation_failed"),
            ("payment.completed", "payment.failed"),
            ("shipment.created", "shipment.failed"),
            ("shipment.cancelled",),
            ("payment.refunded",),
            ("stock.released",),
            ("order.confirmed", "order.rejected"),
        ]
    )
    for type_ in types
}


@saga_app.command("show")
def show(order_id: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """A saga's state and step log; for a choreographed order, the events seen."""
    details = asyncio.run(saga_details(get_settings(), order_id))
    if details is None:
        fail(f"no saga and no events for order {order_id}")
    if as_json:
        print_json(details)
        return
    if details["style"] == "choreography":
        print_table(
            f"choreographed order {order_id}",
            ["at", "service", "event", "published"],
            [
                (e["occurred_at"], e["producer"], e["type"], e["published"])
                for e in details["events"]
            ],
        )
        return
    typer.echo(
        f"saga {order_id}: {details['status']} at {details['step']} (version {details['version']})"
        + (f", reason: {details['reason']}" if details["reason"] else "")
    )
    print_table(
        "step log",
        ["at", "status", "step", "entry"],
        [(s["at"], s["status"], s["step"], s["entry"]) for s in details["log"]],
    )


def verify(as_json: bool = JsonOption) -> None:
    """Check the saga invariants across the services' databases (read-only); exit 1 on a failure."""
    checks = asyncio.run(run_verify(get_settings()))
    if as_json:
        print_json([check.as_dict() for check in checks])
    else:
        for check in checks:
            counts = ", ".join(f"{k} {v}" for k, v in check.counts.items())
            typer.echo(f"{'pass' if check.passed else 'FAIL'}  {check.name}  ({counts})")
            for problem in check.problems:
                typer.echo(f"      {problem}")
    if not all(check.passed for check in checks):
        raise typer.Exit(1)


# --- fleet orders: the read model. ------------------------------------------------------


def _lag_line(lag: dict[str, Any]) -> str:
    applied = (
        f"last update applied at {lag['last_update']}"
        if lag["last_update"] is not None
        else "no update applied yet"
    )
    return f"view: {lag['messages_waiting']} message(s) waiting to be projected; {applied}"


@orders_app.command("list")
def orders_list(
    status: str | None = typer.Option(None, "--status", help="PENDING, CONFIRMED or REJECTED."),
    customer: str | None = typer.Option(None, "--customer", help="Only this customer's."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many, newest first."),
    as_json: bool = JsonOption,
) -> None:
    """Orders as the read model has them, newest first, and how far behind it is."""
    if status is not None:
        status = status.upper()
        if status not in view_domain.STATUSES:
            fail(f"--status must be one of {', '.join(view_domain.STATUSES)}, not {status!r}", 2)
    rows, lag = asyncio.run(
        view_query(get_settings(), status=status, customer=customer, limit=limit)
    )
    if as_json:
        print_json({"orders": [summary_dict(row) for row in rows], "lag": lag})
        return
    print_table(
        "orders (read model)",
        ["order", "status", "customer", "items", "total", "saga", "updated"],
        [
            (
                d["order_id"],
                d["status"],
                d["customer_id"],
                d["item_count"],
                d["total"],
                d["saga"],
                d["updated_at"],
            )
            for d in map(summary_dict, rows)
        ],
    )
    typer.echo(f"{len(rows)} order(s)")
    typer.echo(_lag_line(lag))


@orders_app.command("show")
def orders_show(order_id: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """One order as the read model has it, and how far behind the view is."""
    rows, lag = asyncio.run(view_query(get_settings(), order_id=order_id))
    if not rows:
        fail(f"no order {order_id} in the view")
    order = summary_dict(rows[0])
    if as_json:
        print_json({"order": order, "lag": lag})
        return
    for key, value in order.items():
        # total says amount and currency in one line, for people.
        if value is not None and key not in ("total_amount", "currency"):
            typer.echo(f"{key}: {value}")
    typer.echo(_lag_line(lag))
