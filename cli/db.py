"""``fleet db``: each service's own database."""

from __future__ import annotations

import asyncio

import typer

from cli.output import JsonOption, print_json, print_table
from db.provision import ServiceDatabase, provision
from workers.settings import SERVICES, Settings, get_settings

app = typer.Typer(help="Each service's own database.", no_args_is_help=True)


def service_databases(settings: Settings) -> list[ServiceDatabase]:
    return [
        ServiceDatabase(
            service=service,
            name=settings.database_name(service),
            password=settings.db_password,
            url=settings.database_url(service),
        )
        for service in SERVICES
    ]


@app.command()
def init(as_json: bool = JsonOption) -> None:
    """Create each service's role and database and apply its migrations (idempotent)."""
    settings = get_settings()
    results = asyncio.run(provision(settings.pg_admin_url, service_databases(settings)))
    if as_json:
        print_json([result.__dict__ for result in results])
        return
    print_table(
        f"databases of namespace {settings.namespace}",
        ["service", "database", "role", "database created", "migrated"],
        [
            (
                r.service,
                r.name,
                "created" if r.created_role else "kept",
                "yes" if r.created_database else "no",
                f"{r.migrated_from or 'empty'} -> {r.migrated_to}"
                if r.migrated_from != r.migrated_to
                else f"at {r.migrated_to}",
            )
            for r in results
        ],
    )
