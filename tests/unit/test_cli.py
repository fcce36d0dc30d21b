"""The CLI stays thin and lazy: its command table loads no library, and what it writes out
to stay so agrees with the library. (How fast it starts is bench/cli_start.py's to say.)"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from workers.order import public as orders
from workers.order_view import public as view

ROOT = Path(__file__).resolve().parents[2]
# What a command's help must not pay for: the library and its drivers. (Not pydantic: typer
# itself loads it to render a subcommand's help.)
HEAVY = ("sqlalchemy", "asyncpg", "alembic", "faststream", "aio_pika", "aiormq", "contracts", "db")


def modules_loaded_by(*argv: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after running ``fleet *argv``."""
    script = (
        "import json, sys\n"
        "from cli.main import main\n"
        f"sys.argv = ['fleet', *{list(argv)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stderr.splitlines()[-1])
    return set(loaded)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["dlq", "--help"],
        ["order", "place", "--help"],
        ["worker", "--help"],
        ["status", "--help"],
    ],
    ids=" ".join,
)
def test_help_loads_no_library(argv: list[str]) -> None:
    loaded = modules_loaded_by(*argv)
    assert "typer" in loaded  # the probe sees what was imported
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_a_command_loads_the_library_it_calls() -> None:
    # docs asyncapi to stdout needs no server: it must have loaded FastStream to write it.
    assert "faststream" in modules_loaded_by("docs", "asyncapi", "--output", "-")


def constants_of(path: Path) -> dict[str, Any]:
    """The module-level constants of a file, read (tests do not import the CLI)."""
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id.isupper():
                found[target.id] = ast.literal_eval(node.value)
    return found


def test_what_the_cli_writes_out_agrees_with_the_library() -> None:
    written = constants_of(ROOT / "cli" / "orders.py")
    assert written["DEFAULT_COUNTRY"] == orders.DEFAULT_COUNTRY
    assert written["STATUSES"] == view.STATUSES


def operator_name_with(environment: dict[str, str]) -> str:
    """The name ``cli.operator.operator_name`` gives, in a fresh interpreter (tests do not
    import the CLI) with only ``environment``."""
    script = "from cli.operator import operator_name\nprint(operator_name())"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_the_cli_records_actions_as_user_else_the_login_name() -> None:
    assert operator_name_with({"USER": "alice", "LOGNAME": "bob"}) == "alice"
    assert operator_name_with({"USER": "", "LOGNAME": "bob"}) == "bob"  # getpass reads it
