"""Every benchmark with small defaults, and one table of the ratios that the goals are set in.

Each benchmark runs as its own process with ``--json`` (in a namespace of its own, torn down
after), one after the other so they do not compete for the cores; this checks what each
printed and puts each fleet rate beside the baseline it was measured against in the same run:

* consumer: the idempotent consumer (one inventory worker in the benchmark's process) beside
  the faster of two bare consumers at the same prefetch, aio-pika alone and FastStream
  without dependency injection (``_support.bare_consumers``); with the CPU time per message
  of the process that consumed, for all three;
* sagas: saga messages per second of ``fleet up`` under ``fleet load``, per style, beside the
  faster bare consumer; with deliveries and transactions per saga;
* view: the live projection and a rebuild, events per second, beside the faster bare
  consumer;
* relay: the outbox relay beside raw pipelined confirmed publishing with aio-pika;
* faststream: the inventory worker consuming through FastStream subscribers beside the same
  worker straight on aio-pika, CPU per message (``subscription_cost.py --full``);
* cli: ``fleet --help`` beside ``import typer``;
* soak: sagas kept flowing through ``fleet up``; the last tenth's rate against the first's,
  and the largest worker's memory growth.

The goals are issue 17's ("honest baselines"): each a ratio against the faster bare consumer
(the relay's against raw publishing), since a ratio is what counts on a shared machine, never
an absolute rate. Nothing here asserts on time: a run fails (exit 1, naming what failed) when
a benchmark exits with an error, or its output lacks a row it must print, or a row has an
error or a rate that is not a positive number.

``--smoke`` runs every benchmark at a tiny size (seconds each, not minutes) to prove they all
still run and print every row (CI runs it); its ratios mean nothing.

    uv run python bench/run_all.py [--smoke] [--json]

Adding a benchmark is one entry in ``BENCHMARKS``: its script, its arguments for the full and
the smoke run, a check of its JSON output and a reader of the table's rows from it.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _support import faster, show

HERE = Path(__file__).resolve().parent

Output = dict[str, Any]  # what a benchmark printed with --json
Row = dict[str, Any]  # a row of the table (or of a benchmark's output)


@dataclass(frozen=True)
class Benchmark:
    """How run_all runs a benchmark, checks its output and reads the table's rows from it."""

    script: str  # in bench/, run with its arguments and --json
    args: Sequence[str]  # the full run's (small defaults: a few minutes in all)
    smoke: Sequence[str]  # --smoke's: seconds
    check: Callable[[Output], list[str]]  # what is wrong with its output (nothing: [])
    read: Callable[[Output], list[Row]]  # its rows of the table


GOALS = {
    "consumer": 0.50,
    "sagas": 0.25,
    "engines": 0.80,  # sagas/s with payment on MariaDB over all-PostgreSQL's (issue 19)
    "live projection": 0.40,
    "rebuild": 0.35,
    "relay": 0.90,
    "soak rate": 0.90,  # the last tenth of a soak against its first
    "soak memory": 1.20,  # the largest worker's RSS at the end over its RSS after a tenth
    "faststream": 0.10,  # FastStream's extra CPU per message over the direct path's
    "cli": 3.0,  # fleet --help against import typer
}
TIMEOUT = {"full": 3_600.0, "smoke": 600.0}  # seconds a benchmark may take before it is stopped


# --- Checks: what a benchmark must print. ------------------------------------------------


def rows_present(rate: str, *methods: str) -> Callable[[Output], list[str]]:
    """A check of a benchmark whose output has ``rows``: a row whose method starts with each
    of ``methods``, each with a positive number as its ``rate``; no row with an error."""

    def check(output: Output) -> list[str]:
        rows = output.get("rows")
        if not isinstance(rows, list):
            return ["its output has no rows"]
        problems = []
        for method in methods:
            found = [row for row in rows if str(row.get("method", "")).startswith(method)]
            if not found:
                problems.append(f"no row {method!r}")
            for row in found:
                if not _positive(row.get(rate)):
                    problems.append(f"{row['method']}: {rate} is {row.get(rate)!r}")
        problems += [f"{row.get('method')}: {row['error']}" for row in rows if row.get("error")]
        return problems

    return check


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


