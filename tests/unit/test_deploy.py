"""deploy/: the dashboard and the alert rules ask only for series the fleet exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from workers.runtime import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_NAME = re.compile(r"\bfleet_[a-z_]+\b")


def exported_series() -> set[str]:
    names: set[str] = set()
    for collector in vars(metrics).values():
        if hasattr(collector, "describe") and hasattr(collector, "_name"):
            for family in collector.describe():
                names |= {family.name, f"{family.name}_total", f"{family.name}_bucket"}
                names |= {f"{family.name}_count", f"{family.name}_sum"}
    return names


def test_every_metric_of_the_dashboard_and_alerts_is_exported() -> None:
    exported = exported_series()
    assert "fleet_outbox_waiting" in exported  # the test reads the real definitions
    dashboard = json.loads((DEPLOY / "grafana" / "fleet-dashboard.json").read_text())
    asked = set(_NAME.findall(json.dumps(dashboard)))
    asked |= set(_NAME.findall((DEPLOY / "alerts.yml").read_text()))
    assert asked, "no fleet_ series found: the files moved?"
    assert asked <= exported, sorted(asked - exported)
