"""Commands that run things: workers, relays, the topology, test messages."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from typing import Any

import typer
from aiormq.exceptions import PublishError
from sqlalchemy.ext.asyncio import AsyncConnection

from cli.output import JsonOption, fail, first_error, print_json
from contracts import Envelope, registry
from contracts.routing import commands_exchange, events_exchange, exchange_for
from db.engine import create_engine
from workers import services
from workers.inventory import store as inventory_store
from workers.payment import store as payment_store
from workers.publisher import ConfirmedPublisher, Outgoing
from workers.relay import Relay
from workers.runtime import Worker, declare_topology
from workers.settings import SERVICES, get_settings


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line, for log shippers (``--json`` on long-running commands)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record),
            "logger": record.name,
            "level": record.levelname,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _serve(work: Callable[[asyncio.Event], Coroutine[Any, Any, None]], as_json: bool) -> None:
    """Run ``work`` until SIGINT or SIGTERM, which sets its stop event (then it drains)."""
    logging.getLogger("fleet").setLevel(logging.INFO)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    if as_json:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLogFormatter())

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await work(stop)

    asyncio.run(main())


def worker(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    no_relay: bool = typer.Option(False, "--no-relay", help="Consume only; run the relay apart."),
    as_json: bool = typer.Option(False, "--json", help="Log JSON lines."),
) -> None:
    """Run one service's consumers and its outbox relay until Ctrl-C or SIGTERM."""
    settings = get_settings()
    runnable = services.load(service)
    _serve(lambda stop: Worker(settings, runnable, with_relay=not no_relay).run(stop), as_json)


def relay(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    as_json: bool = typer.Option(False, "--json", help="Log JSON lines."),
) -> None:
    """Run one service's outbox relay alone (a standby takes over if the active one dies)."""
    if service not in SERVICES:
        fail(f"unknown service {service!r}; services are {', '.join(SERVICES)}", 2)
    settings = get_settings()

    async def work(stop: asyncio.Event) -> None:
        publisher = await ConfirmedPublisher.connect(settings.amqp_url)
        try:
            await Relay(settings, service, publisher).run(stop)
        finally:
            await publisher.close()

    _serve(work, as_json)


def topology(as_json: bool = JsonOption) -> None:
    """Declare the exchanges and every runnable service's queues, retry queues and DLQs."""
    settings = get_settings()
    loaded = services.load_all()
    asyncio.run(declare_topology(settings, loaded))
    queues = [spec.name for service in loaded for spec in service.queue_specs(settings.namespace)]
    if as_json:
        print_json({"namespace": settings.namespace, "queues": queues})
    else:
        typer.echo(
            f"declared {len(queues)} queue(s), their retry queues and DLQs in {settings.namespace}"
        )