# --- Readers: a benchmark's rows of the table. --------------------------------------------


def bare(rows: list[Row], rate: str) -> Row:
    """The faster of the bare consumers' rows (by ``rate``): the baseline."""
    baseline = faster([row for row in rows if "bare" in row["method"]], rate)
    if baseline is None:
        raise LookupError("no bare consumer measured")
    return baseline


def first(rows: list[Row], method: str) -> Row:
    found = next((row for row in rows if row["method"].startswith(method)), None)
    if found is None:
        raise LookupError(f"no row {method!r}")
    return found


def ratio_row(
    name: str, fleet: float | None, baseline: Row, rate: str, unit: str, goal: float, **extra: Any
) -> Row:
    base = baseline.get(rate)
    ratio = fleet / base if fleet and base else None
    return {
        "benchmark": name,
        "fleet": round(fleet) if fleet else None,
        "baseline": round(base) if base else None,
        "baseline method": baseline["method"],
        "unit": unit,
        "ratio": f"{ratio:.0%}" if ratio is not None else None,
        "goal": f">= {goal:.0%}",
        "met": None if ratio is None else ("yes" if ratio >= goal else "no"),
        **extra,
    }


def cpu_ms(row: Row) -> float | None:
    value = row.get("cpu ms/msg")
    return round(value, 2) if value else None


def consumer_rows(output: Output) -> list[Row]:
    rows = output["rows"]
    fleet = first(rows, "fleet consumer")
    return [
        ratio_row(
            f"consumer, prefetch {fleet['prefetch']}",
            fleet.get("msg/s"),
            bare(rows, "msg/s"),
            "msg/s",
            "msg/s",
            GOALS["consumer"],
            **{
                "fleet cpu ms/msg": cpu_ms(fleet),
                "aio-pika cpu ms/msg": cpu_ms(first(rows, "bare aio-pika")),
                "faststream cpu ms/msg": cpu_ms(first(rows, "bare faststream")),
            },
        )
    ]


def saga_rows(output: Output) -> list[Row]:
    rows = output["rows"]
    baseline = bare(rows, "messages/s")
    all_pg = {row["style"]: row for row in rows if row.get("engines") == "all PostgreSQL"}
    mixed = [
        ratio_row(
            f"sagas, {row['style']}, {row['engines']}",
            row.get("rate/s"),
            all_pg[row["style"]],
            "rate/s",
            "sagas/s",
            GOALS["engines"],
        )
        for row in rows
        if row.get("engines") not in (None, "all PostgreSQL") and row.get("style") in all_pg
    ]
    return mixed + [
        ratio_row(
            "sagas, " + row["method"].removeprefix("fleet, ").removesuffix(" sagas"),
            row.get("messages/s"),
            baseline,
            "messages/s",
            "saga msg/s",
            GOALS["sagas"],
            **{
                "deliveries/saga": row.get("deliveries/saga"),
                "transactions/saga": row.get("transactions/saga"),
            },
        )
        for row in rows
        if row["method"].startswith("fleet") and row.get("engines") == "all PostgreSQL"
    ]


def view_rows(output: Output) -> list[Row]:
    rows = output["rows"]
    baseline = bare(rows, "events/s")
    live = first(rows, "order_view projection")
    rebuild = first(rows, "fleet view rebuild")
    return [
        ratio_row(
            "view, live projection",
            live.get("events/s"),
            baseline,
            "events/s",
            "events/s",
            GOALS["live projection"],
        ),
        ratio_row(
            f"view, rebuild of {rebuild['orders']} orders",
            rebuild.get("events/s"),
            baseline,
            "events/s",
            "events/s",
            GOALS["rebuild"],
        ),
    ]


