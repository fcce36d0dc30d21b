"""What the integration tests share: a namespaced fleet on the real servers, real worker
processes, polling helpers (tests wait for outcomes, they never sleep a fixed time
and hope), messages to send, and the HTTP API and /metrics of the fleet's processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import aio_pika
import asyncpg
import httpx
import pika
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import (
    Envelope,
    Message,
    Money,
    OrderLine,
    OutgoingMessage,
    ReserveStock,
    encode_message,
)
from db.adapters import open_store
from db.engine import create_engine
from db.postgres import PostgresStore
from db.store import Store
from db.unit_of_work import UnitOfWork
from db.unit_of_work import unit_of_work as begin_unit_of_work
from workers.operations import dead_letters
from workers.runtime import catalog, topology
from workers.runtime.consumer import Outcome
from workers.runtime.publisher import ConfirmedPublisher
from workers.runtime.service import Service
from workers.runtime.settings import ServiceSettings, Settings
from workers.runtime.worker import Worker

# What a tap has seen so far.
Seen = list[aio_pika.abc.AbstractIncomingMessage]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def wait_for(
    condition: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.1
) -> Any:
    """Poll until ``condition()`` is truthy and return it; fail with the last value if not."""
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        value = await condition()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


@dataclass
class FleetProcess:
    """A real ``fleet`` process (``python -m cli ...``) whose output lines are collected."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.lines.append(line.decode(errors="replace").rstrip())

    async def wait_for_line(self, text: str, timeout: float = 60.0) -> str:
        async def found() -> str | None:
            if self.process.returncode is not None and not any(text in line for line in self.lines):
                raise AssertionError(
                    f"process exited {self.process.returncode}:\n" + "\n".join(self.lines[-30:])
                )
            return next((line for line in self.lines if text in line), None)

        result: str = await wait_for(found, timeout=timeout)
        return result

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no acks, no lock release but by the connections dying."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def terminate(self, timeout: float = 30.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self.reader is not None:
            await self.reader
        return code


