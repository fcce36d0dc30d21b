"""A soak: N sagas through one ``fleet up``, and whether the fleet's rate, latency, memory
and tables stay level from the first tenth of the run to the last (issue 17).

What runs, in a fresh namespace torn down afterwards (Ctrl-C included):

* ``fleet up --replicas R``, with housekeeping as in production (in every worker's relay)
  but on a soak's time scale: every ``--housekeeping-interval`` s (default 5, production
  60), published outbox rows deleted after ``--outbox-retention`` s (default 60, production
  3600) and inbox rows after ``--inbox-retention`` s (default 180, production 7 days), so
  rows really are deleted during the run. Its workers serve no /metrics port
  (FLEET_METRICS_PORT=0: no clash with other runs on a shared machine); their samplers run
  as ever.
* In this process, ``fleet load``'s pieces (``workers.operations.load``: ``seed``, ``plan``,
  ``place``, ``ended_by_now``): PlaceOrders of both styles, alternating, a fraction
  ``--refusals`` meant to be refused, published so that C sagas are always in flight: each
  poll of the order service's event store (every 0.25 s) places as many new ones as ended.
  C more than N are planned, so the load is as steady at the N-th end as at the first; the
  first N sagas to end are measured, the rest are left to the teardown.

What is reported, per tenth of the run (slice i: the sagas N*i/10+1 .. N*(i+1)/10 in the
order they ended):

* sagas/s: the slice's sagas over the time from the previous slice's last end to its own
  last end (the first slice from its first end: filling the pipeline is not a rate);
* p50 and p99 latency, as ``fleet load`` measures it: from the broker's confirm of an
  order's PlaceOrder to its final event's ``recorded_at``;
* at the slice's end (when the poll that saw it ran): each worker's resident memory (VmRSS of
  ``fleet up``'s children, named by service and replica as ``fleet up`` names them), CPU
  per saga ended since the last snapshot, of the workers and of the PostgreSQL backends
  serving the namespace's databases (pooled backends, sampled from /proc), and the exact
  rows of every service's inbox and outbox (unpublished ones too) and of the order
  service's event store (``events``);
* the cores busy meanwhile: the fleet's (workers, their backends, this process) and the rest
  of the machine's (RabbitMQ, other runs on a shared machine).

Summary: the first and last tenth's rates and their ratio, and RSS growth (the largest
worker's RSS at the last slice's end over its RSS at the first slice's end). The goal, for
N = 20,000: the last tenth at least 90 % of the first, memory growth at most 20 %. It is
reported, met or not; nothing is asserted. Beside it, the same ratio per CPU second of the
fleet (the first tenth's CPU ms per saga over the last's), which other runs taking cores
from the fleet do not move much. Progress goes to stderr, a line per slice.

    uv run python bench/soak.py --sagas N [--replicas R] [--concurrency C] [--refusals F] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from _support import ROOT, add_loop_option, bench_namespace, fleet_env, fresh_namespace, run, show

from db.engine import asyncpg_url, connect_once
from workers.operations.load import Placed, ended_by_now, percentile, place, plan, seed
from workers.operations.reconnect import ReconnectingPublisher, Reconnects, read_again_on_loss
from workers.operations.supervisor import Supervisor
from workers.runtime import catalog
from workers.runtime.settings import Settings

SLICES = 10
POLL_SECONDS = 0.25  # as fleet load's watch
READY_SECONDS = 180.0
STOP_SECONDS = 60.0  # fleet up gives its workers 30 s, then kills them
GOAL_RATE, GOAL_RSS, GOAL_N = 0.90, 1.20, 20_000
CPU_KEYS = (
    "fleet_cpu_ms_per_saga",
    "worker_cpu_ms_per_saga",
    "db_cpu_ms_per_saga",
    "own_cpu_ms_per_saga",
    "fleet_cores",
    "other_cores",
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_STARTED = re.compile(r"started \(pid (\d+)\)")


# --- fleet up, and its workers ------------------------------------------------------------


class Fleet:
    """``fleet up`` in a session of its own (a Ctrl-C reaches this process, which stops it
    with SIGTERM); its workers' pids by label (``inventory``, or ``inventory.1`` with
    replicas), read from its ``started (pid N)`` lines, restarts counted."""

    def __init__(self, process: asyncio.subprocess.Process, labels: list[str]) -> None:
        self.process = process
        self.labels = labels
        self.pids: dict[str, int] = {}
        self.restarts = 0
        self.consuming: set[str] = set()
        self.ready = asyncio.Event()
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, settings: Settings, replicas: int) -> Fleet:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "cli", "up", "--replicas", str(replicas)),
            cwd=ROOT,
            env=fleet_env(settings),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        supervisor = Supervisor(list(catalog.SERVICES), replicas, as_json=False)
        fleet = cls(process, [label for _, label in supervisor.labels])
        ready = asyncio.ensure_future(fleet.ready.wait())
        try:
            await asyncio.wait(
                {ready, fleet.reader}, timeout=READY_SECONDS, return_when="FIRST_COMPLETED"
            )
            if not fleet.ready.is_set():
                if fleet.reader.done():
                    fleet.reader.result()  # fleet up's exit, with its last lines
                raise RuntimeError(f"fleet up not ready in {READY_SECONDS:.0f} s")
        except BaseException:
            ready.cancel()
            await fleet.stop()
            raise
        return fleet

    async def _read(self) -> None:
        """Every line, to the end (the pipe never fills): pids, restarts, readiness."""
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            label, _, text = line.partition(" | ")
            label = label.strip()
            if label not in self.labels:
                continue
            if started := _STARTED.search(text):
                self.pids[label] = int(started.group(1))
            elif text.startswith("died"):
                self.restarts += 1
            elif "worker consuming" in text:
                self.consuming.add(label)
                if self.consuming.issuperset(self.labels):
                    self.ready.set()
        if not self.ready.is_set():
            last = "\n".join(self.tail)
            raise RuntimeError(f"fleet up exited before its workers were consuming:\n{last}")

    async def stop(self) -> None:
        """SIGTERM, then wait (its workers finish what is in flight); killed if it hangs."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _machine_busy() -> float:
    """CPU seconds every core of the machine spent neither idle nor waiting (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


def _cpu_seconds(pid: int) -> float | None:
    """User and system CPU of ``pid`` so far (fields 14 and 15 of /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# --- What is measured at a slice's end ------------------------------------------------------


@dataclass
class Snapshot:
    at: float  # time.time()
    pids: dict[str, int] = field(default_factory=dict)  # worker label -> pid
    rss_kb: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # worker label -> CPU seconds
    db_cpu: dict[int, float] = field(default_factory=dict)  # backend pid -> CPU seconds
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # service -> table -> rows
    db_bytes: dict[str, int] = field(default_factory=dict)
    load_average: float = 0.0
    machine_busy: float = 0.0  # CPU seconds the whole machine spent busy, every core
    own_cpu: float = 0.0  # this process's CPU seconds (placing, polling, snapshots)
    ended: int = 0  # sagas seen ended when it was taken


async def snapshot(settings: Settings, fleet: Fleet, ended: int) -> Snapshot:
    own = os.times()
    taken = Snapshot(
        at=time.time(),
        ended=ended,
        load_average=os.getloadavg()[0],
        machine_busy=_machine_busy(),
        own_cpu=own.user + own.system,
    )
    for label in fleet.labels:
        pid = fleet.pids.get(label)
        rss, cpu = (_rss_kb(pid), _cpu_seconds(pid)) if pid else (None, None)
        if pid and rss is not None and cpu is not None:
            taken.pids[label], taken.rss_kb[label], taken.cpu[label] = pid, rss, cpu
    for service in catalog.SERVICES:
        async with connect_once(settings.database_url(service)) as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM inbox) AS inbox,"
                " (SELECT count(*) FROM outbox) AS outbox,"
                " (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS unpublished,"
                " pg_database_size(current_database()) AS bytes"
            )
            taken.rows[service] = {
                "inbox": row["inbox"],
                "outbox": row["outbox"],
                "outbox_unpublished": row["unpublished"],
            }
            if service == "order":
                taken.rows[service]["events"] = await conn.fetchval("SELECT count(*) FROM events")
            taken.db_bytes[service] = row["bytes"]
    conn = await asyncpg.connect(asyncpg_url(settings.pg_admin_url))
    try:
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = ANY($1::text[])",
            [settings.database_name(service) for service in catalog.SERVICES],
        )
    finally:
        await conn.close()
    for record in pids:
        if (cpu := _cpu_seconds(record["pid"])) is not None:
            taken.db_cpu[record["pid"]] = cpu
    return taken