def relay_rows(output: Output) -> list[Row]:
    rows = output["rows"]
    relay = first(rows, "relay")
    return [
        ratio_row(
            f"relay, batch {relay['batch']}",
            relay.get("msg/s"),
            first(rows, "raw"),
            "msg/s",
            "msg/s",
            GOALS["relay"],
        )
    ]


def soak_check(output: Output) -> list[str]:
    """The soak prints ``slices`` (a tenth of the run each) and a ``summary``."""
    slices, summary = output.get("slices"), output.get("summary")
    if not isinstance(slices, list) or len(slices) != 10:
        return ["its output has no ten slices"]
    if not isinstance(summary, dict):
        return ["its output has no summary"]
    problems = [
        f"slice {n}: sagas/s is {row.get('sagas_per_second')!r}"
        for n, row in enumerate(slices, start=1)
        if not _positive(row.get("sagas_per_second"))
    ]
    for key in ("first_rate", "last_rate", "rss_growth"):
        if not _positive(summary.get(key)):
            problems.append(f"summary: {key} is {summary.get(key)!r}")
    return problems


def soak_rows(output: Output) -> list[Row]:
    """How cost grows with work: the last tenth's rate against the first's (a ratio of the
    fleet with itself, so its baseline is its own first tenth), and memory growth."""
    summary = output["summary"]
    sagas = summary["sagas"]
    first_rate, last_rate, growth = (
        summary["first_rate"],
        summary["last_rate"],
        summary["rss_growth"],
    )
    return [
        {
            "benchmark": f"soak of {sagas:,} sagas, last tenth",
            "fleet": round(last_rate, 1),
            "baseline": round(first_rate, 1),
            "baseline method": "its first tenth",
            "unit": "sagas/s",
            "ratio": f"{last_rate / first_rate:.0%}",
            "goal": f">= {GOALS['soak rate']:.0%}",
            "met": "yes" if last_rate / first_rate >= GOALS["soak rate"] else "no",
        },
        {
            "benchmark": f"soak of {sagas:,} sagas, largest worker's memory",
            "unit": "RSS last / first",
            "ratio": f"{growth:.2f}",
            "goal": f"<= {GOALS['soak memory']:.2f}",
            "met": "yes" if growth <= GOALS["soak memory"] else "no",
        },
    ]


def faststream_rows(output: Output) -> list[Row]:
    """FastStream's price: the extra CPU per message of the inventory worker consuming
    through FastStream subscribers over the same worker straight on aio-pika (paired
    medians of interleaved runs), as a share of the direct path's."""
    rows = output["rows"]
    direct = first(rows, "d. inventory worker, aio-pika")
    through = first(rows, "e. inventory worker, faststream")
    extra, base = through.get("extra ms/msg"), direct.get("cpu ms/msg")
    share = extra / base if extra is not None and base else None
    return [
        {
            "benchmark": "FastStream subscribers, extra CPU per message",
            "fleet": round(through["cpu ms/msg"], 3),
            "baseline": round(base, 3) if base else None,
            "baseline method": "the same consumer on aio-pika",
            "unit": "cpu ms/msg",
            "ratio": f"{share:+.0%}" if share is not None else None,
            "goal": f"<= +{GOALS['faststream']:.0%}",
            "met": None if share is None else ("yes" if share <= GOALS["faststream"] else "no"),
        }
    ]


def cli_rows(output: Output) -> list[Row]:
    """The CLI's start-up: ``fleet --help`` beside the bare import of typer."""
    rows = output["rows"]
    typer = first(rows, 'python -c "import typer"')
    help_ = first(rows, "fleet --help")
    ratio = help_["median ms"] / typer["median ms"]
    return [
        {
            "benchmark": "fleet --help, start-up",
            "fleet": help_["median ms"],
            "baseline": typer["median ms"],
            "baseline method": "import typer",
            "unit": "ms",
            "ratio": f"{ratio:.1f}x",
            "goal": f"<= {GOALS['cli']:.0f}x",
            "met": "yes" if ratio <= GOALS["cli"] else "no",
        }
    ]


