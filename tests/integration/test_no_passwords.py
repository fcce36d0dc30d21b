"""No password from a configured URL, FLEET_DB_SECRETS or the secrets file appears in
anything the fleet prints: log lines, one-line errors, ``--json`` documents, the API's
answers. Real processes with a distinctive password in FLEET_PG_ADMIN_URL, FLEET_AMQP_URL,
FLEET_DB_URLS and FLEET_DB_SECRETS (the services' roles are made with those), and the
secrets ``fleet db init`` generated for the other roles (the reader's, the operations
role's) in the namespace's secrets file, working and failing."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest

from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.support import Fleet, FleetProcess
from workers.operations import namespace
from workers.runtime.catalog import SERVICES

pytestmark = pytest.mark.integration

# Distinctive, and with a character a URL must escape (so both spellings are looked for).
PASSWORD = "Zq7!leak-PW-5e"
IN_URL = quote(PASSWORD, safe="")
# Each service's role its own secret, every one of them containing the distinctive password.
SERVICE_SECRETS = {service: f"{PASSWORD}-{service}" for service in SERVICES}


def with_password(url: str, *, port: int | None = None, user: str | None = None) -> str:
    """``url`` with the distinctive password, and another ``port`` or ``user`` if given."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    shown_port = port if port is not None else parts.port
    netloc = f"{user or parts.username or 'postgres'}:{IN_URL}@{host}"
    if shown_port is not None:
        netloc += f":{shown_port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def closed_port() -> int:
    """A port nothing listens on (free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def secrets_of(fleet: Fleet) -> list[str]:
    """What must never be printed: the distinctive password both ways, the secrets generated
    into the namespace's secrets file (both ways), and the servers' own passwords as they
    stand in a URL (``:guest@``: the word alone is also a user name)."""
    found = [PASSWORD, IN_URL]
    generated = json.loads(fleet.settings.secrets_path.read_text())
    found += [spelling for secret in generated.values() for spelling in (secret, quote(secret))]
    for url in (fleet.settings.amqp_url, fleet.settings.pg_admin_url):
        password = urlsplit(url).password
        if password:
            found.append(f":{password}@")
    return found


def assert_no_password(fleet: Fleet, lines: list[str], what: str) -> None:
    assert lines, f"{what}: printed nothing, so nothing was checked"
    leaks = [line for line in lines if any(secret in line for secret in secrets_of(fleet))]
    assert leaks == [], f"{what} printed a password:\n" + "\n".join(leaks)


@pytest.fixture(scope="module")
async def fleet(server_urls: tuple[str, str]) -> AsyncIterator[Fleet]:
    amqp_url, pg_admin_url = server_urls
    # The servers here may trust local connections: the admin URL then takes any password.
    if urlsplit(pg_admin_url).password is None:
        pg_admin_url = with_password(pg_admin_url)
    settings = namespace_settings((amqp_url, pg_admin_url), db_secrets=SERVICE_SECRETS)
    assert IN_URL in settings.pg_admin_url or urlsplit(pg_admin_url).password
    async with namespaced_fleet(settings) as fleet:
        # The reader's and the operations role's secrets were generated and kept.
        kept = json.loads(settings.secrets_path.read_text())
        assert set(kept) == {namespace.reader_role(settings), settings.database_name("ops")}
        yield fleet


async def run(fleet: Fleet, *args: str, **env: Any) -> tuple[int, list[str]]:
    """A ``fleet`` command to its end: exit code and every line of stdout and stderr."""
    handle = await fleet.spawn(*args, **env)
    code = await asyncio.wait_for(handle.process.wait(), 60)
    assert handle.reader is not None
    await handle.reader
    return code, handle.lines


async def run_all(
    fleet: Fleet, commands: list[tuple[tuple[str, ...], dict[str, Any]]]
) -> list[tuple[int, list[str]]]:
    """``run`` for each (arguments, settings), a few at a time (most wait on the network)."""
    slots = asyncio.Semaphore(3)

    async def one(args: tuple[str, ...], env: dict[str, Any]) -> tuple[int, list[str]]:
        async with slots:
            return await run(fleet, *args, **env)

    return list(await asyncio.gather(*(one(args, env) for args, env in commands)))


async def stop(handle: FleetProcess) -> list[str]:
    await handle.terminate()
    return handle.lines


async def test_working_commands_print_no_password(fleet: Fleet) -> None:
    ns = fleet.ns
    # A service's URL spelled out with its role's secret, as an operator would.
    urls = {"inventory": fleet.settings.database_url("inventory")}
    assert IN_URL in urls["inventory"]
    code, lines = await run(fleet, "db", "init", db_urls=urls)  # alone: it grants and migrates
    assert code == 0, lines
    assert_no_password(fleet, lines, "db init")
    commands = [
        ("status", "--json"),
        ("status",),
        ("dlq", "list", "--json"),
        ("orders", "list", "--json"),
        ("history", "--json"),
    ]
    outcomes = await run_all(fleet, [(args, {"db_urls": urls}) for args in commands])
    for args, (code, lines) in zip(commands, outcomes, strict=True):
        assert code in (0, 1), (args, lines)  # status says 1 when no worker consumes
        assert_no_password(fleet, lines, " ".join(args))

    code, lines = await run(fleet, "db", "init", "--json")
    assert code == 0, lines
    assert_no_password(fleet, lines, "db init --json")
    document = json.loads("\n".join(lines))
    assert {row["name"] for row in document} >= {f"{ns}_order_view", f"{ns}_ops"}

    worker = await fleet.spawn("worker", "inventory", "--json", db_urls=urls)
    await worker.wait_for_line("worker consuming")
    lines = await stop(worker)
    assert_no_password(fleet, lines, "worker --json")


async def test_failing_commands_print_no_password(fleet: Fleet) -> None:
    settings = fleet.settings
    admin, amqp = settings.pg_admin_url, settings.amqp_url
    closed = closed_port()
    unreachable_admin = with_password(admin, port=closed)
    unknown_role = with_password(admin, user="nobody")
    bad_port = f"postgresql://postgres:{IN_URL}@127.0.0.1:notaport/postgres"
    wrong_amqp = with_password(amqp)  # the broker's user, the wrong password
    unreachable_amqp = with_password(amqp, port=closed)
    unreachable_view = {"order_view": with_password(admin, port=closed)}
    unknown_view_role = {"order_view": unknown_role}
    # Two roles given one secret: db init refuses, naming the roles alone.
    shared = {**SERVICE_SECRETS, "payment": SERVICE_SECRETS["order"]}
    # Each command, the settings it runs with, and words of the error it must report (so
    # the failure path is the one checked).
    cases: list[tuple[tuple[str, ...], dict[str, Any], str]] = [
        (("db", "init", "--json"), {"pg_admin_url": unreachable_admin}, "cannot reach PostgreSQL"),
        (("db", "init", "--json"), {"pg_admin_url": unknown_role}, 'role "nobody" does not'),
        (("db", "init"), {"pg_admin_url": bad_port}, "fleet: "),
        (("db", "init"), {"db_secrets": shared}, "were given the same secret"),
        (("db", "init", "--json"), {"db_password": PASSWORD}, "FLEET_DB_PASSWORD is no longer"),
        (("status",), {"db_password": PASSWORD}, "FLEET_DB_PASSWORD is no longer"),
        (
            ("teardown", "--namespace", "tnothing", "--yes"),
            {"pg_admin_url": unreachable_admin},
            "cannot reach PostgreSQL",
        ),
        (
            ("status", "--json"),
            {"amqp_url": wrong_amqp, "db_urls": unreachable_view},
            "ACCESS_REFUSED",
        ),
        (
            ("status",),
            {"amqp_url": unreachable_amqp, "db_urls": unknown_view_role},
            "RabbitMQ unreachable",
        ),
        (("dlq", "list", "--json"), {"amqp_url": wrong_amqp}, "ACCESS_REFUSED"),
        (("dlq", "list"), {"amqp_url": unreachable_amqp}, "cannot reach RabbitMQ"),
        (("orders", "list", "--json"), {"db_urls": unreachable_view}, "cannot use PostgreSQL"),
        (("orders", "list"), {"db_urls": unknown_view_role}, 'role "nobody" does not'),
        (
            ("history",),
            {"db_urls": {"ops": with_password(admin, port=closed)}},
            "cannot use PostgreSQL",
        ),
        (
            ("publish", "order.place_order", "--raw", "--data", "{}"),
            {"amqp_url": wrong_amqp},
            "ACCESS_REFUSED",
        ),
    ]
    outcomes = await run_all(fleet, [(args, env) for args, env, _ in cases])
    for (args, env, said), (code, lines) in zip(cases, outcomes, strict=True):
        what = f"{' '.join(args)} with {sorted(env)}"
        assert code != 0, (what, lines)
        assert_no_password(fleet, lines, what)
        assert any(said in line for line in lines), (what, lines)

    # Long-running commands log what goes wrong; they are stopped once they said it.
    for env, said in (
        ({"amqp_url": wrong_amqp}, "ACCESS_REFUSED"),
        ({"db_urls": {"inventory": with_password(admin, user="nobody")}}, 'role "nobody"'),
        ({"amqp_url": unreachable_amqp}, "111"),
        ({"db_urls": {"inventory": with_password(admin, port=closed)}}, "111"),
    ):
        worker = await fleet.spawn("worker", "inventory", "--json", **env)
        # It either logs and waits for the server, or exits after its one line.
        await worker.wait_for_line(said, timeout=30)
        lines = await stop(worker)
        assert not any("worker consuming" in line for line in lines), lines
        assert_no_password(fleet, lines, f"worker --json with {sorted(env)}")


async def test_the_api_prints_and_answers_no_password(fleet: Fleet) -> None:
    admin = fleet.settings.pg_admin_url
    for env in (
        {},
        {"db_urls": {"order_view": with_password(admin, port=closed_port())}},
        {"amqp_url": with_password(fleet.settings.amqp_url)},
    ):
        process = await fleet.spawn("api", "--port", "0", "--json", **env)
        line = await process.wait_for_line("listening on http://")
        found = re.search(r"http://[^\s\"]+", line)
        assert found is not None, line
        answers = []
        async with httpx.AsyncClient(base_url=found.group(0), timeout=30) as http:
            for path in ("/health", "/orders", f"/orders/{'0' * 8}-0000-0000-0000-{'0' * 12}"):
                response = await http.get(path)
                assert response.status_code < 500 or response.status_code == 503, response.text
                answers.append(f"{path}: {response.status_code} {response.text}")
        lines = await stop(process)
        assert_no_password(fleet, [*lines, *answers], f"api with {sorted(env)}")
