"""Traces: OpenTelemetry spans with the messaging semantic conventions, one trace per order.

    tracing.configure("inventory")              # once per process, from the OTEL_* variables
    with tracing.processing(queue, delivery):   # a consumer's span, continuing the sender's
        ...

How one order becomes one trace across processes: a handler's unit of work captures the
current context (W3C ``traceparent``, ``tracestate``) into the headers of every message it
emits (``db.unit_of_work``), so the context is stored with the outbox row; the relay sends
those headers unchanged, its ``send`` span a child of, and linked to, the stored context; the
consumer's ``process`` span continues from the headers it received. A message published
directly (the CLI, the API, a test message) gets the context of its ``send`` span.

Export is configured only by the standard variables: OTLP over HTTP to
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``). Without an endpoint, or with
``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true``, no SDK is installed: the API's
no-op tracer costs next to nothing, and contexts received still pass through unchanged.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode

TRACER = trace.get_tracer("fleet")
SYSTEM = "rabbitmq"
TRACE_HEADERS = ("traceparent", "tracestate")

_recording = False


def recording() -> bool:
    """Whether an SDK is installed (``configure``, or a test's own ``install``). Without
    one, the hot path makes no span at all: even a no-op one costs something per message."""
    return _recording


def install(provider: trace.TracerProvider) -> None:
    """Make ``provider`` the process's tracer provider, for good (OpenTelemetry allows one)."""
    global _recording
    trace.set_tracer_provider(provider)
    _recording = True


def exporting() -> bool:
    """Whether the OTEL_* variables ask for spans to be exported."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return exporter != "none" and bool(endpoint)


def configure(service_name: str) -> None:
    """Install the SDK with an OTLP/HTTP exporter when the environment asks for it. Spans
    are batched and flushed at exit (the SDK's atexit hook); ``OTEL_SERVICE_NAME`` wins
    over ``service_name``."""
    if _recording or not exporting():
        return
    # The SDK is imported only here: a process that exports nothing never loads it.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)


def _received_context(headers: Mapping[str, Any] | None) -> context.Context | None:
    carrier = {key: str(headers[key]) for key in TRACE_HEADERS if headers and key in headers}
    return propagate.extract(carrier) if carrier else None


def message_attributes(
    *, exchange: str, routing_key: str, message_id: str | None, correlation_id: str | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": routing_key,
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    if correlation_id:
        # A saga's correlation id is its order's id.
        attributes["messaging.message.conversation_id"] = correlation_id
        attributes["fleet.order_id"] = correlation_id
    return attributes


def start_send(
    *,
    exchange: str,
    routing_key: str,
    message_id: str | None,
    correlation_id: str | None,
    headers: Mapping[str, Any],
) -> tuple[Span, dict[str, Any]]:
    """A PRODUCER span for one publish, and the headers to send. Headers that carry a
    context already (captured at emit, kept by a retry) go unchanged, the span a child of
    and linked to it; others get the span's own context."""
    if not recording():
        return INVALID_SPAN, dict(headers)
    received = _received_context(headers)
    links = []
    if received is not None:
        stored = trace.get_current_span(received).get_span_context()
        if stored.is_valid:
            links.append(Link(stored))
    span = TRACER.start_span(
        f"send {exchange or '(default)'}",
        context=received,
        kind=SpanKind.PRODUCER,
        links=links,
        attributes={
            **message_attributes(
                exchange=exchange,
                routing_key=routing_key,
                message_id=message_id,
                correlation_id=correlation_id,
            ),
            "messaging.operation.type": "send",
        },
    )
    if received is not None:
        return span, dict(headers)
    own: dict[str, str] = {}
    propagate.inject(own, context=trace.set_span_in_context(span))
    return span, {**headers, **own}


def end(span: Span, error: BaseException | None = None) -> None:
    if span is INVALID_SPAN:
        return
    if error is not None:
        failed(span, error)
    span.end()


def failed(span: Span, error: BaseException) -> None:
    if span is INVALID_SPAN:
        return
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(Status(StatusCode.ERROR, str(error)[:200]))


def start_process(
    queue: str,
    *,
    exchange: str,
    routing_key: str,
    message_id: str | None,
    correlation_id: str | None,
    headers: Mapping[str, Any] | None,
    attempt: int,
    handler: str,
) -> Span:
    """The CONSUMER span of one delivery, continuing the context its sender put in it."""
    if not recording():
        return INVALID_SPAN
    return TRACER.start_span(
        f"process {queue}",
        context=_received_context(headers),
        kind=SpanKind.CONSUMER,
        attributes={
            **message_attributes(
                exchange=exchange,
                routing_key=routing_key,
                message_id=message_id,
                correlation_id=correlation_id,
            ),
            "messaging.operation.type": "process",
            "fleet.queue": queue,
            "fleet.handler": handler,
            "fleet.attempt": attempt,
        },
    )


def attach(span: Span) -> object | None:
    """Make ``span`` current until ``detach`` (what is emitted meanwhile carries it)."""
    if span is INVALID_SPAN:
        return None
    return context.attach(trace.set_span_in_context(span))


def detach(token: object | None) -> None:
    if token is not None:
        context.detach(token)  # type: ignore[arg-type]


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent_headers: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span around a block, current inside it, its error recorded. With
    ``parent_headers``, a child of the context a message carries (a replay, a deadline)."""
    if not recording():
        yield INVALID_SPAN
        return
    parent = _received_context(parent_headers) if parent_headers is not None else None
    with TRACER.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=dict(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as error:
            failed(current, error)
            raise


def start_children(
    name: str, parents: Sequence[Span], attributes: Mapping[str, Any] | None = None
) -> list[Span]:
    """One span ``name`` under each of ``parents``: a batch's shared transaction, seen in
    the trace of each delivery it carries."""
    if not recording():
        return []
    return [
        TRACER.start_span(
            name, context=trace.set_span_in_context(parent), attributes=dict(attributes or {})
        )
        for parent in parents
    ]


def trace_id() -> str | None:
    """The current trace id in hex, for log lines; None outside a sampled span."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None