class Fleet:
    def __init__(self, settings: Settings, sections: Sequence[ServiceSettings] = ()) -> None:
        self.settings = settings
        # Services' own settings for this namespace, given to its workers (as environment
        # variables to the processes).
        self.sections = {type(section): section for section in sections}
        self.engines: dict[str, AsyncEngine] = {}
        self.stores: dict[str, Store] = {}
        # Services the tests declare themselves (probes): their queues go at teardown too.
        self.extra_services: list[Service] = []
        self.processes: list[FleetProcess] = []

    @property
    def ns(self) -> str:
        return self.settings.namespace

    def env(self, **overrides: Any) -> dict[str, str]:
        """The environment a ``fleet`` process needs to join this test's namespace."""
        values = {**self.settings.model_dump()}
        for section in self.sections.values():
            values.update(section.model_dump())
        values.update(overrides)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        spelled = {f"FLEET_{key.upper()}": _env_value(value) for key, value in values.items()}
        # An unset optional setting stays unset (not the string "None").
        env.update({key: value for key, value in spelled.items() if value is not None})
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def engine(self, service: str) -> AsyncEngine:
        if service not in self.engines:
            # pre_ping: the tests' own queries must survive the outages the tests cause.
            self.engines[service] = create_engine(
                self.settings.database_url(service), pool_size=5, pre_ping=True
            )
        return self.engines[service]

    async def store(self, service: str) -> Store:
        """``service``'s database as its worker reaches it (its own role, its engine)."""
        if service not in self.stores:
            self.stores[service] = await open_store(self.settings.database_url(service), size=2)
        return self.stores[service]

    async def pool(self, service: str) -> asyncpg.Pool:
        """The asyncpg pool of a service on PostgreSQL."""
        store = await self.store(service)
        assert isinstance(store, PostgresStore), f"{service} is not on PostgreSQL"
        return store.pool

    @contextlib.asynccontextmanager
    async def connection(self, service: str) -> AsyncIterator[Any]:
        """A connection of the service's engine (asyncpg's, or MariaDB's)."""
        async with (await self.store(service)).connection() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def transaction(self, service: str) -> AsyncIterator[Any]:
        async with (await self.store(service)).transaction() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def unit_of_work(self, service: str) -> AsyncIterator[UnitOfWork]:
        """A unit of work in ``service``'s database, as the tests' own producer."""
        store = await self.store(service)
        async with begin_unit_of_work(store, producer="tests", namespace=self.ns) as uow:
            yield uow

    async def spawn(
        self, *args: str, environment: Mapping[str, str] | None = None, **env: Any
    ) -> FleetProcess:
        """``fleet *args`` in this namespace (``env``: settings; ``environment``: other
        variables, such as OTEL_*)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli",
            *args,
            cwd=ROOT,
            env={**self.env(**env), **(environment or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        handle = FleetProcess(process)
        handle.reader = asyncio.create_task(handle._read())
        self.processes.append(handle)
        return handle

    async def cli(self, *args: str, **env: Any) -> tuple[int, str]:
        """Run a ``fleet`` command to its end: (exit code, its output)."""
        handle = await self.spawn(*args, **env)
        code = await asyncio.wait_for(handle.process.wait(), 60)
        assert handle.reader is not None
        await handle.reader
        return code, "\n".join(handle.lines)

    @contextlib.asynccontextmanager
    async def worker(
        self,
        service: Service,
        *,
        with_relay: bool = True,
        settings: Settings | None = None,
        section: ServiceSettings | None = None,
    ) -> AsyncIterator[Worker]:
        """A worker in this test's own process, with this namespace's section of its
        service unless given one."""
        if service.name not in catalog.SERVICES or catalog.load(service.name) is not service:
            if not any(known is service for known in self.extra_services):
                self.extra_services.append(service)
        if section is None and service.settings is not None:
            section = self.sections.get(service.settings)
        worker = Worker(settings or self.settings, service, with_relay=with_relay, section=section)
        stop, started = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(worker.run(stop, started))
        starting = asyncio.ensure_future(started.wait())
        await asyncio.wait([task, starting], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            starting.cancel()
            task.result()
        try:
            yield worker
        finally:
            stop.set()
            await task

    @contextlib.asynccontextmanager
    async def publisher(self) -> AsyncIterator[ConfirmedPublisher]:
        publisher = await ConfirmedPublisher.connect(self.settings.amqp_url)
        try:
            yield publisher
        finally:
            await publisher.close()

    async def queue_depth(self, name: str) -> int:
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            return queue.declaration_result.message_count or 0
        finally:
            await connection.close()

    async def drain(self, service: Service) -> None:
        """Let ``service`` consume (and, where not its business, ignore) what earlier test
        modules left in its queues, so that a module's counts start from nothing."""
        async with self.worker(service, with_relay=False):
            for spec in service.queue_specs(self.ns):
                await wait_for(partial(self.queue_empty, spec.name), timeout=60)

    async def queue_empty(self, name: str) -> bool:
        return await self.queue_depth(name) == 0

    async def dead_letter(self, queue: str, text: str) -> dead_letters.DeadLetter | None:
        """The dead letter of ``queue`` whose body mentions ``text`` (an order id), if any."""
        letters = await dead_letters.browse(self.settings, topology.dead_letter_queue(queue), 1000)
        return next((letter for letter in letters if text in letter.body.decode()), None)

    async def emitted(self, service: str, type_: str, order_id: str) -> list[dict[str, Any]]:
        """The bodies of ``service``'s outbox messages of ``type_`` about ``order_id``."""
        async with self.engine(service).connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT convert_from(body, 'UTF8') FROM outbox WHERE type = :type"
                    " AND convert_from(body, 'UTF8')::jsonb->>'order_id' = :id ORDER BY id"
                ),
                {"type": type_, "id": order_id},
            )
            return [json.loads(body) for (body,) in rows]

    async def row(self, service: str, sql: str, **params: Any) -> dict[str, Any] | None:
        """The first row of a query on ``service``'s database, as a dict."""
        async with self.engine(service).connect() as conn:
            found = (await conn.execute(sa.text(sql), params)).first()
            return None if found is None else dict(found._mapping)

    @contextlib.asynccontextmanager
    async def tap(self, exchange: str, routing_key: str) -> AsyncIterator[Seen]:
        """Every message routed to ``exchange`` with ``routing_key`` while open, as a list."""
        connection = await aio_pika.connect(self.settings.amqp_url)
        seen: Seen = []
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange, routing_key)

            async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                seen.append(message)

            await queue.consume(keep, no_ack=True)
            yield seen
        finally:
            await connection.close()

    async def close(self) -> None:
        for handle in self.processes:
            await handle.kill()
            if handle.reader is not None:
                handle.reader.cancel()
        for engine in self.engines.values():
            await engine.dispose()
        for store in self.stores.values():
            await store.close()


