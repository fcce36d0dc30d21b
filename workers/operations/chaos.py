"""``fleet chaos``: faults injected into a running ``fleet up`` while orders flow, then proof
that nothing was lost, applied twice or left stuck.

For ``duration`` seconds it places orders at a steady rate (``fleet load``'s orders: it seeds
what they need itself) and every ``every`` seconds injects one fault, the kinds taken in
turn or at random (seeded):

- ``kill``: SIGKILL a worker of the namespace (a child of its ``fleet up``, which restarts it);
- ``connections``: a worker's broker connections closed from the broker's side
  (``rabbitmqctl close_connection``), as a network cut looks to it;
- ``database``: every backend of one service's database terminated (``pg_terminate_backend``
  as the admin role; ``KILL CONNECTION`` for each of the service's sessions on MariaDB), as
  a database restart looks to its clients;
- ``broker``: the broker application stopped and started again (``rabbitmqctl stop_app`` /
  ``start_app``), only where rabbitmqctl is local and the node serves the fleet's AMQP port.

Then it stops placing, waits for quiet (every order final, every queue drained, every
outbox published), runs ``fleet verify``'s checks and its own: every order it placed ended,
every dead letter carries a reason. It rides out its own faults: publishes and reads go on
on new connections (``reconnect``).

Workers are found in /proc (Linux): ``fleet worker SERVICE`` processes whose parent is a
``fleet up`` and whose environment names this namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncmy
import asyncpg

from contracts import PlaceOrder
from db import mariadb
from db.engine import MARIADB, asyncpg_url
from workers.operations import InvalidRequest, OperatorError, dead_letters, load, ops_db, verify
from workers.operations.reconnect import ReconnectingPublisher, Reconnects, read_again_on_loss
from workers.operations.supervisor import chosen_services
from workers.order import public as orders
from workers.runtime import catalog
from workers.runtime.settings import Settings

KINDS = ("kill", "connections", "database", "broker")
DEFAULT_FAULTS = ("kill", "connections", "database")
PICKS = ("round-robin", "random")

# A fraction of the orders is meant to be refused (out of stock, no money, a blocked
# country), so compensations run under fire too.
REFUSALS = 0.1
# Orders are published in ticks of this many seconds (a steady rate, pipelined per tick).
TICK_SECONDS = 0.5
# The broker application stays stopped this long: its clients see the loss.
BROKER_DOWN_SECONDS = 2.0
# How often the quiet wait looks.
QUIET_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class ChaosOptions:
    duration: float = 60.0
    rate: float = 5.0  # orders per second
    orders: int | None = None  # at most this many (default: rate * duration)
    every: float = 10.0  # seconds between faults
    faults: tuple[str, ...] = DEFAULT_FAULTS
    pick: str = "round-robin"
    # The services whose databases the database fault may hit (None: every service's).
    databases: tuple[str, ...] | None = None
    seed: int = 0
    quiet_timeout: float = 180.0
    rabbitmq_node: str | None = None  # rabbitmqctl -n; None: its default node
    rabbitmqctl: str = "rabbitmqctl"

    @property
    def order_count(self) -> int:
        return self.orders if self.orders is not None else max(1, int(self.rate * self.duration))

    def check(self) -> None:
        if self.duration <= 0 or self.rate <= 0 or self.every <= 0 or self.quiet_timeout <= 0:
            raise InvalidRequest("--duration, --rate, --kill-every and --quiet-timeout must be > 0")
        if self.orders is not None and self.orders < 1:
            raise InvalidRequest("--orders must be at least 1")
        if not self.faults:
            raise InvalidRequest(f"--faults needs at least one of {', '.join(KINDS)}")
        if self.pick not in PICKS:
            raise InvalidRequest(f"--pick must be round-robin or random, not {self.pick!r}")


def parse_faults(text: str) -> tuple[str, ...]:
    """``kill,database`` -> ("kill", "database"); an unknown kind is bad usage."""
    kinds = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise InvalidRequest(
            f"unknown fault(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(KINDS)}"
        )
    return kinds


def parse_services(text: str | None) -> tuple[str, ...] | None:
    """``payment,order`` -> ("payment", "order"); None stays None (every service); an
    unknown service is bad usage."""
    return None if text is None else tuple(dict.fromkeys(chosen_services(text)))


@dataclass(frozen=True)
class Fault:
    at: float  # seconds since the run started
    kind: str
    injected: bool  # False: there was nothing to inflict it on at that moment
    target: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 1),
            "kind": self.kind,
            "injected": self.injected,
            "target": self.target,
        }


@dataclass
class ChaosReport:
    namespace: str
    faults: list[Fault] = field(default_factory=list)
    placed: int = 0
    ended: int = 0
    confirmed: int = 0
    rejected: int = 0
    unexpected_outcomes: int = 0  # meant to confirm but rejected (a saga timed out) or v.v.
    quiet: bool = False
    seconds_to_quiet: float | None = None
    checks: list[verify.Check] = field(default_factory=list)
    reconnects: dict[str, int] = field(default_factory=dict)

    def injected(self) -> Counter[str]:
        return Counter(fault.kind for fault in self.faults if fault.injected)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "passed": self.passed,
            "faults_injected": dict(self.injected()),
            "faults": [fault.as_dict() for fault in self.faults],
            "orders": {
                "placed": self.placed,
                "ended": self.ended,
                "confirmed": self.confirmed,
                "rejected": self.rejected,
                "unexpected_outcomes": self.unexpected_outcomes,
            },
            "quiet": self.quiet,
            "seconds_to_quiet": self.seconds_to_quiet,
            "invariants": [check.as_dict() for check in self.checks],
            "reconnects": self.reconnects,
        }


# --- finding the workers -------------------------------------------------------------


@dataclass(frozen=True)
class WorkerProcess:
    pid: int
    service: str


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:  # gone meanwhile, or not ours to read
        return None


def _fleet_arguments(pid: int) -> list[str] | None:
    """What follows ``fleet`` (or ``python -m cli``) on ``pid``'s command line, if it is one."""
    raw = _read(f"/proc/{pid}/cmdline")
    if not raw:
        return None
    words = raw.decode(errors="replace").rstrip("\0").split("\0")
    for index, word in enumerate(words):
        if os.path.basename(word) == "fleet" or (
            word == "cli" and words[index - 1 : index] == ["-m"]
        ):
            return words[index + 1 :]
    return None


