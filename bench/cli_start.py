"""How long ``fleet`` takes to answer ``--help``, beside the bare import of typer, in one run.

What is measured: each command runs as a fresh process, ``--runs`` times (default 15), after
one warm-up run that leaves the bytecode cached; the table shows the median wall time and
its ratio to ``python -c "import typer"``, the floor of any typer application.

* ``fleet --help`` and ``fleet dlq --help``: the installed console script (``fleet`` beside
  this Python), so the numbers include what a user waits for;
* ``python -X importtime``'s count of imported modules for each, so a regression says what
  it imports, not only how long it took.

How to read it: the CLI imports the library inside each command, so help should cost little
more than typer itself (the goal is within 3 times). Nothing here asserts on time.

    uv run python bench/cli_start.py [--runs 15] [--json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _support import median, show

ROOT = Path(__file__).resolve().parents[1]


def fleet_command() -> list[str]:
    """The console script next to this Python (as ``uv run fleet`` runs it), else ``-m cli``."""
    script = Path(sys.executable).with_name("fleet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


def cases() -> list[tuple[str, list[str], list[str]]]:
    """(label, command to time, the same as python arguments for -X importtime)."""
    typer_import = ["-c", "import typer"]
    fleet_help = [
        "-c",
        "import sys; from cli.main import main; sys.argv = ['fleet', '--help']; main()",
    ]
    dlq_help = [
        "-c",
        "import sys; from cli.main import main; sys.argv = ['fleet', 'dlq', '--help']; main()",
    ]
    return [
        ('python -c "import typer"', [sys.executable, *typer_import], typer_import),
        ("fleet --help", [*fleet_command(), "--help"], fleet_help),
        ("fleet dlq --help", [*fleet_command(), "dlq", "--help"], dlq_help),
    ]


def run_once(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=os.environ)
    return time.perf_counter() - started


def imported_modules(arguments: list[str]) -> int:
    """How many modules the command imports (lines of -X importtime)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *arguments],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return sum(line.startswith("import time:") for line in result.stderr.splitlines()) - 1


def main(runs: int, as_json: bool) -> None:
    rows = []
    floor = None
    for label, command, arguments in cases():
        run_once(command)  # the warm-up: bytecode cached from here on
        seconds = median([run_once(command) for _ in range(runs)])
        floor = floor or seconds
        rows.append(
            {
                "method": label,
                "median ms": round(seconds * 1000, 1),
                "vs typer": f"{seconds / floor:.2f}x",
                "modules": imported_modules(arguments),
            }
        )
    show(
        f"start-up of the CLI, median of {runs} runs each",
        ["method", "median ms", "vs typer", "modules"],
        rows,
        as_json,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    main(args.runs, args.json)


if __name__ == "__main__":
    cli()