def outgoing(
    message: Message,
    *,
    queue: str | None = None,
    exchange: str | None = None,
    message_id: str | None = None,
    correlation_id: str | None = None,
) -> OutgoingMessage:
    """``message`` with a fresh envelope, to a queue (default exchange) or ``exchange``."""
    envelope = Envelope.new(
        message.TYPE, message.VERSION, "tests", message_id=message_id, correlation_id=correlation_id
    )
    return OutgoingMessage.of(
        envelope,
        encode_message(message),
        exchange="" if queue else (exchange or ""),
        routing_key=queue or message.TYPE,
    )


def ignored(worker: Worker, handler: str) -> int:
    """Deliveries of ``handler`` its filter left to others (acked, no transaction, no trace)."""
    assert worker.consumer is not None, "the worker has not started"
    return worker.consumer.outcomes[handler, Outcome.IGNORED]


async def wait_ignored(worker: Worker, handler: str, at_least: int) -> None:
    async def enough() -> bool:
        return ignored(worker, handler) >= at_least

    await wait_for(enough)


def new_id() -> str:
    return str(uuid.uuid4())


def reserve_command(order_id: str, *lines: tuple[str, int]) -> ReserveStock:
    items = [
        OrderLine(sku=sku, quantity=quantity, unit_price=Money.of("1.00", "EUR"))
        for sku, quantity in lines
    ]
    total = Money.of(str(sum(quantity for _, quantity in lines)) + ".00", "EUR")
    return ReserveStock(
        order_id=order_id,
        items=items,
        saga="orchestration",
        customer_id="customer-1",
        total=total,
        country="DE",
    )


def not_json(queue: str) -> OutgoingMessage:
    """A reserve_stock command to ``queue`` whose body is not JSON: undecodable."""
    envelope = Envelope.new(ReserveStock.TYPE, ReserveStock.VERSION, "tests", new_id())
    return OutgoingMessage.of(envelope, b"{not json", exchange="", routing_key=queue)


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar()


async def publish_with_another_client(amqp_url: str, message: OutgoingMessage) -> None:
    """Publish through pika, which (unlike aio-pika) sends no message id unless given one."""

    def publish() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(
                message.exchange,
                message.routing_key,
                message.body,
                pika.BasicProperties(
                    message_id=message.message_id,
                    type=message.type,
                    correlation_id=message.correlation_id,
                    content_type=message.content_type,
                    headers=dict(message.headers),
                    delivery_mode=2,
                ),
                mandatory=True,
            )
        finally:
            connection.close()

    await asyncio.to_thread(publish)


# --- Sockets, HTTP and /metrics of the fleet's processes. ---------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1 just now (bound at once, so all different)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# A scrape of /metrics: the value of each sample, by its name and labels.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    """The samples a process serves on ``/metrics`` at ``port``."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


async def start_api(fleet: Fleet, **env: Any) -> tuple[FleetProcess, str]:
    """``fleet api`` on a free port; the process and its base URL."""
    process = await fleet.spawn("api", "--port", "0", **env)
    line = await process.wait_for_line("listening on http://")
    found = re.search(r"http://\S+", line)
    assert found is not None, line
    return process, found.group(0)


Line = tuple[str, int, str]  # sku, quantity, unit price in EUR


def order_body(
    customer: str, *lines: Line, country: str = "DE", saga: str = "orchestration"
) -> dict[str, Any]:
    """The JSON body of ``POST /orders``."""
    return {
        "customer_id": customer,
        "items": [
            {"sku": sku, "quantity": quantity, "unit_price": {"amount": price, "currency": "EUR"}}
            for sku, quantity, price in lines
        ],
        "country": country,
        "saga": saga,
    }


def _env_value(value: Any) -> str | None:
    """A setting's value as the environment spells it."""
    if value is None:
        return None
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, timedelta):
        return str(value.total_seconds())
    return str(value)