def _namespace_of(pid: int) -> str | None:
    """The namespace ``pid``'s settings name (FLEET_NAMESPACE, any case, as pydantic reads it)."""
    raw = _read(f"/proc/{pid}/environ")
    if raw is None:
        return None
    for entry in raw.decode(errors="replace").split("\0"):
        name, _, value = entry.partition("=")
        if name.upper() == "FLEET_NAMESPACE":
            return value
    return Settings.model_fields["namespace"].default  # type: ignore[no-any-return]


def _parent(pid: int) -> int | None:
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    # "pid (command) state ppid ...": the command may hold spaces and parentheses.
    return int(raw.decode(errors="replace").rsplit(")", 1)[1].split()[1])


def _proc_available() -> bool:
    return os.path.isdir("/proc/self")


def fleet_workers(namespace: str) -> list[WorkerProcess]:
    """The ``fleet worker`` processes a ``fleet up`` of ``namespace`` supervises now."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        arguments = _fleet_arguments(pid)
        if not arguments or arguments[0] != "worker" or len(arguments) < 2:
            continue
        parent = _parent(pid)
        parent_arguments = _fleet_arguments(parent) if parent else None
        if not parent_arguments or parent_arguments[0] != "up":
            continue
        if _namespace_of(pid) == namespace:
            found.append(WorkerProcess(pid, arguments[1]))
    return sorted(found, key=lambda worker: worker.pid)


# --- the faults ----------------------------------------------------------------------


async def rabbitmqctl(
    *arguments: str, node: str | None = None, program: str = "rabbitmqctl", timeout: float = 90
) -> str:
    """Run rabbitmqctl (quiet, on ``node`` if given); its output, or OperatorError."""
    process = await asyncio.create_subprocess_exec(
        program,
        "-q",
        *(["-n", node] if node else []),
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise OperatorError(f"rabbitmqctl {arguments[0]} did not answer in {timeout:g} s") from None
    if process.returncode != 0:
        last = output.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise OperatorError(f"rabbitmqctl {arguments[0]} failed: {last[0]}")
    return output.decode(errors="replace")


def client_ports(pid: int) -> set[int]:
    """The local TCP ports of process ``pid``'s sockets (read from /proc)."""
    inodes = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # the process is gone
        return set()
    for fd in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def close_broker_connections(
    pid: int, why: str, *, node: str | None = None, program: str = "rabbitmqctl"
) -> int:
    """Close every broker connection of process ``pid`` from the broker's side (the broker
    names a connection by its client's port); how many there were."""
    ports = client_ports(pid)
    listed = await rabbitmqctl(
        "list_connections", "pid", "peer_port", "--no-table-headers", node=node, program=program
    )
    closed = 0
    for line in listed.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit() and int(fields[1]) in ports:
            await rabbitmqctl("close_connection", fields[0], why, node=node, program=program)
            closed += 1
    return closed


