"""Prometheus metrics of a fleet process, every name prefixed ``fleet_``.

    metrics.serve(9464)                    # /metrics on that port (a thread of its own)
    metrics.HANDLED.labels(...).inc()      # counters and histograms: where things happen
    await metrics.sample(...)              # gauges read from the database and the broker

Counters and histograms are updated where the event happens (the consumer, the relay, the
saga's end); gauges that describe state (outbox backlog, inbox rows, DLQ depth, sagas, the
view's lag) are read every ``FLEET_METRICS_INTERVAL`` seconds by the worker's sampler, from
the service's own database and the broker, so a scrape never waits on either. A service
adds gauges of its own with ``@service.sampler`` (the orchestrator's sagas, the view's lag).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server

# Handling a delivery takes milliseconds to seconds (a batch's commit included).
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A saga takes seconds to minutes (a step timeout is 30 s by default).
_SAGA_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

HANDLED = Counter(
    "fleet_messages_handled",
    "Deliveries handled, by handler and outcome (applied, ignored, duplicate, retry, "
    "dead-lettered).",
    ["service", "handler", "outcome"],
)
HANDLING_SECONDS = Histogram(
    "fleet_message_handling_seconds",
    "From a delivery's batch starting to its outcome being durable.",
    ["service", "handler"],
    buckets=_SECONDS,
)
RETRIES = Counter(
    "fleet_retries",
    "Deliveries sent to a delay tier for a retry.",
    ["service", "queue", "error_type"],
)
DEAD_LETTERS = Counter(
    "fleet_dead_letters", "Deliveries dead-lettered.", ["service", "queue", "error_type"]
)
OUTBOX_WAITING = Gauge("fleet_outbox_waiting", "Outbox rows not published yet.", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "fleet_outbox_oldest_age_seconds",
    "How long the oldest unpublished outbox row has waited (0: none waits).",
    ["service"],
)
RELAY_ACTIVE = Gauge(
    "fleet_relay_active",
    "1 while this process's relay holds the publishing lock, 0 on a standby.",
    ["service"],
)
RELAY_PUBLISHED = Counter(
    "fleet_relay_published", "Outbox rows published and confirmed by this relay.", ["service"]
)
BREAKER_TRIPPED_SINCE = Gauge(
    "fleet_breaker_tripped_since_seconds",
    "Unix time since which the handler's breaker has been tripped (its database or broker"
    " unreachable); 0 while it consumes.",
    ["service", "handler"],
)
INBOX_ROWS = Gauge("fleet_inbox_rows", "Inbox entries kept for duplicate detection.", ["service"])
DLQ_DEPTH = Gauge(
    "fleet_dlq_depth", "Messages in each dead-letter queue of the service.", ["service", "queue"]
)
SAGAS = Gauge("fleet_sagas", "Sagas by style and state.", ["style", "state"])
SAGA_SECONDS = Histogram(
    "fleet_saga_duration_seconds",
    "From an order placed to its saga's end, by style and outcome.",
    ["style", "outcome"],
    buckets=_SAGA_SECONDS,
)
DEADLINES_OVERDUE = Gauge(
    "fleet_saga_deadlines_overdue", "Orchestrated sagas still waiting past their deadline."
)
VIEW_LAG = Gauge(
    "fleet_view_lag_seconds",
    "How far the view is behind: since it last applied an event, while events wait for it.",
)
VIEW_WAITING = Gauge("fleet_view_messages_waiting", "Events waiting in the view's queues.")
HTTP_REQUESTS = Counter(
    "fleet_http_requests", "HTTP requests of fleet api.", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "fleet_http_request_seconds",
    "HTTP request durations of fleet api.",
    ["method", "route"],
    buckets=_SECONDS,
)


def serve(port: int, registry: CollectorRegistry = REGISTRY) -> int:
    """Serve ``/metrics`` on ``port`` (0: any free one), in a daemon thread; the port."""
    server, _ = _start_http_server(port, addr="0.0.0.0", registry=registry)
    bound: int = server.server_port
    return bound
