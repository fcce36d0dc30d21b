"""Traces, metrics and logs of a real fleet: every service a real process exporting spans
over OTLP/HTTP to a receiver of this test's own and serving /metrics; orders placed over
HTTP with a ``traceparent``; a poison message, a retry, a stopped relay, two relays.

In-process cases (the retry and the dead-lettering of a probe) use the SDK's own span
processor with an exporter that keeps the spans of the traces a test watches."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import secrets
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from contracts import Money, OrderConfirmed, OrderLine, OrderPlacedV2, OutgoingMessage
from db.unit_of_work import UnitOfWork
from tests.integration import probes
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.sagas import SagaFleet
from tests.integration.support import (
    Fleet,
    FleetProcess,
    free_ports,
    new_id,
    order_body,
    outgoing,
    scrape,
    start_api,
    value,
    wait_for,
)
from workers.operations import dead_letters, replays
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime import catalog, tracing
from workers.runtime.topology import dead_letter_queue

pytestmark = pytest.mark.integration

EVERY_SERVICE = set(catalog.SERVICES)


# --- An OTLP/HTTP endpoint of the test's own. --------------------------------------------


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int  # OTLP's enum: 2 SERVER, 4 PRODUCER, 5 CONSUMER
    service: str
    attributes: dict[str, Any]


@dataclass
class OtlpReceiver:
    spans: list[ReceivedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            service=str(resource.get("service.name")),
                            attributes=_attributes(span.attributes),
                        )
                    )
        with self.lock:
            self.spans += received


def _attributes(values: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in values:
        which = item.value.WhichOneof("value")
        result[item.key] = getattr(item.value, which) if which else None
    return result


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[OtlpReceiver, str]]:
    """A receiver and the endpoint to give OTEL_EXPORTER_OTLP_ENDPOINT."""
    receiver = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/v1/traces":
                receiver.add(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def new_trace_id() -> str:
    return secrets.token_hex(16)


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


# --- The fleet: every service a process, tracing and metrics on. --------------------------


@dataclass
class ObservedFleet:
    sagas: SagaFleet
    receiver: OtlpReceiver
    environment: dict[str, str]
    metrics_ports: dict[str, int]
    api: FleetProcess
    http: httpx.AsyncClient
    relay: FleetProcess  # payment's relay runs apart, so a test can stop it

    @property
    def fleet(self) -> Fleet:
        return self.sagas.fleet

    async def spawn_worker(self, service: str, *args: str) -> FleetProcess:
        process = await self.fleet.spawn("worker", service, *args, environment=self.environment)
        await process.wait_for_line("consuming")
        return process

    async def start_relay(self) -> FleetProcess:
        process = await self.fleet.spawn("relay", "payment", environment=self.environment)
        await process.wait_for_line("relay: active")
        return process


@pytest.fixture(scope="module")
async def observed(server_urls: tuple[str, str]) -> AsyncIterator[ObservedFleet]:
    settings = namespace_settings(server_urls, metrics_interval=0.3)
    sections = [OrchestratorSettings(step_timeout_seconds=5.0)]
    with otlp_receiver() as (receiver, endpoint):
        environment = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        async with namespaced_fleet(settings, sections) as fleet:
            sagas = SagaFleet(fleet)
            await sagas.seed({"WIDGET": 100_000}, {"rich": "1000000.00"})
            ports = dict(zip(catalog.SERVICES, free_ports(len(catalog.SERVICES)), strict=True))
            observed = ObservedFleet(sagas, receiver, environment, ports, None, None, None)  # type: ignore[arg-type]

            async def start(service: str) -> None:
                extra = ["--no-relay"] if service == "payment" else []
                sagas.workers[service] = await observed.spawn_worker(
                    service, "--metrics-port", str(ports[service]), "--json", *extra
                )

            await asyncio.gather(*(start(service) for service in catalog.SERVICES))
            observed.relay = await observed.start_relay()
            api, base_url = await start_api(fleet, environment=environment)
            observed.api = api
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
                observed.http = http
                yield observed
            for process in (api, observed.relay, *sagas.workers.values()):
                assert await process.terminate() == 0, "\n".join(process.lines[-20:])


async def place_over_http(observed: ObservedFleet, trace_id: str, saga: str) -> str:
    key = new_id()
    response = await observed.http.post(
        "/orders",
        json=order_body("rich", ("WIDGET", 1, "3.00"), saga=saga),
        headers={"Idempotency-Key": key, "traceparent": traceparent(trace_id)},
    )
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    await observed.sagas.ended(order_id)
    return order_id


# --- Traces. ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("saga", "services"),
    [
        ("orchestration", EVERY_SERVICE),
        ("choreography", EVERY_SERVICE - {"orchestrator"}),
    ],
)
async def test_an_order_placed_over_http_is_one_trace_through_every_service_of_its_saga(
    observed: ObservedFleet, saga: str, services: set[str]
) -> None:
    trace_id = new_trace_id()
    order_id = await place_over_http(observed, trace_id, saga)
    ns = observed.fleet.ns

    def roots() -> list[str]:
        """The spans of the trace whose parent is not (yet) in it."""
        spans = observed.receiver.of_trace(trace_id)
        ids = {span.span_id for span in spans}
        return [span.name for span in spans if span.parent_span_id not in ids]

    async def every_service_seen_and_joined() -> bool:
        # Each process exports in batches of its own: a child may arrive before its parent.
        seen = {span.service for span in observed.receiver.of_trace(trace_id)}
        return seen >= {"api", *services} and roots() == ["POST /orders"]

    with contextlib.suppress(AssertionError):  # the assertions below say what is missing
        await wait_for(every_service_seen_and_joined, timeout=30)
    spans = observed.receiver.of_trace(trace_id)
    by_name = {span.name: span for span in spans}
    # The HTTP request, the send of PlaceOrder, and a consumer span per service's queue.
    assert by_name["POST /orders"].kind == 2  # SERVER
    assert by_name[f"send {ns}.commands"].kind == 4  # PRODUCER
    processed = {span.service for span in spans if span.kind == 5}  # CONSUMER
    assert processed >= services
    reserve = by_name[f"process {ns}.inventory.reserve_stock"]
    assert reserve.attributes["messaging.system"] == "rabbitmq"
    assert reserve.attributes["messaging.message.conversation_id"] == order_id
    assert reserve.attributes["fleet.order_id"] == order_id
    assert reserve.attributes["fleet.attempt"] == 1
    assert reserve.attributes["messaging.message.id"]
    # Through the outbox: the relay's send spans are in the trace, in every service.
    senders = {span.service for span in spans if span.name == f"send {ns}.events"}
    assert senders >= {"order", "inventory", "payment"}
    # Every span of the trace hangs from another of it, up to the caller's own parent.
    assert roots() == ["POST /orders"], [
        (s.name, s.span_id, s.parent_span_id, s.service, s.kind) for s in spans
    ]


class _WatchedTraces(SpanExporter):
    """Keeps the finished spans of the traces a test watches (this process records the
    spans of every in-process worker from now on; others are dropped at once)."""

    def __init__(self) -> None:
        self.watched: set[int] = set()
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            if span.context is not None and span.context.trace_id in self.watched:
                self.spans.append(span)
        return SpanExportResult.SUCCESS

    def names_in(self, trace_id: int) -> list[str]:
        return [
            span.name
            for span in self.spans
            if span.context is not None and span.context.trace_id == trace_id
        ]


_exporter: _WatchedTraces | None = None


def watched_traces() -> _WatchedTraces:
    """The test process's span exporter, installed once (a global provider is for good)."""
    global _exporter
    if _exporter is None:
        _exporter = _WatchedTraces()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        tracing.install(provider)
    return _exporter


