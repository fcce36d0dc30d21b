"""``fleet up``: the whole fleet on one machine, every service in its own process."""

from __future__ import annotations

import asyncio

import typer

from cli.output import JsonOption, print_json


def up(
    only: str | None = typer.Option(
        None, "--services", help="Comma-separated, e.g. inventory,payment (default: all)."
    ),
    replicas: int = typer.Option(1, "--replicas", min=1, max=16, help="Processes per service."),
    as_json: bool = JsonOption,
) -> None:
    """Run every service as its own process.

    Databases and topology are created first where missing; a worker that dies is
    restarted; Ctrl-C or SIGTERM stops them all gracefully. Each worker serves /metrics on
    a port from FLEET_METRICS_PORT (9464) upwards (0: none).
    """
    from workers.operations import namespace
    from workers.operations.supervisor import Supervisor, chosen_services
    from workers.runtime.settings import get_settings

    names = chosen_services(only)
    settings = get_settings()
    asyncio.run(namespace.set_up(settings))
    supervisor = Supervisor(names, replicas, as_json, settings.metrics_port)
    if as_json:
        print_json(
            {
                "namespace": settings.namespace,
                "processes": [label for _, label in supervisor.labels],
                "metrics_ports": supervisor.metrics_ports,
            }
        )
    asyncio.run(supervisor.run())
