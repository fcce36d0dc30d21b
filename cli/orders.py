"""``fleet order``, ``fleet saga`` and ``fleet verify``: where orders and sagas stand;
``fleet orders``: the read model (order_view), which answers from the view's database alone."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import typer

from cli.output import JsonOption, command_group, fail, first_error, print_json, print_table

if TYPE_CHECKING:
    from contracts import OrderLine

# As workers.order.public.DEFAULT_COUNTRY and workers.order_view.public.STATUSES say; written
# out here so that `fleet order --help` loads no library (tests/unit/test_cli.py checks).
DEFAULT_COUNTRY = "DE"
STATUSES = ("PENDING", "CONFIRMED", "REJECTED")

order_app = command_group("Place orders and see where they stand.")
saga_app = command_group("The sagas that drive orders.")
orders_app = command_group("The read model: orders as the order_view projects them.")


def parse_item(text: str, currency: str) -> OrderLine:
    from pydantic import ValidationError

    from contracts import Money, OrderLine

    sku, _, rest = text.partition(":")
    quantity, _, price = rest.partition(":")
    try:
        if not sku or int(quantity) < 1:
            raise ValueError
        return OrderLine(
            sku=sku, quantity=int(quantity), unit_price=Money.of(str(Decimal(price)), currency)
        )
    except ValidationError as error:  # before ValueError, which it is too
        fail(f"--item {text!r}: {first_error(error)}", 2)
    except (ValueError, InvalidOperation):
        fail(f"--item {text!r} is not SKU:QTY:PRICE with QTY >= 1 and PRICE like 9.90", 2)


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
    """Place an order and print its id.

    With --wait, also how it ended (exit 1 if it has not within the time).
    """
    from contracts import PlaceOrder
    from workers.operations.orders import place_order, wait_until_final
    from workers.runtime.settings import get_settings

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
    from workers.runtime import tracing

    settings = get_settings()
    tracing.configure("fleet-cli")
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
    from workers.operations.orders import order_status
    from workers.runtime.settings import get_settings

    found = asyncio.run(order_status(get_settings(), order_id))
    if found is None:
        fail(f"no order {order_id}")
    if as_json:
        print_json(found)
    else:
        for key, value in found.items():
            if value is not None:
                typer.echo(f"{key}: {value}")


@saga_app.command("show")
def show(order_id: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """A saga's state and step log.

    For a choreographed order, the events every service emitted for it.
    """
    from workers.operations.orders import saga_details
    from workers.runtime.settings import get_settings

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


@saga_app.command("list")
def saga_list(
    state: str | None = typer.Option(
        None, "--state", help="running, compensating, confirmed or rejected."
    ),
    style: str | None = typer.Option(None, "--style", help="orchestration or choreography."),
    stuck_for: str | None = typer.Option(
        None, "--stuck-for", help="Only those not ended that nothing changed for this long (10m)."
    ),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many."),
    as_json: bool = JsonOption,
) -> None:
    """Sagas of both styles, most recently changed first.

    With --stuck-for, those not ended that nothing changed for that long, longest stuck first.
    A choreographed saga is its order in the read model (PENDING reads as running).
    """
    from workers.operations.sagas import duration_text, list_sagas
    from workers.runtime.durations import parse_duration
    from workers.runtime.settings import get_settings

    try:
        stuck = parse_duration(stuck_for) if stuck_for is not None else None
    except ValueError as error:
        fail(f"--stuck-for: {error}", 2)
    rows = asyncio.run(
        list_sagas(get_settings(), state=state, style=style, stuck_for=stuck, limit=limit)
    )
    if as_json:
        print_json({"sagas": [row.as_dict() for row in rows]})
        return
    print_table(
        "sagas",
        ["order", "style", "state", "step", "unchanged for", "reason"],
        [
            (
                row.order_id,
                row.style,
                row.state,
                row.step,
                duration_text(row.idle_seconds),
                row.reason,
            )
            for row in rows
        ],
    )
    typer.echo(f"{len(rows)} saga(s)")


def _report_saga_action(sent: Any, as_json: bool) -> None:
    """What a retry or compensation sent and, after --wait, where the saga stands; exit 1
    when it did not end (or, for a retry, move on) within the wait."""
    if as_json:
        print_json(sent.as_dict())
    else:
        before = sent.before
        typer.echo(
            f"sent orchestrator.{'retry_step' if sent.action == 'retry' else 'compensate_saga'}"
            f" for saga {sent.order_id} ({before.state} at {before.step}),"
            f" message {sent.message_id}"
        )
        if sent.answer is not None:
            typer.echo(f"orchestrator: {sent.answer}")
        elif sent.after is not None:
            typer.echo("the orchestrator has not handled it yet (is its worker running?)")
        if sent.after is not None:
            typer.echo(f"now: {sent.after.state} at {sent.after.step}")
        if sent.settled is False:
            typer.echo("not settled within the wait (see 'fleet saga show')")
    if sent.settled is False:
        raise typer.Exit(1)


@saga_app.command("retry")
def saga_retry(
    order_id: str = typer.Argument(...),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    wait: float | None = typer.Option(
        None, "--wait", min=0, help="Follow the saga this many seconds (exit 1 if it is stuck)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Send an orchestrated saga's current step again, through the orchestrator.

    For a step whose command was lost or whose service was down; recorded in the audit log.
    """
    from cli.operator import operator_name
    from workers.operations.sagas import retry
    from workers.runtime import tracing
    from workers.runtime.settings import get_settings

    tracing.configure("fleet-cli")
    sent = asyncio.run(
        retry(
            get_settings(),
            order_id,
            operator=operator_name(),
            wait=wait,
            confirm=None if yes else _confirm,
        )
    )
    _report_saga_action(sent, as_json)


@saga_app.command("compensate")
def saga_compensate(
    order_id: str = typer.Argument(...),
    reason: str | None = typer.Option(None, "--reason", help="The order's rejection reason."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    wait: float | None = typer.Option(
        None, "--wait", min=0, help="Follow the saga this many seconds (exit 1 if not ended)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Compensate an orchestrated saga now and reject its order, through the orchestrator.

    Refused once it ended, while it compensates, and past the pivot (confirm_order);
    recorded in the audit log.
    """
    from cli.operator import operator_name
    from workers.operations.sagas import compensate
    from workers.runtime import tracing
    from workers.runtime.settings import get_settings

    tracing.configure("fleet-cli")
    sent = asyncio.run(
        compensate(
            get_settings(),
            order_id,
            reason=reason,
            operator=operator_name(),
            wait=wait,
            confirm=None if yes else _confirm,
        )
    )
    _report_saga_action(sent, as_json)


def _confirm(question: str) -> bool:
    # abort=True: "no" ends the command at once ('fleet: aborted', exit 130), nothing sent.
    return typer.confirm(question, abort=True)


def verify(as_json: bool = JsonOption) -> None:
    """Check the saga invariants across the services.

    Read-only, each service's database as its own role; exit 1 if one fails.
    """
    from workers.operations.verify import verify as run_verify
    from workers.runtime.settings import get_settings

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
    """Orders as the read model has them, newest first.

    And how far behind the write side the view is.
    """
    if status is not None:
        status = status.upper()
        if status not in STATUSES:
            fail(f"--status must be one of {', '.join(STATUSES)}, not {status!r}", 2)
    from workers.order_view.public import summary_dict, view_query
    from workers.runtime.settings import get_settings

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
    from workers.order_view.public import summary_dict, view_query
    from workers.runtime.settings import get_settings

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