async def terminate_backends(settings: Settings, service: str) -> int:
    """Terminate every backend of ``service``'s database (as the admin role); how many.
    On MariaDB, every connection of the service's user (``KILL CONNECTION``)."""
    if settings.engine(service) == MARIADB:
        return await mariadb.kill_sessions(
            settings.mariadb_admin_url, settings.database_name(service)
        )
    conn = await asyncpg.connect(asyncpg_url(settings.pg_admin_url))
    try:
        terminated: int = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            settings.database_name(service),
        )
    finally:
        await conn.close()
    return terminated


async def restart_broker_app(options: ChaosOptions) -> None:
    node, program = options.rabbitmq_node, options.rabbitmqctl
    await rabbitmqctl("stop_app", node=node, program=program)
    await asyncio.sleep(BROKER_DOWN_SECONDS)
    await rabbitmqctl("start_app", node=node, program=program)


async def check_broker_node(settings: Settings, options: ChaosOptions) -> None:
    """Refuse the broker fault unless rabbitmqctl's node is the one serving the fleet's AMQP
    port: a wrong ``--rabbitmq-node`` must not restart someone else's broker."""
    status = json.loads(
        await rabbitmqctl(
            "status", "--formatter", "json", node=options.rabbitmq_node, program=options.rabbitmqctl
        )
    )
    port = urlsplit(settings.amqp_url).port or 5672
    amqp_ports = {
        listener.get("port")
        for listener in status.get("listeners", [])
        if listener.get("protocol") == "amqp"
    }
    if port not in amqp_ports:
        raise OperatorError(
            f"the broker fault needs the node serving AMQP on port {port}; rabbitmqctl's node"
            f" ({options.rabbitmq_node or 'its default'}) serves {sorted(amqp_ports)}"
            " (see --rabbitmq-node)"
        )