def publish(
    type_: str = typer.Argument(..., metavar="TYPE", help="Message type, e.g. order.placed."),
    data: str = typer.Option(..., "--data", help="The body, as JSON."),
    version: int | None = typer.Option(
        None, "--version", help="Contract version (default: newest)."
    ),
    correlation_id: str | None = typer.Option(None, "--correlation-id"),
    message_id: str | None = typer.Option(
        None,
        "--message-id",
        help="Fixed id (repeated by --count: duplicates); '' sends none (--raw).",
    ),
    count: int = typer.Option(1, "--count", min=1, help="How many messages to send."),
    raw: bool = typer.Option(
        False, "--raw", help="Send --data as given, unvalidated, to try bad messages."
    ),
    exchange: str | None = typer.Option(
        None, "--exchange", help="events or commands; needed only for an unknown type with --raw."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Publish test messages straight to the broker (confirmed), valid or deliberately not."""
    settings = get_settings()
    known = type_ in registry.types()
    if not raw:
        if not known:
            fail(f"unknown message type {type_!r} (use --raw to send it anyway)", 2)
        chosen = version or registry.latest_version(type_)
        try:
            parsed = json.loads(data)
        except json.JSONDecodeError as error:
            fail(f"--data is not JSON: {error}", 2)
        model = registry.model_for(type_, chosen)
        try:
            body = registry.encode(model.model_validate(parsed))
        except Exception as error:  # pydantic's ValidationError, summarised
            fail(f"--data is not a valid {type_} v{chosen}: {first_error(error)}", 2)
    else:
        chosen = version or (registry.latest_version(type_) if known else 1)
        body = data.encode()

    if exchange is None:
        target = (
            exchange_for(settings.namespace, registry.kind(type_))
            if known
            else events_exchange(settings.namespace)
        )
    elif exchange in ("events", "commands"):
        target = (
            events_exchange(settings.namespace)
            if exchange == "events"
            else commands_exchange(settings.namespace)
        )
    else:
        fail(f"--exchange must be events or commands, not {exchange!r}", 2)

    async def send() -> list[str | None]:
        publisher = await ConfirmedPublisher.connect(settings.amqp_url)
        sent: list[str | None] = []
        try:
            for _ in range(count):
                envelope = Envelope.new(
                    type_,
                    chosen,
                    "fleet-cli",
                    correlation_id=correlation_id,
                    message_id=message_id,
                )
                outgoing = Outgoing.from_envelope(
                    envelope, exchange=target, routing_key=type_, body=body
                )
                await publisher.publish(outgoing)
                sent.append(outgoing.message_id)
        except PublishError:
            fail(
                f"no queue is bound for {type_} on {target}: start a worker or run 'fleet topology'"
            )
        finally:
            await publisher.close()
        return sent

    sent = asyncio.run(send())
    if as_json:
        print_json({"type": type_, "version": chosen, "exchange": target, "message_ids": sent})
    else:
        for sent_id in sent:
            typer.echo(sent_id)


def seed(
    skus: int = typer.Option(10, "--skus", min=0, help="How many SKUs (SKU-0001, SKU-0002, ...)."),
    stock: int = typer.Option(100, "--stock", min=1, help="Units added to each SKU."),
    customers: int = typer.Option(
        0, "--customers", min=0, help="How many customers (CUST-0001...)."
    ),
    balance: str = typer.Option("1000.00", "--balance", help="Money added to each account."),
    currency: str = typer.Option("EUR", "--currency", help="The accounts' currency."),
    as_json: bool = JsonOption,
) -> None:
    """Add stock and customer accounts to play with (adds to what is there; prints the ids)."""
    try:
        amount = Decimal(balance)
        if amount < 0 or amount != amount.quantize(Decimal("0.01")):
            raise InvalidOperation
    except InvalidOperation:
        fail(f"--balance must be an amount like 1000.00, not {balance!r}", 2)
    settings = get_settings()
    sku_names = [f"SKU-{n:04d}" for n in range(1, skus + 1)]
    customer_ids = [f"CUST-{n:04d}" for n in range(1, customers + 1)]

    async def add(
        service: str, write: Callable[[AsyncConnection], Coroutine[Any, Any, None]]
    ) -> None:
        engine = create_engine(settings.database_url(service), pool_size=1)
        try:
            async with engine.begin() as conn:
                await write(conn)
        finally:
            await engine.dispose()

    async def stock_up(conn: AsyncConnection) -> None:
        for name in sku_names:
            await inventory_store.seed(conn, name, stock)

    async def fund(conn: AsyncConnection) -> None:
        for customer in customer_ids:
            await payment_store.seed_customer(conn, customer, amount, currency)

    async def both() -> None:
        if sku_names:
            await add("inventory", stock_up)
        if customer_ids:
            await add("payment", fund)

    try:
        asyncio.run(both())
    except ValueError as error:  # an account in another currency
        fail(str(error))
    if as_json:
        print_json(
            {
                "skus": sku_names,
                "stock_added": stock,
                "customers": customer_ids,
                "balance_added": str(amount),
                "currency": currency,
            }
        )
    else:
        typer.echo("\n".join([*sku_names, *customer_ids]))


def register(app: typer.Typer) -> None:
    app.command()(worker)
    app.command()(relay)
    app.command()(topology)
    app.command()(publish)
    app.command()(seed)