def latency_rows(output: Output) -> list[Row]:
    """The relay's commit-to-delivery p99 with payment on MariaDB beside PostgreSQL's: no
    goal but to be measured (issue 19); the p50s go beside it."""
    rows = output["rows"]
    postgresql = first(rows, "commit to delivery, payment on postgresql")
    mariadb = first(rows, "commit to delivery, payment on mariadb")
    return [
        {
            "benchmark": "relay, commit to delivery p99, payment on MariaDB",
            "fleet": mariadb["p99 ms"],
            "baseline": postgresql["p99 ms"],
            "baseline method": "payment on PostgreSQL",
            "unit": "ms",
            "ratio": f"{mariadb['p99 ms'] / postgresql['p99 ms']:.1f}x",
            "goal": "measured",
            "met": None,
            "p50 ms (mariadb / postgresql)": f"{mariadb['p50 ms']} / {postgresql['p50 ms']}",
        }
    ]


# --- The benchmarks. ----------------------------------------------------------------------

BARE = ("bare aio-pika", "bare faststream")

BENCHMARKS: dict[str, Benchmark] = {
    "consumer": Benchmark(
        "consumer_throughput.py",
        ["--messages", "2000", "--prefetch", "20"],
        ["--messages", "200", "--prefetch", "20"],
        rows_present("msg/s", *BARE, "fleet consumer"),
        consumer_rows,
    ),
    "sagas": Benchmark(
        "saga_throughput.py",
        ["--orders", "100", "--concurrency", "50", "--engines", "payment=mariadb"],
        [
            *("--orders", "10", "--concurrency", "10", "--bare-messages", "200"),
            *("--engines", "payment=mariadb"),
        ],
        rows_present(
            "messages/s",
            *BARE,
            "fleet, orchestration sagas",
            "fleet, choreography sagas",
            "fleet, orchestration sagas (payment on mariadb)",
            "fleet, choreography sagas (payment on mariadb)",
        ),
        saga_rows,
    ),
    "latency": Benchmark(
        "relay_latency.py",
        ["--messages", "300"],
        ["--messages", "20"],
        rows_present(
            "p99 ms",
            "commit to delivery, payment on postgresql",
            "commit to delivery, payment on mariadb",
        ),
        latency_rows,
    ),
    "view": Benchmark(
        "view_throughput.py",
        ["--rebuild-orders", "2000", "--live-orders", "500"],
        ["--rebuild-orders", "100", "--live-orders", "50", "--bare-messages", "200"],
        rows_present("events/s", *BARE, "order_view projection", "fleet view rebuild"),
        view_rows,
    ),
    "relay": Benchmark(
        "relay_throughput.py",
        ["--messages", "5000", "--runs", "2", "--batch-sizes", "500"],
        ["--messages", "300", "--runs", "1", "--batch-sizes", "500"],
        rows_present("msg/s", "raw (batch 500)", "relay (batch 500)"),
        relay_rows,
    ),
    "faststream": Benchmark(
        "subscription_cost.py",
        ["--messages", "4000", "--runs", "3", "--full"],
        ["--messages", "200", "--runs", "1", "--full"],
        rows_present("cpu ms/msg", "a. bare", "b. Subscription", "c. FastStream", "d. ", "e. "),
        faststream_rows,
    ),
    "cli": Benchmark(
        "cli_start.py",
        ["--runs", "15"],
        ["--runs", "2"],
        rows_present("median ms", 'python -c "import typer"', "fleet --help", "fleet dlq"),
        cli_rows,
    ),
    "soak": Benchmark(
        "soak.py",
        ["--sagas", "2000"],
        ["--sagas", "200", "--concurrency", "20"],  # 20 a tenth: several transactions each
        soak_check,
        soak_rows,
    ),
}


# --- Running them. ------------------------------------------------------------------------