def with_trace(message: OutgoingMessage, trace_id: str) -> OutgoingMessage:
    return dataclasses.replace(
        message, headers={**message.headers, "traceparent": traceparent(trace_id)}
    )


async def test_a_retry_a_dead_lettering_and_a_replay_show_in_their_messages_traces(
    fleet: Fleet,
) -> None:
    exporter = watched_traces()
    retried, poisoned = new_id(), new_id()
    # Twice: a batch tries a transiently failed message again alone before its retry.
    probes.script.transient_failures[retried] = 2
    probes.script.permanent.add(poisoned)
    traces = {order_id: new_trace_id() for order_id in (retried, poisoned)}
    exporter.watched |= {int(trace_id, 16) for trace_id in traces.values()}
    queue = f"{fleet.ns}.inventory.probe_effects"
    async with fleet.worker(probes.probe, with_relay=False), fleet.publisher() as publisher:
        for order_id, trace_id in traces.items():
            message = outgoing(OrderConfirmed(order_id=order_id), queue=queue)
            await publisher.publish(with_trace(message, trace_id))

        def names(order_id: str) -> list[str]:
            return exporter.names_in(int(traces[order_id], 16))

        async def retried_and_applied() -> bool:
            return (
                f"retry {queue}" in names(retried)
                and names(retried).count(f"process {queue}") >= 2
                and probes.script.transient_failures[retried] == 0
            )

        async def dead_lettered() -> bool:
            return f"dead-letter {queue}" in names(poisoned)

        await wait_for(retried_and_applied, timeout=20)
        await wait_for(dead_lettered, timeout=20)
        # The dead letter keeps its headers: replaying it continues the same trace (and,
        # failing for good again, it is dead-lettered again, in it too).
        dlq = dead_letter_queue(queue)
        await replays.replay(fleet.settings, dead_letters.Selection(queue=dlq), operator="tests")

        async def dead_lettered_again() -> bool:
            return names(poisoned).count(f"dead-letter {queue}") == 2

        await wait_for(dead_lettered_again, timeout=20)
    assert f"replay {dlq}" in names(poisoned)
    assert f"dead-letter {queue}" not in names(retried)
    assert f"retry {queue}" not in names(poisoned)
    retry = next(s for s in exporter.spans if s.name == f"retry {queue}")
    assert retry.attributes is not None and retry.attributes["error.type"] == "TransientError"
    await dead_letters.purge(fleet.settings, dlq, None, operator="tests")


