"""The unit tier: rules and decisions as values, with no server and no setting from the
environment. Every ``FLEET_`` variable is removed for each test (a test that needs one sets
it itself), so the tier gives the same answers on a developer's machine, on CI, and with
every server unreachable; and the home and config directories are the test's own, so no
secrets file is ever read from or written to the real ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def no_fleet_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("FLEET_")]:
        monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def no_real_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
