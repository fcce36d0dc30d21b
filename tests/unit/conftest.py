"""The unit tier: rules and decisions as values, with no server and no setting from the
environment. Every ``FLEET_`` variable is removed for each test (a test that needs one sets
it itself), so the tier gives the same answers on a developer's machine, on CI, and with
every server unreachable."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def no_fleet_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("FLEET_")]:
        monkeypatch.delenv(name)