# --- Metrics. -----------------------------------------------------------------------------


async def test_handled_counts_rise_with_orders(observed: ObservedFleet) -> None:
    port = observed.metrics_ports["inventory"]
    handled = {"handler": "reserve_stock", "outcome": "applied"}
    before = value(await scrape(port), "fleet_messages_handled_total", **handled)
    for _ in range(2):
        await place_over_http(observed, new_trace_id(), "orchestration")
    samples = await scrape(port)
    after = value(samples, "fleet_messages_handled_total", **handled)
    assert after >= before + 2
    assert value(samples, "fleet_message_handling_seconds_count", handler="reserve_stock") >= 2
    orchestrator = await scrape(observed.metrics_ports["orchestrator"])
    assert value(orchestrator, "fleet_sagas", style="orchestration", state="confirmed") >= 2
    view = await scrape(observed.metrics_ports["order_view"])
    assert value(view, "fleet_saga_duration_seconds_count", style="orchestration") >= 2


async def test_a_poison_message_raises_the_dead_letter_count_and_the_dlq_depth(
    observed: ObservedFleet,
) -> None:
    fleet = observed.fleet
    port = observed.metrics_ports["inventory"]
    queue = f"{fleet.ns}.inventory.reserve_stock"
    before = await scrape(port)
    trace_id = new_trace_id()
    # A reserve_stock queue's message of a type it has no handler for: dead-lettered.
    placed = OrderPlacedV2(
        order_id=new_id(),
        customer_id="rich",
        items=[OrderLine(sku="WIDGET", quantity=1, unit_price=Money.of("1.00", "EUR"))],
        total=Money.of("1.00", "EUR"),
        country="DE",
        saga="orchestration",
    )
    poison = outgoing(
        OrderConfirmed(order_id=placed.order_id), queue=queue, correlation_id=placed.order_id
    )
    async with fleet.publisher() as publisher:
        await publisher.publish(with_trace(poison, trace_id))

    async def risen() -> bool:
        samples = await scrape(port)
        return (
            value(samples, "fleet_dead_letters_total", queue=queue)
            > value(before, "fleet_dead_letters_total", queue=queue)
            and value(samples, "fleet_dlq_depth", queue=dead_letter_queue(queue)) >= 1
        )

    await wait_for(risen, timeout=20)
    # The worker logs JSON (--json): the dead-lettering's line names the message and trace.
    worker = observed.sagas.workers["inventory"]

    async def logged() -> dict[str, Any] | None:
        for line in worker.lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("message_id") == poison.message_id:
                    return dict(entry)
        return None

    entry = await wait_for(logged, timeout=10)
    assert entry["correlation_id"] == placed.order_id
    assert entry["trace_id"] == trace_id
    assert "dead-lettered" in entry["message"]
    await dead_letters.purge(fleet.settings, dead_letter_queue(queue), None, operator="tests")


