"""Commands that run things: workers, relays, the topology, test messages, seeding."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import typer

from cli.output import JsonOption, fail, log_as_json, print_json
from workers.runtime.catalog import SERVICES


def _serve(
    work: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    as_json: bool,
    *,
    service: str,
    metrics_port: int | None = None,
) -> None:
    """Run ``work`` until SIGINT or SIGTERM, which sets its stop event (then it drains)."""
    logging.getLogger("fleet").setLevel(logging.INFO)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    if as_json:
        log_as_json()
    _observe(service, metrics_port)

    from workers.runtime import loop, task_dump
    from workers.runtime.settings import get_settings

    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            running.add_signal_handler(signum, stop.set)
        task_dump.dump_on_sigusr1()  # kill -USR1: every task's stack in the log
        await work(stop)

    loop.run(main(), get_settings())


def worker(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    no_relay: bool = typer.Option(False, "--no-relay", help="Consume only; run the relay apart."),
    as_json: bool = typer.Option(False, "--json", help="Log JSON lines."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=0, max=65535, help="Serve Prometheus /metrics on this port."
    ),
) -> None:
    """Run one service's consumers and its outbox relay.

    Until Ctrl-C or SIGTERM, which stop consuming and let what is in flight finish.
    Traces go where the OTEL_* variables say (nowhere without them).
    """
    from workers.runtime import catalog
    from workers.runtime.settings import get_settings
    from workers.runtime.worker import Worker

    runnable = catalog.load(service)
    worker = Worker(get_settings(), runnable, with_relay=not no_relay)
    _serve(worker.run, as_json, service=service, metrics_port=metrics_port)


def _observe(service: str, metrics_port: int | None) -> None:
    """Tracing from the OTEL_* variables, and /metrics when a port is given."""
    from workers.runtime import metrics, tracing

    tracing.configure(service)
    if metrics_port is not None:
        try:
            port = metrics.serve(metrics_port)
        except OSError as error:
            fail(f"cannot serve metrics on port {metrics_port}: {error.strerror or error}")
        logging.getLogger("fleet").info("metrics on http://127.0.0.1:%d/metrics", port)


def relay(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    as_json: bool = typer.Option(False, "--json", help="Log JSON lines."),
) -> None:
    """Run one service's outbox relay alone.

    Several may run: one publishes, a standby takes over if it dies.
    """
    if service not in SERVICES:
        fail(f"unknown service {service!r}; services are {', '.join(SERVICES)}", 2)
    from workers.runtime.relay import run_relay
    from workers.runtime.settings import get_settings

    settings = get_settings()
    _serve(lambda stop: run_relay(settings, service, stop), as_json, service=service)


def topology(as_json: bool = JsonOption) -> None:
    """Declare the exchanges and every service's queues.

    With their DLQs and the namespace's delay tiers; safe to repeat.
    """
    from workers.runtime import catalog
    from workers.runtime.settings import get_settings
    from workers.runtime.worker import declare_topology

    settings = get_settings()
    services = catalog.load_all()
    asyncio.run(declare_topology(settings, services))
    queues = [spec.name for service in services for spec in service.queue_specs(settings.namespace)]
    if as_json:
        print_json({"namespace": settings.namespace, "queues": queues})
    else:
        typer.echo(
            f"declared {len(queues)} queue(s), their DLQs and the delay tiers"
            f" in {settings.namespace}"
        )


def publish(
    type_: str = typer.Argument(..., metavar="TYPE", help="Message type, e.g. order.placed."),
    data: str = typer.Option(..., "--data", help="The body, as JSON."),
    version: int | None = typer.Option(
        None, "--version", help="Contract version (default: newest)."
    ),
    correlation_id: str | None = typer.Option(None, "--correlation-id"),
    message_id: str | None = typer.Option(
        None, "--message-id", help="Fixed id (repeated by --count: duplicates)."
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
    """Publish test messages, valid or deliberately not.

    Straight to the broker, each confirmed; checked against the contract unless --raw.
    """
    from workers.operations import publish as test_messages
    from workers.runtime.settings import get_settings

    settings = get_settings()
    message = test_messages.prepare(
        settings, type_, data, version=version, raw=raw, exchange=exchange
    )
    from workers.runtime import tracing

    tracing.configure("fleet-cli")
    sent = asyncio.run(
        test_messages.publish(
            settings, message, count=count, correlation_id=correlation_id, message_id=message_id
        )
    )
    if as_json:
        print_json(
            {
                "type": type_,
                "version": message.version,
                "exchange": message.exchange,
                "message_ids": sent,
            }
        )
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
    """Add stock and customer accounts to play with.

    Adds to what is there, and prints the SKUs and customer ids.
    """
    from workers.operations import seed as seeding
    from workers.runtime.settings import get_settings

    amount = seeding.parse_balance(balance)
    seeded = asyncio.run(
        seeding.seed(
            get_settings(),
            skus=skus,
            stock=stock,
            customers=customers,
            balance=amount,
            currency=currency,
        )
    )
    if as_json:
        print_json(
            {
                "skus": seeded.skus,
                "stock_added": seeded.stock_added,
                "customers": seeded.customers,
                "balance_added": str(seeded.balance_added),
                "currency": seeded.currency,
            }
        )
    else:
        typer.echo("\n".join([*seeded.skus, *seeded.customers]))


def register(app: typer.Typer) -> None:
    app.command()(worker)
    app.command()(relay)
    app.command()(topology)
    app.command()(publish)
    app.command()(seed)
