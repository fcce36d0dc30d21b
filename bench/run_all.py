"""Every benchmark with small defaults, and one table of the ratios that the goals are set in.

Each benchmark runs as its own process with ``--json`` (in a namespace of its own, torn down
after), one after the other so they do not compete for the cores; this reads their rows and
puts each fleet rate beside the baseline it was measured against in the same run:

* consumer: the idempotent consumer (one inventory worker in the benchmark's process) beside
  a bare FastStream consumer at the same prefetch; with the CPU time per message of the
  process that consumed, for both;
* sagas: saga messages per second of ``fleet up`` under ``fleet load``, per style, beside the
  bare consumer; with deliveries and transactions per saga;
* view: the live projection and a rebuild, events per second, beside the bare consumer;
* relay: the outbox relay beside raw pipelined confirmed publishing with aio-pika.

The goals are issue 9's; a ratio is what counts on a shared machine, never an absolute rate.
Nothing here asserts: it prints, and exits 1 only if a benchmark failed to run.

    uv run python bench/run_all.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _support import show

HERE = Path(__file__).resolve().parent

# (benchmark script, its small-default arguments)
RUNS: dict[str, list[str]] = {
    "consumer": ["consumer_throughput.py", "--messages", "2000", "--prefetch", "20"],
    "sagas": ["saga_throughput.py", "--orders", "100", "--concurrency", "50"],
    "view": ["view_throughput.py", "--rebuild-orders", "2000", "--live-orders", "500"],
    "relay": ["relay_throughput.py", "--messages", "5000", "--runs", "2", "--batch-sizes", "500"],
}
GOALS = {"consumer": 0.60, "sagas": 0.35, "live projection": 0.50, "rebuild": 0.40, "relay": 0.90}


def run(name: str) -> list[dict[str, Any]]:
    """The rows benchmark ``name`` prints with --json (its progress goes to our stderr)."""
    print(f"== {name}: {' '.join(RUNS[name])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(HERE / RUNS[name][0]), *RUNS[name][1:], "--json"],
        cwd=HERE.parent,
        env={**os.environ, "PYTHONPATH": str(HERE)},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    print(f"== {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = json.loads(result.stdout)["rows"]
    return rows


def ratio_row(
    name: str,
    fleet: float | None,
    baseline: float | None,
    unit: str,
    goal: float,
    **extra: Any,
) -> dict[str, Any]:
    ratio = fleet / baseline if fleet and baseline else None
    return {
        "benchmark": name,
        "fleet": round(fleet) if fleet else None,
        "baseline": round(baseline) if baseline else None,
        "unit": unit,
        "ratio": f"{ratio:.0%}" if ratio is not None else None,
        "goal": f">= {goal:.0%}",
        "met": None if ratio is None else ("yes" if ratio >= goal else "no"),
        **extra,
    }


def cpu_ms_per_message(row: dict[str, Any]) -> float | None:
    cpu, count = row.get("cpu s"), row.get("messages")
    return round(cpu / count * 1000, 2) if cpu and count else None


def consumer_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    bare = next(r for r in rows if r["method"].startswith("bare"))
    fleet = next(r for r in rows if r["method"].startswith("fleet"))
    return [
        ratio_row(
            f"consumer, prefetch {fleet['prefetch']}",
            fleet.get("msg/s"),
            bare.get("msg/s"),
            "msg/s",
            GOALS["consumer"],
            **{
                "fleet cpu ms/msg": cpu_ms_per_message(fleet),
                "bare cpu ms/msg": cpu_ms_per_message(bare),
                "error": fleet.get("error") or bare.get("error"),
            },
        )
    ]


def saga_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    bare = next(r for r in rows if r["method"].startswith("bare"))
    return [
        ratio_row(
            "sagas, " + row["method"].removeprefix("fleet, ").removesuffix(" sagas"),
            row.get("messages/s"),
            bare.get("messages/s"),
            "saga msg/s",
            GOALS["sagas"],
            **{
                "deliveries/saga": row.get("deliveries/saga"),
                "transactions/saga": row.get("transactions/saga"),
            },
        )
        for row in rows
        if row["method"].startswith("fleet")
    ]


def view_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    bare = next(r for r in rows if r["method"].startswith("bare"))
    found = []
    for row in rows:
        if "projection" in row["method"]:
            name, goal = "view, live projection", GOALS["live projection"]
        elif "rebuild" in row["method"]:
            name, goal = f"view, rebuild of {row['orders']} orders", GOALS["rebuild"]
        else:
            continue
        found.append(ratio_row(name, row.get("events/s"), bare.get("events/s"), "events/s", goal))
    return found


def relay_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    raw = next(r for r in rows if r["method"].startswith("raw"))
    relay = next(r for r in rows if r["method"].startswith("relay"))
    return [
        ratio_row(
            f"relay, batch {relay['batch']}",
            relay.get("msg/s"),
            raw.get("msg/s"),
            "msg/s",
            GOALS["relay"],
            error=relay.get("error") or raw.get("error"),
        )
    ]


READERS = {"consumer": consumer_rows, "sagas": saga_rows, "view": view_rows, "relay": relay_rows}


def main(as_json: bool) -> int:
    table: list[dict[str, Any]] = []
    failed = False
    for name, read in READERS.items():
        try:
            table += read(run(name))
        except (subprocess.CalledProcessError, json.JSONDecodeError, StopIteration) as error:
            failed = True
            table.append({"benchmark": name, "error": f"{type(error).__name__}: {error}"})
    show(
        "fleet benchmarks: each fleet rate beside its baseline, measured in the same run",
        [
            "benchmark",
            "fleet",
            "baseline",
            "unit",
            "ratio",
            "goal",
            "met",
            "fleet cpu ms/msg",
            "bare cpu ms/msg",
            "deliveries/saga",
            "transactions/saga",
        ],
        [{"method": row["benchmark"], **row} for row in table],
        as_json,
        width=180,
    )
    return 1 if failed else 0


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    try:
        sys.exit(main(args.json))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