async def test_with_the_relay_stopped_the_outbox_backlog_and_its_age_rise_then_fall(
    observed: ObservedFleet,
) -> None:
    port = observed.metrics_ports["payment"]
    assert await observed.relay.terminate() == 0
    async with observed.fleet.unit_of_work("payment") as uow:
        emit_probe_events(uow, 3)

    async def waiting() -> bool:
        samples = await scrape(port)
        return (
            value(samples, "fleet_outbox_waiting", service="payment") >= 3
            and value(samples, "fleet_outbox_oldest_age_seconds", service="payment") > 0.5
        )

    await wait_for(waiting, timeout=20)
    observed.relay = await observed.start_relay()

    async def drained() -> bool:
        samples = await scrape(port)
        return (
            value(samples, "fleet_outbox_waiting", service="payment") == 0
            and value(samples, "fleet_outbox_oldest_age_seconds", service="payment") == 0
        )

    await wait_for(drained, timeout=20)


def emit_probe_events(uow: UnitOfWork, count: int) -> None:
    for _ in range(count):
        # Nobody is bound to it on a queue of this test: the relay's publish still confirms
        # (the unrouted exchange keeps it), and what counts here is the outbox row.
        uow.send([OrderConfirmed(order_id=new_id())])


async def test_relay_active_is_1_on_exactly_one_of_two_workers_of_a_service(
    observed: ObservedFleet,
) -> None:
    first = observed.metrics_ports["shipping"]
    (second,) = free_ports(1)
    other = await observed.spawn_worker("shipping", "--metrics-port", str(second))
    try:

        async def reported() -> bool:
            key = ("fleet_relay_active", frozenset({("service", "shipping")}))
            return all([key in await scrape(port) for port in (first, second)])

        await wait_for(reported, timeout=20)
        active = [
            value(await scrape(port), "fleet_relay_active", service="shipping")
            for port in (first, second)
        ]
        assert sorted(active) == [0.0, 1.0], active
    finally:
        assert await other.terminate() == 0


async def test_the_api_serves_metrics_of_its_requests(observed: ObservedFleet) -> None:
    await observed.http.get("/orders/not-a-known-order")
    response = await observed.http.get("/metrics")
    assert response.status_code == 200
    assert re.search(
        r'fleet_http_requests_total\{[^}]*route="/orders/\{order_id\}"[^}]*\} [1-9]', response.text
    ), response.text[:2000]
