"""``fleet chaos``: faults injected into a running ``fleet up`` under orders, then the proof."""

from __future__ import annotations

import asyncio
from collections import Counter

import typer

from cli.output import JsonOption, print_json, print_table


def chaos(
    duration: float = typer.Option(60.0, "--duration", help="Seconds of orders under fire."),
    orders: int | None = typer.Option(
        None, "--orders", help="Orders to place at most (default: --rate x --duration)."
    ),
    rate: float = typer.Option(5.0, "--rate", help="Orders placed per second."),
    every: float = typer.Option(10.0, "--kill-every", help="Seconds between faults."),
    faults: str = typer.Option(
        "kill,connections,database",
        "--faults",
        help="Comma-separated: kill, connections, database, broker.",
    ),
    pick: str = typer.Option(
        "round-robin", "--pick", help="round-robin (the kinds in turn) or random."
    ),
    databases: str | None = typer.Option(
        None,
        "--databases",
        help="Comma-separated services whose databases the database fault may hit"
        " (default: every service's).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random picks (targets, kinds)."),
    quiet_timeout: float = typer.Option(
        180.0, "--quiet-timeout", help="Seconds to wait, afterwards, for every order to end."
    ),
    rabbitmq_node: str | None = typer.Option(
        None, "--rabbitmq-node", help="rabbitmqctl -n NODE: the node to restart and list."
    ),
    rabbitmqctl: str = typer.Option(
        "rabbitmqctl", "--rabbitmqctl", help="The rabbitmqctl program to run."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Place orders against a running 'fleet up' while killing its workers, cutting their
    broker connections, terminating their database backends and (with broker) restarting
    the broker application; then wait for quiet and check every invariant.

    Exit 0 only if every invariant holds.
    """
    from cli.operator import operator_name
    from workers.operations.chaos import ChaosOptions, parse_faults, parse_services, run_chaos
    from workers.runtime.settings import get_settings

    options = ChaosOptions(
        duration=duration,
        rate=rate,
        orders=orders,
        every=every,
        faults=parse_faults(faults),
        databases=parse_services(databases),
        pick=pick,
        seed=seed,
        quiet_timeout=quiet_timeout,
        rabbitmq_node=rabbitmq_node,
        rabbitmqctl=rabbitmqctl,
    )

    def say(line: str) -> None:
        typer.echo(line, err=as_json)  # with --json, stdout holds the JSON alone

    report = asyncio.run(run_chaos(get_settings(), options, say=say, operator=operator_name()))
    if as_json:
        print_json(report.as_dict())
    else:
        injected = report.injected()
        skipped = Counter(fault.kind for fault in report.faults if not fault.injected)
        print_table(
            "faults",
            ["kind", "injected", "skipped (nothing to hit)"],
            [(kind, injected[kind], skipped[kind]) for kind in options.faults],
        )
        print_table(
            "orders",
            ["placed", "ended", "confirmed", "rejected", "unexpected outcomes"],
            [
                (
                    report.placed,
                    report.ended,
                    report.confirmed,
                    report.rejected,
                    report.unexpected_outcomes,
                )
            ],
        )
        print_table(
            "invariants",
            ["invariant", "result", "first problem"],
            [
                (
                    check.name,
                    "pass" if check.passed else "FAIL",
                    check.problems[0] if check.problems else "",
                )
                for check in report.checks
            ],
        )
        reconnects = report.reconnects
        typer.echo(
            f"reconnected {reconnects.get('database', 0)} time(s) to PostgreSQL,"
            f" {reconnects.get('broker', 0)} to RabbitMQ;"
            f" {'every invariant holds' if report.passed else 'INVARIANTS BROKEN'}"
        )
    if not report.passed:
        raise typer.Exit(1)
