"""``fleet docs asyncapi`` as operators run it: a real process, no servers needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "tdocscli"


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["FLEET_NAMESPACE"] = NAMESPACE
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docs_asyncapi_writes_the_document_or_prints_it(tmp_path: Path) -> None:
    output = tmp_path / "asyncapi.json"
    written = fleet("docs", "asyncapi", "--output", str(output))
    assert written.returncode == 0, written.stderr
    document = json.loads(output.read_text(encoding="utf-8"))
    assert document["asyncapi"] == "3.0.0"
    assert f"{NAMESPACE}.order_view.project" in document["operations"]
    (line,) = written.stdout.splitlines()
    channels = len(document["channels"])
    assert line.startswith(f"wrote {output}: ") and f"{channels} channels" in line
    assert written.stderr == ""

    printed = fleet("docs", "asyncapi", "--output", "-")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == document  # the document alone, the same each run


def test_docs_asyncapi_to_an_unwritable_path_says_so_in_one_line(tmp_path: Path) -> None:
    result = fleet("docs", "asyncapi", "--output", str(tmp_path / "missing" / "asyncapi.json"))
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("fleet: cannot write ") and "No such file or directory" in line
