"""A dead letter's signature: the error type and the innermost frame of the fleet's own code
(module.function, no line number), so a group survives unrelated edits."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workers.runtime.errors import PermanentError, signature

MODULE = "workers.signature_probe_module"  # under workers/: counted as the fleet's code


def load(tmp_path: Path, source: str) -> Any:
    """``source`` as the module MODULE (a fresh import each time)."""
    package = tmp_path / "workers"
    package.mkdir(exist_ok=True)
    (package / "signature_probe_module.py").write_text(source)
    sys.modules.pop(MODULE, None)
    import workers

    workers.__path__.append(str(package))
    try:
        return importlib.import_module(MODULE)
    finally:
        workers.__path__.remove(str(package))


SOURCE = """
from workers.runtime.errors import PermanentError

def handler():
    return helper()

def helper():
    raise PermanentError("no")

class Store:
    def save(self):
        import json
        json.loads("{not json")
"""


def raised(call: Callable[[], object]) -> BaseException:
    with pytest.raises(BaseException) as caught:
        call()
    return caught.value


def test_the_innermost_fleet_frame_names_the_group(tmp_path: Path) -> None:
    module = load(tmp_path, SOURCE)
    assert signature(raised(module.handler)) == f"PermanentError at {MODULE}.helper"


def test_an_error_of_a_library_is_placed_at_the_fleet_code_that_called_it(
    tmp_path: Path,
) -> None:
    module = load(tmp_path, SOURCE)
    error = raised(module.Store().save)
    assert signature(error) == f"JSONDecodeError at {MODULE}.Store.save"


def test_the_signature_survives_edits_that_move_lines(tmp_path: Path) -> None:
    before = signature(raised(load(tmp_path, SOURCE).handler))
    moved = "# a comment\n\n\nimport os\n" + SOURCE.replace(
        "    return helper()", "    x = 1\n    return helper()"
    )
    after = signature(raised(load(tmp_path, moved).handler))
    assert before == after


def test_the_same_type_raised_in_two_places_is_two_groups(tmp_path: Path) -> None:
    module = load(tmp_path, SOURCE + "\ndef other():\n    raise PermanentError('no')\n")
    assert signature(raised(module.helper)) != signature(raised(module.other))


def test_an_error_never_raised_has_its_type_alone() -> None:
    assert signature(PermanentError("made, not raised")) == "PermanentError"