# --- The soak ---------------------------------------------------------------------------


@dataclass
class Ended:
    at: float  # the final event's recorded_at
    order: Placed
    status: str


@dataclass
class Soak:
    ends: list[Ended]
    started: float
    placed: int
    baseline: Snapshot
    snapshots: list[Snapshot]
    reconnects: dict[str, int]


async def soak(
    settings: Settings, fleet: Fleet, sagas: int, concurrency: int, refusals: float
) -> Soak:
    reconnects = Reconnects(say=lambda text: print(text, file=sys.stderr, flush=True))
    planned = sagas + concurrency  # the load stays steady until the sagas-th end
    await read_again_on_loss(lambda: seed(settings, planned), reconnects, "seeding")
    commands = plan(planned, "mixed", refusals, random.Random(sagas))
    boundaries = [sagas * (i + 1) // SLICES for i in range(SLICES)]
    baseline = await snapshot(settings, fleet, 0)
    snapshots: list[asyncio.Task[Snapshot]] = []
    in_flight: dict[str, Placed] = {}
    ends: list[Ended] = []
    publisher = ReconnectingPublisher(settings.broker_urls, reconnects)
    started = time.time()
    placed, last_end = 0, time.monotonic()
    try:
        while len(ends) < sagas:
            if placed < len(commands) and len(in_flight) < concurrency:
                window = commands[placed : placed + concurrency - len(in_flight)]
                placed += len(window)
                in_flight.update(
                    (p.order_id, p) for p in await place(publisher, settings.namespace, window)
                )
            found = await ended_by_now(settings, list(in_flight), reconnects)
            for order_id, (status, at) in found.items():
                ends.append(Ended(at, in_flight.pop(order_id), status))
            while len(snapshots) < SLICES and len(ends) >= boundaries[len(snapshots)]:
                task = asyncio.create_task(snapshot(settings, fleet, len(ends)))
                task.add_done_callback(_say_slice(len(snapshots), sagas, ends, started, baseline))
                snapshots.append(task)
            if fleet.reader.done():
                raise RuntimeError("fleet up exited; it said:\n" + "\n".join(fleet.tail))
            if found:
                last_end = time.monotonic()
            elif time.monotonic() - last_end > 120:
                raise RuntimeError(
                    f"no saga ended for 120 s ({len(ends)} of {sagas} ended); fleet up said:\n"
                    + "\n".join(fleet.tail)
                )
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await publisher.close()
    done = list(await asyncio.gather(*snapshots))
    ends.sort(key=lambda end: end.at)
    return Soak(ends[:sagas], started, placed, baseline, done, reconnects.as_dict())


def _say_slice(
    index: int, sagas: int, ends: list[Ended], started: float, baseline: Snapshot
) -> Any:
    """A progress line on stderr once slice ``index``'s snapshot is taken."""
    ordered = sorted(ends, key=lambda end: end.at)[:sagas]

    def say(task: asyncio.Task[Snapshot]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        numbers = slice_numbers(index, sagas, ordered, started, task.result(), None, baseline)
        rows = task.result().rows
        print(
            f"slice {index + 1}/{SLICES}: {numbers['to']:,} ended at"
            f" {numbers['elapsed_s']:,.0f} s, {numbers['sagas_per_second']} sagas/s,"
            f" p50 {numbers['p50_ms']} ms, p99 {numbers['p99_ms']} ms,"
            f" largest RSS {max(task.result().rss_kb.values(), default=0) / 1024:.0f} MB,"
            f" rows: inbox {sum(r['inbox'] for r in rows.values()):,},"
            f" outbox {sum(r['outbox'] for r in rows.values()):,},"
            f" events {rows['order']['events']:,}",
            file=sys.stderr,
            flush=True,
        )

    return say


def slice_numbers(
    index: int,
    sagas: int,
    ends: list[Ended],
    started: float,
    at_end: Snapshot,
    before: Snapshot | None,
    baseline: Snapshot,
) -> dict[str, Any]:
    """Slice ``index`` of ``ends`` (sorted by when they ended), with the snapshot taken at its
    end and the one before it (None: the baseline, for CPU)."""
    first, last = sagas * index // SLICES, sagas * (index + 1) // SLICES
    chunk = ends[first:last]
    if index == 0:
        count, since = len(chunk) - 1, chunk[0].at
    else:
        count, since = len(chunk), ends[first - 1].at
    seconds = chunk[-1].at - since
    latencies: dict[str, list[float]] = {"all": []}
    for end in chunk:
        latency = end.at - end.order.confirmed_at
        latencies["all"].append(latency)
        latencies.setdefault(end.order.style, []).append(latency)
    return {
        "slice": index + 1,
        "from": first + 1,
        "to": last,
        "sagas": len(chunk),
        "seconds": round(seconds, 2),
        "sagas_per_second": round(count / seconds, 1) if seconds > 0 and count > 0 else None,
        "elapsed_s": round(chunk[-1].at - started, 1),
        "p50_ms": round(percentile(latencies["all"], 0.50) * 1000),
        "p99_ms": round(percentile(latencies["all"], 0.99) * 1000),
        "latency_ms": {
            style: {
                "p50": round(percentile(values, 0.50) * 1000),
                "p99": round(percentile(values, 0.99) * 1000),
            }
            for style, values in latencies.items()
        },
        "ended_by_style": {
            style: len(values) for style, values in latencies.items() if style != "all"
        },
        "unexpected_outcomes": sum(end.status != end.order.expected for end in chunk),
        **cpu_between(before or baseline, at_end),
        "rss_kb": at_end.rss_kb,
        "rows": at_end.rows,
        "db_bytes": at_end.db_bytes,
        "load_average": round(at_end.load_average, 2),
    }


def cpu_between(previous: Snapshot, at_end: Snapshot) -> dict[str, Any]:
    """CPU per saga ended between two snapshots (None where none ended: a poll that saw two
    slices end takes their snapshots at once), and the cores busy meanwhile: the fleet's
    (workers, their PostgreSQL backends, this process) and the rest of the machine's."""
    ended, wall = at_end.ended - previous.ended, at_end.at - previous.at
    if ended <= 0 or wall <= 0:
        return dict.fromkeys(CPU_KEYS)
    worker_cpu = {  # a restarted worker (another pid) counts from its start
        label: at_end.cpu[label]
        - (previous.cpu.get(label, 0.0) if previous.pids.get(label) == pid else 0.0)
        for label, pid in at_end.pids.items()
    }
    db_cpu = sum(at_end.db_cpu[pid] - previous.db_cpu.get(pid, 0.0) for pid in at_end.db_cpu)
    own_cpu = at_end.own_cpu - previous.own_cpu
    fleet_cores = (sum(worker_cpu.values()) + db_cpu + own_cpu) / wall
    machine_cores = (at_end.machine_busy - previous.machine_busy) / wall
    return {
        "fleet_cpu_ms_per_saga": round(sum(worker_cpu.values()) * 1000 / ended, 2),
        "worker_cpu_ms_per_saga": {
            label: round(seconds * 1000 / ended, 2) for label, seconds in worker_cpu.items()
        },
        "db_cpu_ms_per_saga": round(db_cpu * 1000 / ended, 2),
        "own_cpu_ms_per_saga": round(own_cpu * 1000 / ended, 2),
        "fleet_cores": round(fleet_cores, 2),
        "other_cores": round(machine_cores - fleet_cores, 2),
    }


def summarise(result: Soak, sagas: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    slices = [
        slice_numbers(
            i,
            sagas,
            result.ends,
            result.started,
            result.snapshots[i],
            result.snapshots[i - 1] if i else None,
            result.baseline,
        )
        for i in range(SLICES)
    ]
    first_rate, last_rate = slices[0]["sagas_per_second"], slices[-1]["sagas_per_second"]
    ratio = last_rate / first_rate if first_rate and last_rate else None
    # On a shared machine the rate follows the CPU other runs leave the fleet; the CPU the
    # fleet spends per saga (workers, their backends, this process) does not.
    first_cpu, last_cpu = (_fleet_cpu_ms(slices[0]), _fleet_cpu_ms(slices[-1]))
    first_rss, last_rss = slices[0]["rss_kb"], slices[-1]["rss_kb"]
    growth = {
        label: last_rss[label] / first_rss[label] for label in last_rss if first_rss.get(label)
    }
    largest = max(last_rss, key=lambda label: last_rss[label], default=None)
    grew_most = max(growth, key=lambda label: growth[label], default=None)
    seconds = result.ends[-1].at - result.started
    summary: dict[str, Any] = {
        "sagas": sagas,
        "seconds": round(seconds, 1),
        "sagas_per_second": round(sagas / seconds, 1),
        "first_rate": first_rate,
        "last_rate": last_rate,
        "last_vs_first": round(ratio, 3) if ratio is not None else None,
        "cpu_last_vs_first": round(first_cpu / last_cpu, 3) if first_cpu and last_cpu else None,
        "rss_growth": round(growth[largest], 3) if largest in growth else None,
        "rss_largest_worker": largest,
        "rss_largest_kb": {"first": first_rss.get(largest), "last": last_rss.get(largest)},
        "rss_growth_max": round(growth[grew_most], 3) if grew_most else None,
        "rss_growth_max_worker": grew_most,
        "rss_at_start_kb": result.baseline.rss_kb,
        "first_p99_ms": slices[0]["p99_ms"],
        "last_p99_ms": slices[-1]["p99_ms"],
        "first_fleet_cpu_ms_per_saga": slices[0]["fleet_cpu_ms_per_saga"],
        "last_fleet_cpu_ms_per_saga": slices[-1]["fleet_cpu_ms_per_saga"],
        "first_db_cpu_ms_per_saga": slices[0]["db_cpu_ms_per_saga"],
        "last_db_cpu_ms_per_saga": slices[-1]["db_cpu_ms_per_saga"],
        "placed": result.placed,
        "confirmed": sum(end.status == "CONFIRMED" for end in result.ends),
        "rejected": sum(end.status == "REJECTED" for end in result.ends),
        "unexpected_outcomes": sum(s["unexpected_outcomes"] for s in slices),
        "reconnects": result.reconnects,
    }
    summary["goal_rate_met"] = ratio is not None and ratio >= GOAL_RATE
    summary["goal_rss_met"] = (
        summary["rss_growth"] is not None and summary["rss_growth"] <= GOAL_RSS
    )
    return slices, summary


# --- Output -------------------------------------------------------------------------------


def report(
    slices: list[dict[str, Any]], summary: dict[str, Any], config: dict[str, Any], as_json: bool
) -> None:
    if as_json:
        document = {"config": config, "slices": slices, "summary": summary}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    title = (
        f"soak: {summary['sagas']:,} sagas (mixed, refusals {config['refusals']}),"
        f" {config['replicas']} replica(s), {config['concurrency']} in flight;"
        f" housekeeping every {config['housekeeping_interval_s']:g} s, outbox retention"
        f" {config['outbox_retention_s']:g} s, inbox retention {config['inbox_retention_s']:g} s"
    )
    show(
        title,
        [
            "slice",
            "sagas",
            "seconds",
            "rate/s",
            "p50 ms",
            "p99 ms",
            "fleet CPU ms/saga",
            "db CPU ms/saga",
            "largest RSS MB",
            "cores: fleet / other",
        ],
        [
            {
                "slice": s["slice"],
                "sagas": f"{s['from']:,}-{s['to']:,}",
                "seconds": _num(s["seconds"], 1),
                "rate/s": _num(s["sagas_per_second"], 1),
                "p50 ms": s["p50_ms"],
                "p99 ms": s["p99_ms"],
                "fleet CPU ms/saga": _num(s["fleet_cpu_ms_per_saga"], 1),
                "db CPU ms/saga": _num(s["db_cpu_ms_per_saga"], 1),
                "largest RSS MB": _num(max(s["rss_kb"].values(), default=0) / 1024, 1),
                "cores: fleet / other": None
                if s["fleet_cores"] is None
                else f"{s['fleet_cores']:.2f} / {s['other_cores']:.2f}",
            }
            for s in slices
        ],
        False,
    )
    labels = list(slices[-1]["rss_kb"])
    show(
        "resident memory (VmRSS, MB) of each worker at each slice's end",
        ["slice", *labels],
        [{"slice": s["slice"], **_megabytes(s["rss_kb"])} for s in slices],
        False,
        width=200,
    )
    show(
        "rows at each slice's end: inbox / outbox (unpublished); the order service's events",
        ["slice", *catalog.SERVICES, "order events"],
        [
            {
                "slice": s["slice"],
                **{service: _rows_cell(rows) for service, rows in s["rows"].items()},
                "order events": s["rows"]["order"]["events"],
            }
            for s in slices
        ],
        False,
        width=200,
    )
    first_goal = f">= {GOAL_RATE:.0%}" + (
        "" if summary["sagas"] == GOAL_N else f" (at N={GOAL_N:,})"
    )
    rss_goal = f"<= {GOAL_RSS:.2f}" + ("" if summary["sagas"] == GOAL_N else f" (at N={GOAL_N:,})")
    show(
        f"summary: {summary['sagas']:,} sagas in {summary['seconds']:,.0f} s"
        f" ({summary['sagas_per_second']} sagas/s overall)",
        ["method", "value", "goal", "met"],
        [
            {"method": "first tenth, sagas/s", "value": _num(summary["first_rate"], 1)},
            {"method": "last tenth, sagas/s", "value": _num(summary["last_rate"], 1)},
            {
                "method": "last vs first",
                "value": _percent(summary["last_vs_first"]),
                "goal": first_goal,
                "met": "yes" if summary["goal_rate_met"] else "no",
            },
            {
                "method": "last vs first, per fleet CPU second (CPU ms/saga first / last)",
                "value": _percent(summary["cpu_last_vs_first"]),
            },
            {
                "method": f"RSS growth of the largest worker ({summary['rss_largest_worker']})",
                "value": _num(summary["rss_growth"], 3),
                "goal": rss_goal,
                "met": "yes" if summary["goal_rss_met"] else "no",
            },
            {
                "method": f"largest RSS growth ({summary['rss_growth_max_worker']})",
                "value": _num(summary["rss_growth_max"], 3),
            },
            {
                "method": "p99 ms, first -> last tenth",
                "value": f"{summary['first_p99_ms']:,} -> {summary['last_p99_ms']:,}",
            },
            {
                "method": "fleet CPU ms/saga, first -> last tenth",
                "value": f"{_num(summary['first_fleet_cpu_ms_per_saga'], 1)}"
                f" -> {_num(summary['last_fleet_cpu_ms_per_saga'], 1)}",
            },
            {
                "method": "db CPU ms/saga, first -> last tenth",
                "value": f"{_num(summary['first_db_cpu_ms_per_saga'], 1)}"
                f" -> {_num(summary['last_db_cpu_ms_per_saga'], 1)}",
            },
            {
                "method": "confirmed / rejected / unexpected outcomes",
                "value": f"{summary['confirmed']:,} / {summary['rejected']:,}"
                f" / {summary['unexpected_outcomes']}",
            },
            {
                "method": "worker restarts / reconnects (db, broker)",
                "value": f"{config['restarts']} / {summary['reconnects']['database']},"
                f" {summary['reconnects']['broker']}",
            },
        ],
        False,
    )


def _fleet_cpu_ms(numbers: dict[str, Any]) -> float | None:
    """The fleet's CPU ms per saga in a slice: workers, their backends, this process."""
    keys = ("fleet_cpu_ms_per_saga", "db_cpu_ms_per_saga", "own_cpu_ms_per_saga")
    if numbers["fleet_cpu_ms_per_saga"] is None:
        return None
    return float(sum(numbers[key] for key in keys))


def _rows_cell(rows: dict[str, int]) -> str:
    return f"{rows['inbox']:,} / {rows['outbox']:,} ({rows['outbox_unpublished']:,})"


def _megabytes(rss_kb: dict[str, int]) -> dict[str, str | None]:
    return {label: _num(kb / 1024, 1) for label, kb in rss_kb.items()}


def _num(value: float | None, digits: int) -> str | None:
    return None if value is None else f"{value:,.{digits}f}"


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value:.0%}"


# --- Entry point --------------------------------------------------------------------------


async def main(
    sagas: int,
    replicas: int,
    concurrency: int,
    refusals: float,
    housekeeping: tuple[float, float, float],
    as_json: bool,
) -> None:
    interval, outbox_retention, inbox_retention = housekeeping
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    settings = Settings(
        namespace=fresh_namespace(),
        housekeeping_interval=interval,
        outbox_retention_seconds=outbox_retention,
        inbox_retention_seconds=inbox_retention,
        metrics_port=0,
    )
    config = {
        "namespace": settings.namespace,
        "sagas": sagas,
        "replicas": replicas,
        "concurrency": concurrency,
        "refusals": refusals,
        "saga": "mixed",
        "housekeeping_interval_s": interval,
        "outbox_retention_s": outbox_retention,
        "inbox_retention_s": inbox_retention,
        "event_loop": settings.event_loop,
    }
    print(
        f"soak: {sagas:,} sagas, {replicas} replica(s), {concurrency} in flight; housekeeping"
        f" every {interval:g} s, outbox retention {outbox_retention:g} s, inbox retention"
        f" {inbox_retention:g} s",
        file=sys.stderr,
        flush=True,
    )
    async with bench_namespace(settings):
        fleet = await Fleet.start(settings, replicas)
        try:
            result = await soak(settings, fleet, sagas, concurrency, refusals)
        finally:
            print(f"namespace {settings.namespace}: stopping fleet up", file=sys.stderr)
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a graceful stop
            try:
                await fleet.stop()
            finally:
                signal.signal(signal.SIGINT, previous)
        config["restarts"] = fleet.restarts
    slices, summary = summarise(result, sagas)
    report(slices, summary, config, as_json)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, required=True, help="sagas to end (at least 10)")
    parser.add_argument("--replicas", type=int, default=1, help="fleet up --replicas")
    parser.add_argument("--concurrency", type=int, default=100, help="sagas kept in flight")
    parser.add_argument("--refusals", type=float, default=0.1, help="fraction meant to fail")
    parser.add_argument("--housekeeping-interval", type=float, default=5.0, metavar="S")
    parser.add_argument("--outbox-retention", type=float, default=60.0, metavar="S")
    parser.add_argument("--inbox-retention", type=float, default=180.0, metavar="S")
    parser.add_argument("--json", action="store_true")
    add_loop_option(parser)
    args = parser.parse_args()
    if args.sagas < SLICES or args.concurrency < 1 or not 0 <= args.refusals <= 1:
        parser.error(f"--sagas needs at least {SLICES}, --concurrency 1, --refusals 0..1")
    if not 1 <= args.replicas <= 16:
        parser.error("--replicas: 1 to 16, as fleet up takes")
    housekeeping = (args.housekeeping_interval, args.outbox_retention, args.inbox_retention)
    try:
        run(
            main(
                args.sagas,
                args.replicas,
                args.concurrency,
                args.refusals,
                housekeeping,
                args.json,
            ),
            args.loop,
        )
    except KeyboardInterrupt:
        sys.exit(130)
    except asyncio.CancelledError:  # SIGTERM
        sys.exit(143)


if __name__ == "__main__":
    cli()
