"""The endpoints: place an order (the write side, through the order service's PlaceOrder
command), read orders (the read model), and health."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from api.models import (
    ErrorAnswer,
    HealthAnswer,
    OrderAnswer,
    OrderListAnswer,
    OrderSummary,
    PlacedAnswer,
    PlaceOrderRequest,
    ViewLag,
)
from api.resources import (
    BROKER_ERRORS,
    BROKER_TIMEOUT,
    BrokerUnavailable,
    Resources,
    ViewUnavailable,
    one_line,
)
from contracts import PlaceOrder
from workers.order.public import order_id_for, order_total, send_place_order
from workers.order_view import public as view
from workers.order_view.public import Status, Summary

logger = logging.getLogger("fleet.api")

router = APIRouter()

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorAnswer, "description": "RabbitMQ or the database is down."}
}


def resources(request: Request) -> Resources:
    held: Resources = request.app.state.resources
    return held


Held = Annotated[Resources, Depends(resources)]


def place_order_command(body: PlaceOrderRequest, idempotency_key: str) -> PlaceOrder:
    """The PlaceOrder contract, validated as the order service will decode it (from JSON), so
    its rules that span fields (one currency per order) apply; refused as a 422."""
    data = {"idempotency_key": idempotency_key, **body.model_dump(mode="json")}
    try:
        return PlaceOrder.model_validate_json(json.dumps(data))
    except pydantic.ValidationError as error:
        raise RequestValidationError(
            [
                {**problem, "loc": ("body", *problem["loc"])}
                for problem in error.errors(include_url=False, include_context=False)
            ]
        ) from error


def differences(known: Summary, command: PlaceOrder) -> list[str]:
    """What the view's order says that ``command`` does not (the view keeps no lines or
    country, so those cannot be compared)."""
    total = order_total(command.items)
    requested: dict[str, Any] = {
        "customer_id": command.customer_id,
        "total": (total.amount, total.currency),
        "item_count": sum(line.quantity for line in command.items),
        "saga": command.saga,
    }
    placed: dict[str, Any] = {
        "customer_id": known.customer_id,
        "total": (known.total_amount, known.currency),
        "item_count": known.item_count,
        "saga": known.saga,
    }

    def shown(field: str, value: Any) -> str:
        return f"{value[0]} {value[1]}" if field == "total" else repr(value)

    return [
        f"{field} is {shown(field, placed[field])}, not {shown(field, requested[field])}"
        for field in requested
        if placed[field] != requested[field]
    ]


@router.post(
    "/orders",
    status_code=202,
    response_model=PlacedAnswer,
    responses={
        # FastAPI's own answer to a body it cannot parse (found by test_fuzz_api.py).
        400: {"model": ErrorAnswer, "description": "The body is not JSON."},
        409: {"model": ErrorAnswer, "description": "The key placed an order with other contents."},
        **UNAVAILABLE,
    },
    summary="Place an order",
)
async def place_order(
    body: PlaceOrderRequest,
    response: Response,
    held: Held,
    idempotency_key: Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="The client's key for this order: sending it again (after a timeout, "
            "say) never places a second order.",
        ),
    ],
) -> PlacedAnswer:
    """Send the order service PlaceOrder, confirmed by RabbitMQ, and answer 202 with the
    order's id (derived from the key) and a Location to read it from once projected."""
    command = place_order_command(body, idempotency_key)
    order_id = order_id_for(command)
    try:
        async with held.view_connection() as conn:
            known = await view.known_order(conn, order_id)
    except ViewUnavailable as error:
        # Placing does not need the read model: the order service still places one order
        # per key. Only the conflict check is lost until the view is back.
        logger.warning("placing %s without the conflict check: %s", order_id, error)
        known = None
    # Until the view has the first order, a repeat with other contents is dropped by the
    # order service (same message id) and this answer cannot know it.
    if known is not None:
        conflicts = differences(known, command)
        if conflicts:
            raise HTTPException(
                409,
                f"Idempotency-Key {idempotency_key!r} already placed order {order_id} with other"
                f" contents: {'; '.join(conflicts)}",
            )
        status: Status = known.status or "PENDING"
    else:
        publisher = await held.broker.publisher()
        try:
            async with asyncio.timeout(BROKER_TIMEOUT):
                await send_place_order(
                    publisher, held.settings.namespace, command, producer="fleet-api"
                )
        except BROKER_ERRORS as error:
            raise BrokerUnavailable(
                f"RabbitMQ did not take the order ({one_line(error)});"
                " send it again with the same Idempotency-Key"
            ) from error
        status = "PENDING"
    response.headers["Location"] = f"/orders/{order_id}"
    return PlacedAnswer(order_id=order_id, status=status, idempotency_key=idempotency_key)


@router.get(
    "/orders/{order_id}",
    response_model=OrderAnswer,
    responses={404: {"model": ErrorAnswer}, **UNAVAILABLE},
    summary="One order, from the read model",
)
async def get_order(
    order_id: Annotated[uuid.UUID, Path(description="The id POST /orders answered.")],
    held: Held,
) -> OrderAnswer:
    """The order as the read model has it, and how far behind the view is. A just-placed
    order is 404 until the view has projected it."""
    async with held.view_connection() as conn:
        rows, last_update = await view.read_view(conn, order_id=str(order_id))
    if not rows:
        raise HTTPException(404, f"no order {order_id} in the view")
    return OrderAnswer(
        order=OrderSummary(**view.summary_dict(rows[0])),
        lag=ViewLag(**await held.view_lag(last_update)),
    )


@router.get(
    "/orders",
    response_model=OrderListAnswer,
    responses=UNAVAILABLE,
    summary="Orders, newest first, from the read model",
)
async def list_orders(
    held: Held,
    status: Annotated[Status | None, Query(description="Only orders in this status.")] = None,
    customer: Annotated[
        str | None, Query(min_length=1, description="Only this customer's.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 50,
) -> OrderListAnswer:
    async with held.view_connection() as conn:
        rows, last_update = await view.read_view(
            conn, status=status, customer=customer, limit=limit
        )
    return OrderListAnswer(
        orders=[OrderSummary(**view.summary_dict(row)) for row in rows],
        lag=ViewLag(**await held.view_lag(last_update)),
    )


@router.get(
    "/health",
    response_model=HealthAnswer,
    responses={503: {"model": HealthAnswer, "description": "RabbitMQ or the database is down."}},
    summary="Whether RabbitMQ and the view's database answer now",
)
async def health(held: Held, response: Response) -> HealthAnswer:
    """Asks both now (a channel opened on RabbitMQ, a query on the view's table), each within
    a short timeout: never a remembered answer."""

    async def check(kind: type[Exception], ping: Callable[[], Awaitable[None]]) -> str:
        try:
            await ping()
        except kind as error:
            return str(error)
        return "ok"

    broker, database = await asyncio.gather(
        check(BrokerUnavailable, held.broker.ping), check(ViewUnavailable, held.ping_view)
    )
    healthy = broker == database == "ok"
    response.status_code = 200 if healthy else 503
    return HealthAnswer(status="ok" if healthy else "unavailable", broker=broker, database=database)
