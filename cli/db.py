"""``fleet db init`` and ``fleet teardown``: a namespace's databases, and all of it removed."""

from __future__ import annotations

import asyncio

import typer

from cli.output import JsonOption, command_group, fail, print_json, print_table

app = command_group("Each service's own database.")


@app.command()
def init(as_json: bool = JsonOption) -> None:
    """Create each service's role and database, and migrate it.

    A service on MariaDB (FLEET_ENGINES='{"payment": "mariadb"}') gets its database and user
    on FLEET_MARIADB_ADMIN_URL's server, and on PostgreSQL a role that may only append to
    the operations database's audit log.

    Every role gets a secret of its own: the one given (FLEET_DB_SECRETS, FLEET_DB_URLS),
    else one generated once and kept in FLEET_SECRETS_FILE (mode 0600). Idempotent: a
    second run changes nothing but setting each role's password to its secret again.
    """
    from workers.operations import namespace
    from workers.runtime.settings import get_settings

    settings = get_settings()
    results = asyncio.run(namespace.init_databases(settings))
    if as_json:
        print_json([result.__dict__ for result in results])
        return
    print_table(
        f"databases of namespace {settings.namespace}",
        ["service", "engine", "database", "role", "database created", "migrated"],
        [
            (
                r.service,
                r.engine,
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
    if settings.secrets_path.exists():
        typer.echo(f"secrets not given in the environment are kept in {settings.secrets_path}")


def teardown(
    namespace_name: str = typer.Option(
        ..., "--namespace", help="The namespace to remove, e.g. staging (not read from FLEET_)."
    ),
    yes: bool = typer.Option(False, "--yes", help="Confirm: everything in it is gone for good."),
    as_json: bool = JsonOption,
) -> None:
    """Remove a namespace: queues, exchanges, databases, roles, the secrets kept for them.

    For good, messages and data with them; the delay tiers removed are those that
    FLEET_RETRY_DELAYS_MS names.
    """
    if not yes:
        fail(
            f"teardown deletes namespace {namespace_name}'s queues and databases for good:"
            " add --yes to confirm",
            2,
        )
    from workers.operations import namespace
    from workers.runtime.settings import Settings

    settings = Settings(namespace=namespace_name)  # the rest from the environment, as ever
    removed = asyncio.run(namespace.tear_down(settings))
    if as_json:
        print_json(removed.__dict__)
    else:
        typer.echo(
            f"removed namespace {removed.namespace}: {len(removed.queues)} queue(s),"
            f" {len(removed.exchanges)} exchange(s), {len(removed.databases)} database(s)"
            f" with their roles, {len(removed.secrets)} kept secret(s)"
        )
