"""Metrics of the HTTP API: ``fleet_http_*`` series, and ``/metrics`` itself.

Traces need nothing here: FastAPI's native OpenTelemetry support makes a SERVER span per
request (continuing the caller's ``traceparent``) with the tracer provider that
``workers.runtime.tracing.configure`` installs, and the PlaceOrder sent in it continues it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workers.runtime import metrics


def instrument(app: FastAPI) -> None:
    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path == "/metrics":
            return await call_next(request)
        started = time.perf_counter()
        response = await call_next(request)
        # The route template ("/orders/{order_id}"), not the path: few series, one name.
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        metrics.HTTP_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)
        return response