def run(name: str, benchmark: Benchmark, mode: str) -> tuple[Output | None, list[str]]:
    """What ``benchmark`` printed with --json, and what went wrong running it; its progress
    goes to our stderr. Past its timeout, or on Ctrl-C, it is interrupted as Ctrl-C would
    (it tears its namespace down), and killed only if it does not end within a minute."""
    args = benchmark.smoke if mode == "smoke" else benchmark.args
    print(f"== {name}: {benchmark.script} {' '.join(args)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(HERE / benchmark.script), *args, "--json"],
        cwd=HERE.parent,
        env={**os.environ, "PYTHONPATH": str(HERE)},
        stdout=subprocess.PIPE,
        text=True,
        # Ctrl-C as the benchmark expects it, even where ours is ignored (a background job).
        preexec_fn=functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL),
    )
    problems = []
    try:
        stdout, _ = process.communicate(timeout=TIMEOUT[mode])
    except subprocess.TimeoutExpired:
        problems.append(f"still running after {TIMEOUT[mode]:.0f} s: interrupted")
        stdout = _interrupt(process)
    except KeyboardInterrupt:
        _interrupt(process, grace=2.0)
        raise
    seconds = time.monotonic() - started
    print(f"== {name}: {seconds:.0f} s, exit {process.returncode}", file=sys.stderr, flush=True)
    if process.returncode != 0:
        problems.append(f"exited with {process.returncode}")
    try:
        output = json.loads(stdout)
    except json.JSONDecodeError:
        return None, [*problems, "printed no JSON"]
    return output, problems + benchmark.check(output)


def _interrupt(process: subprocess.Popen[str], grace: float = 0.0) -> str:
    """Stop ``process`` as Ctrl-C does (after ``grace`` seconds: a Ctrl-C at the terminal
    reached it already); what it printed."""
    try:
        return process.communicate(timeout=grace)[0]
    except subprocess.TimeoutExpired:
        pass
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        print(f"killed pid {process.pid}: its namespace may be left behind", file=sys.stderr)
        return process.communicate()[0]


COLUMNS = [
    "benchmark",
    "fleet",
    "baseline",
    "baseline method",
    "unit",
    "ratio",
    "goal",
    "met",
    "fleet cpu ms/msg",
    "aio-pika cpu ms/msg",
    "faststream cpu ms/msg",
    "deliveries/saga",
    "transactions/saga",
]


def main(mode: str, as_json: bool) -> int:
    started = time.monotonic()
    table: list[Row] = []
    failed: dict[str, list[str]] = {}
    for name, benchmark in BENCHMARKS.items():
        output, problems = run(name, benchmark, mode)
        rows: list[Row] = []
        if output is not None:
            try:
                rows = benchmark.read(output)
            except (KeyError, LookupError, TypeError) as error:
                problems.append(f"its rows cannot be read: {type(error).__name__}: {error}")
        if problems:
            failed[name] = problems
        table += rows or [{"benchmark": name}]
        if problems:
            table[-1]["error"] = "; ".join(problems)
    if mode == "smoke":
        for row in table:
            row["met"] = None  # tiny sizes: no ratio means anything
    title = (
        "fleet benchmarks, smoke run (tiny sizes: they run, they print every row; "
        "the ratios mean nothing)"
        if mode == "smoke"
        else "fleet benchmarks: each fleet rate beside the faster baseline, in the same run"
    )
    rows = [{"method": row["benchmark"], **row} for row in table]
    if as_json:
        sys.stdout.write(json.dumps({"title": title, "rows": rows, "failed": failed}, indent=2))
        sys.stdout.write("\n")
    else:
        show(title, COLUMNS, rows, as_json=False, width=220)
    seconds = time.monotonic() - started
    if as_json:  # the table names them otherwise
        for name, problems in failed.items():
            print(f"FAILED {name}: {'; '.join(problems)}", file=sys.stderr)
    verdict = f"failed: {', '.join(failed)}" if failed else "all ran"
    print(
        f"{mode} run of {len(BENCHMARKS)} benchmarks, {verdict} ({seconds:.0f} s)", file=sys.stderr
    )
    return 1 if failed else 0


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every benchmark at a tiny size: check that each runs and prints all its rows",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    try:
        sys.exit(main("smoke" if args.smoke else "full", args.json))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