class Injector:
    """Inflicts one fault of a kind on a target picked with its random generator."""

    def __init__(self, settings: Settings, options: ChaosOptions, rng: random.Random) -> None:
        self.settings = settings
        self.options = options
        self.rng = rng

    async def inject(self, kind: str) -> tuple[bool, str]:
        """(whether something was hit, what)."""
        if kind == "kill":
            return self.kill()
        if kind == "connections":
            return await self.cut_connections()
        if kind == "database":
            return await self.terminate()
        await restart_broker_app(self.options)
        return True, f"broker application restarted ({self.options.rabbitmq_node or 'local node'})"

    def kill(self) -> tuple[bool, str]:
        workers = fleet_workers(self.settings.namespace)
        if not workers:
            return False, "no worker running (all restarting?)"
        victim = self.rng.choice(workers)
        try:
            os.kill(victim.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False, f"{victim.service} (pid {victim.pid}) was gone already"
        return True, f"{victim.service} (pid {victim.pid}) killed"

    async def cut_connections(self) -> tuple[bool, str]:
        workers = fleet_workers(self.settings.namespace)
        self.rng.shuffle(workers)
        for worker in workers:  # the first that has connections (one just restarted has none)
            closed = await close_broker_connections(
                worker.pid,
                "fleet chaos",
                node=self.options.rabbitmq_node,
                program=self.options.rabbitmqctl,
            )
            if closed:
                return True, f"{worker.service} (pid {worker.pid}): {closed} connection(s) closed"
        return False, "no worker with broker connections"

    async def terminate(self) -> tuple[bool, str]:
        services = list(self.options.databases or catalog.SERVICES)
        self.rng.shuffle(services)
        for service in services:
            terminated = await terminate_backends(self.settings, service)
            if terminated:
                return True, f"{service}'s database: {terminated} backend(s) terminated"
        return False, "no database backend to terminate"


# --- the run -------------------------------------------------------------------------


async def _place_steadily(
    settings: Settings,
    commands: list[PlaceOrder],
    rate: float,
    until: float,
    placed: list[load.Placed],
    reconnects: Reconnects,
) -> None:
    """Publish ``commands`` at ``rate`` a second until they are all out or ``until``."""
    publisher = ReconnectingPublisher(settings.broker_urls, reconnects)
    started = time.monotonic()
    sent = 0
    try:
        while sent < len(commands) and time.monotonic() < until:
            due = min(len(commands), int((time.monotonic() - started) * rate) + 1)
            if due > sent:  # after a broker restart, what fell due meanwhile goes at once
                placed += await load.place(publisher, settings.namespace, commands[sent:due])
                sent = due
            await asyncio.sleep(TICK_SECONDS)
    finally:
        await publisher.close()


async def _inject_on_schedule(
    injector: Injector,
    options: ChaosOptions,
    started: float,
    report: ChaosReport,
    rng: random.Random,
    say: Callable[[str], None],
    placed: list[load.Placed],
) -> None:
    number = 0
    while True:
        number += 1
        at = started + number * options.every
        if at >= started + options.duration:
            return
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        if options.pick == "random":
            kind = rng.choice(options.faults)
        else:
            kind = options.faults[(number - 1) % len(options.faults)]
        try:
            injected, target = await injector.inject(kind)
        except (OperatorError, OSError, asyncpg.PostgresError, asyncmy.errors.MySQLError) as error:
            injected, target = False, f"could not: {error}"
        fault = Fault(time.monotonic() - started, kind, injected, target)
        report.faults.append(fault)
        mark = "" if injected else " (skipped)"
        say(f"{fault.at:6.1f}s  {kind:<11} {target}{mark}  [{len(placed)} orders placed]")


async def _quiet_state(settings: Settings, waiting: list[str], reconnects: Reconnects) -> bool:
    """Whether nothing moves any more: the orders waited for have ended, and every order is
    final, every queue drained, every outbox row published (verify's own checks)."""
    if waiting:
        return False
    messages = await read_again_on_loss(
        lambda: verify.check_messages(settings), reconnects, "queues and outboxes"
    )
    if not messages.passed:
        return False
    every_order = await read_again_on_loss(
        lambda: orders.all_orders(settings), reconnects, "order database"
    )
    return verify.check_orders_ended(every_order).passed


async def _wait_for_quiet(
    settings: Settings,
    placed: list[load.Placed],
    timeout: float,
    reconnects: Reconnects,
    say: Callable[[str], None],
) -> tuple[dict[str, tuple[str, float]], bool]:
    """The placed orders that ended, and whether the fleet went quiet within ``timeout``."""
    ended: dict[str, tuple[str, float]] = {}
    deadline = time.monotonic() + timeout
    said = -1
    while True:
        waiting = [order.order_id for order in placed if order.order_id not in ended]
        if waiting:
            ended.update(await load.ended_by_now(settings, waiting, reconnects))
            waiting = [order.order_id for order in placed if order.order_id not in ended]
        if len(ended) != said:
            say(f"waiting for quiet: {len(ended)}/{len(placed)} orders ended")
            said = len(ended)
        if await _quiet_state(settings, waiting, reconnects):
            return ended, True
        if time.monotonic() > deadline:
            return ended, False
        await asyncio.sleep(QUIET_POLL_SECONDS)


def check_placed_ended(
    placed: list[load.Placed], ended: dict[str, tuple[str, float]]
) -> verify.Check:
    check = verify.Check("every order chaos placed ended (none lost)")
    for order in placed:
        if order.order_id not in ended:
            check.fail(f"order {order.order_id} ({order.style}) has not ended")
    check.counts = {"placed": len(placed), "ended": len(ended)}
    return check


async def check_dead_letter_reasons(settings: Settings) -> verify.Check:
    """Every dead letter says why it is there (the unrouted queue's say so by being there)."""
    check = verify.Check("every dead letter carries a reason")
    loaded = catalog.load_all()
    names = [
        name
        for name in dead_letters.dead_letter_queues(settings, loaded)
        if not name.endswith(".unrouted")
    ]
    letters = 0
    for name, depth in (await dead_letters.depths(settings, names)).items():
        if not depth:
            continue
        for letter in await dead_letters.browse(settings, name, depth):
            letters += 1
            if letter.reason == "unknown":
                check.fail(f"{name}: message {letter.message_id} has no reason")
    check.counts = {"dead letters": letters}
    return check


async def preflight(settings: Settings, options: ChaosOptions) -> None:
    """Refuse a run that could not inject what it was asked to."""
    options.check()
    if not _proc_available():
        raise OperatorError("fleet chaos finds the workers in /proc: Linux only")
    if not fleet_workers(settings.namespace):
        raise OperatorError(
            f"no 'fleet up' worker of namespace {settings.namespace!r} is running here"
            " (start 'fleet up' with the same FLEET_* settings first)"
        )
    if {"connections", "broker"} & set(options.faults):
        await rabbitmqctl(
            "list_connections", "pid", node=options.rabbitmq_node, program=options.rabbitmqctl
        )  # answers, or says why not, before anything starts
    if "broker" in options.faults:
        await check_broker_node(settings, options)


async def run_chaos(
    settings: Settings,
    options: ChaosOptions,
    *,
    say: Callable[[str], None] = lambda _: None,
    operator: str,
) -> ChaosReport:
    """Orders under fire for ``options.duration`` seconds, then the invariants checked."""
    await preflight(settings, options)
    reconnects = Reconnects(say=say)
    report = ChaosReport(settings.namespace)
    rng = random.Random(options.seed)
    count = options.order_count
    await read_again_on_loss(lambda: load.seed(settings, count), reconnects, "seeding")
    commands = load.plan(count, "mixed", REFUSALS, rng)
    placed: list[load.Placed] = []
    say(
        f"chaos on {settings.namespace}: {count} orders at {options.rate:g}/s for"
        f" {options.duration:g} s, a fault every {options.every:g} s ({', '.join(options.faults)})"
    )
    started = time.monotonic()
    injector = Injector(settings, options, rng)
    await asyncio.gather(
        _place_steadily(
            settings, commands, options.rate, started + options.duration, placed, reconnects
        ),
        _inject_on_schedule(injector, options, started, report, rng, say, placed),
    )
    say(f"placed {len(placed)} orders; {sum(report.injected().values())} faults injected")
    stopped = time.monotonic()
    ended, report.quiet = await _wait_for_quiet(
        settings, placed, options.quiet_timeout, reconnects, say
    )
    report.seconds_to_quiet = round(time.monotonic() - stopped, 1) if report.quiet else None
    report.placed, report.ended = len(placed), len(ended)
    report.confirmed = sum(status == "CONFIRMED" for status, _ in ended.values())
    report.rejected = sum(status == "REJECTED" for status, _ in ended.values())
    report.unexpected_outcomes = sum(
        ended[order.order_id][0] != order.expected for order in placed if order.order_id in ended
    )
    quiet = verify.Check(
        f"the fleet went quiet within {options.quiet_timeout:g} s"
        " (orders final, queues drained, outboxes published)"
    )
    if not report.quiet:
        quiet.fail("still moving at the deadline: the checks below are of the fleet as it stood")
        say(f"not quiet after {options.quiet_timeout:g} s: checking as it stands")
    report.checks = [
        quiet,
        check_placed_ended(placed, ended),
        *await read_again_on_loss(lambda: verify.verify(settings), reconnects, "verify"),
        await read_again_on_loss(
            lambda: check_dead_letter_reasons(settings), reconnects, "dead letters"
        ),
    ]
    report.reconnects = reconnects.as_dict()
    await read_again_on_loss(
        lambda: _record(settings, report, options, operator), reconnects, "audit log"
    )
    return report


async def _record(
    settings: Settings, report: ChaosReport, options: ChaosOptions, operator: str
) -> None:
    """The run in the audit log: killing workers is an operator's act."""
    async with ops_db.connect(settings, transaction=True) as conn:
        await ops_db.record(
            conn,
            action="chaos",
            target=settings.namespace,
            count=sum(report.injected().values()),
            operator=operator,
            detail={
                "faults_injected": dict(report.injected()),
                "orders_placed": report.placed,
                "passed": report.passed,
                "duration": options.duration,
            },
        )
