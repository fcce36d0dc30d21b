"""``fleet load``: many orders at once, and how long they took."""

from __future__ import annotations

import asyncio

import typer

from cli.output import JsonOption, fail, print_json, print_table, progress_bars


def load(
    orders: int = typer.Option(..., "--orders", min=1, help="How many orders to place."),
    concurrency: int = typer.Option(
        100, "--concurrency", min=1, help="PlaceOrders in flight at once."
    ),
    saga: str = typer.Option("mixed", "--saga", help="orchestration, choreography or mixed."),
    refusals: float = typer.Option(
        0.0, "--refusals", min=0.0, max=1.0, help="Fraction meant to be refused."
    ),
    timeout: float = typer.Option(
        300.0, "--timeout", min=1.0, help="Seconds to wait for all to end."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Place many orders, wait for all, print sagas/s and latency.

    A lost connection to PostgreSQL or RabbitMQ (a server restart) is reopened and the run
    goes on; the report says how many times. Exit 1 if some have not ended within --timeout.
    """
    if saga not in ("orchestration", "choreography", "mixed"):
        fail(f"--saga must be orchestration, choreography or mixed, not {saga!r}", 2)
    from workers.operations.load import run_load
    from workers.runtime.settings import get_settings

    with progress_bars(enabled=not as_json) as progress:
        result = asyncio.run(
            run_load(
                get_settings(),
                orders,
                concurrency,
                saga,
                refusals,
                timeout,
                progress,
                say=lambda line: typer.echo(line, err=True),
            )
        )
    if as_json:
        print_json(result)
    else:
        typer.echo(
            f"{result['ended']}/{result['orders']} ended ({result['confirmed']} confirmed,"
            f" {result['rejected']} rejected, {result['unexpected_outcomes']} unexpected)"
            f" in {result['seconds']} s: {result['sagas_per_second']} sagas/s"
        )
        reconnects = result["reconnects"]
        if reconnects["database"] or reconnects["broker"]:
            typer.echo(
                f"rode out lost connections: reconnected {reconnects['database']} time(s) to"
                f" PostgreSQL, {reconnects['broker']} to RabbitMQ"
            )
        print_table(
            "placement to final, ms",
            ["saga", "p50", "p95", "p99", "mean"],
            [
                (style, v["p50"], v["p95"], v["p99"], v["mean"])
                for style, v in result["latency_ms"].items()
            ],
        )
    if result["ended"] < result["orders"]:
        raise typer.Exit(1)
