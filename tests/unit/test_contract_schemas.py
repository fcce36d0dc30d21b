"""Released contract versions are frozen: their JSON Schema snapshots must not change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contracts import registry
from contracts.schemas import orphan_snapshots, schema_text, snapshot_all, snapshot_path

RELEASED = registry.released()


@pytest.mark.parametrize(
    ("type_", "version", "model"), RELEASED, ids=[f"{t}.v{v}" for t, v, _ in RELEASED]
)
def test_released_schema_is_unchanged(type_: str, version: int, model: Any) -> None:
    path = snapshot_path(type_, version)
    assert path.exists(), (
        f"no schema snapshot for {type_} v{version}: run python -m contracts.schemas"
    )
    assert path.read_text(encoding="utf-8") == schema_text(model), (
        f"schema of {type_} v{version} changed; released versions are frozen: "
        f"add version {version + 1} with an upcaster instead"
    )


def test_every_snapshot_has_a_registered_model() -> None:
    orphans = [path.name for path in orphan_snapshots()]
    assert not orphans, (
        f"snapshots with no registered model: {', '.join(orphans)}; released versions must stay "
        "readable: restore their models"
    )


def test_snapshots_are_written_once_and_orphans_are_found(tmp_path: Path) -> None:
    written = snapshot_all(write=True, directory=tmp_path)
    assert sorted(written) == sorted(tmp_path.iterdir())
    path, text = next(iter(written.items()))
    assert text.endswith("}\n")
    assert json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n" == text

    path.write_text("{}\n", encoding="utf-8")  # a changed model must not overwrite its snapshot
    snapshot_all(write=True, directory=tmp_path)
    assert path.read_text(encoding="utf-8") == "{}\n"

    assert orphan_snapshots(tmp_path) == []
    (tmp_path / "order.shipped.v1.json").write_text("{}\n", encoding="utf-8")
    assert orphan_snapshots(tmp_path) == [tmp_path / "order.shipped.v1.json"]
