"""``fleet teardown``: a namespace's queues, exchanges, databases and roles removed, and the
check the test run ends with (tests/integration/leftovers.py) seeing what is left."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.integration.conftest import namespace_settings
from tests.integration.leftovers import leftovers
from tests.integration.support import Fleet
from workers.operations import namespace, ops_db
from workers.runtime import catalog, topology
from workers.runtime.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def set_up(server_urls: tuple[str, str]) -> AsyncIterator[tuple[Settings, Fleet]]:
    """A namespace set up as `fleet up` sets it up (torn down by the test itself)."""
    settings = namespace_settings(server_urls)
    await namespace.set_up(settings)
    fleet = Fleet(settings)
    try:
        yield settings, fleet
    finally:
        await fleet.close()
        await namespace.tear_down(settings)  # whatever the test left, if it failed


def kinds(found: list[str]) -> set[str]:
    return {line.split()[0] for line in found}


async def test_teardown_refuses_without_yes_and_then_removes_everything(
    set_up: tuple[Settings, Fleet],
) -> None:
    settings, fleet = set_up
    ns = settings.namespace
    before = await leftovers([settings])
    assert kinds(before) == {"queue", "exchange", "database", "role", "secret"}
    assert f"exchange {ns}.replays" in before
    assert f"queue {topology.delay_tier(ns, settings.retry_delays_ms[0])}" in before
    assert f"database {settings.database_name('order_view')}" in before

    code, output = await fleet.cli("teardown", "--namespace", ns)
    assert code == 2 and "--yes" in output, output
    assert await leftovers([settings]) == before

    code, output = await fleet.cli("teardown", "--namespace", ns, "--yes", "--json")
    assert code == 0, output
    removed = json.loads(output)
    assert removed["namespace"] == ns
    assert set(removed["exchanges"]) == set(topology.exchanges(settings))
    # Every service's database, the operations database (archive, audit log), and the
    # role the HTTP API reads the view as.
    assert set(removed["databases"]) == {
        settings.database_name(s) for s in (*catalog.SERVICES, ops_db.OPS)
    } | {namespace.reader_role(settings)}
    assert len(removed["queues"]) == len(namespace.queue_names(settings, catalog.load_all()))
    # The secrets db init generated for every role, forgotten with the roles: the file goes.
    assert set(removed["secrets"]) == {settings.database_name(key) for key in namespace.role_keys()}
    assert not settings.secrets_path.exists()
    assert await leftovers([settings]) == []

    # Again: nothing is left to remove, and that is no error.
    code, output = await fleet.cli("teardown", "--namespace", ns, "--yes", "--json")
    assert code == 0, output
    assert json.loads(output) == {
        "namespace": ns,
        "queues": [],
        "exchanges": [],
        "databases": [],
        "secrets": [],
    }


async def test_teardown_removes_the_queues_of_services_declared_outside_the_catalog(
    set_up: tuple[Settings, Fleet],
) -> None:
    from tests.integration import probes

    settings, fleet = set_up
    async with fleet.worker(probes.probe, with_relay=False):
        pass  # declares the probe's queues
    probe_queue = probes.probe.handlers[0].queue(settings.namespace)
    assert f"queue {probe_queue}" in await leftovers([settings])
    removed = await namespace.tear_down(settings, extra_services=fleet.extra_services)
    assert probe_queue in removed.queues
    assert await leftovers([settings]) == []


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--namespace", "Not-A-Name", "--yes"], "invalid setting namespace"),
        (["--yes"], "Missing option '--namespace'"),
    ],
)
async def test_teardown_explains_bad_arguments_in_one_line(
    set_up: tuple[Settings, Fleet], arguments: list[str], expected: str
) -> None:
    settings, fleet = set_up
    code, output = await fleet.cli("teardown", *arguments)
    assert code == 2 and expected in output, output
    assert len(output.splitlines()) == 1, output
    assert f"database {settings.database_name('order')}" in await leftovers([settings])
