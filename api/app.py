"""The HTTP API of the fleet: ``create_app(settings)`` gives the ASGI application that
``fleet api`` serves (uvicorn). OpenAPI at /openapi.json, interactive at /docs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api import routes, telemetry
from api.console import routes as console
from api.resources import BrokerUnavailable, Resources, ViewUnavailable
from workers.runtime.settings import Settings

logger = logging.getLogger("fleet.api")

DESCRIPTION = """Orders of the fleet over HTTP.

* `POST /orders` (with an `Idempotency-Key` header) sends the order service PlaceOrder and
  answers 202 at once: the saga runs after.
* `GET /orders/{order_id}` and `GET /orders` read the read model (order_view), which follows
  the write side within moments; each answer says how far behind it is.
* `GET /health` asks RabbitMQ and the view's database now.
* `GET /metrics`: Prometheus metrics of the API (`fleet_http_*`).
"""


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        held = await Resources.open(settings)
        try:
            await held.broker.connection()
        except BrokerUnavailable as error:
            # Serve anyway: reads need only the database, and /health should say what is down.
            logger.warning("%s; connecting again when needed", error)
        app.state.resources = held
        try:
            yield
        finally:
            await held.close()

    app = FastAPI(
        title="fleet",
        summary="Place orders and read them back from the read model.",
        description=DESCRIPTION,
        version="1",
        lifespan=lifespan,
    )
    app.include_router(routes.router)
    app.include_router(console.router)  # the web console at /console
    telemetry.instrument(app)

    async def unavailable(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503)

    app.add_exception_handler(BrokerUnavailable, unavailable)
    app.add_exception_handler(ViewUnavailable, unavailable)
    return app
