"""JSON Schema snapshots of every released (type, version), kept in this directory.

A released version is frozen: its snapshot is compared with the model in the unit tests, and
`python -m contracts.schemas` writes only snapshots that do not exist yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from contracts.base import Message
from contracts.registry import registry

SCHEMA_DIR = Path(__file__).parent


class _WireSchema(GenerateJsonSchema):
    """Only what is on the wire: class names and docstrings are not part of the contract, so
    renaming a class or rewording a docstring does not look like a breaking change."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        json_schema.pop("title", None)
        json_schema.pop("description", None)
        return json_schema


def schema_text(model: type[Message]) -> str:
    schema = model.model_json_schema(schema_generator=_WireSchema)
    return json.dumps(schema, sort_keys=True, indent=2) + "\n"


def snapshot_path(type: str, version: int, directory: Path = SCHEMA_DIR) -> Path:
    return directory / f"{type}.v{version}.json"


def snapshot_all(write: bool = False, directory: Path = SCHEMA_DIR) -> dict[Path, str]:
    """The schema text of every released (type, version), by snapshot path. With `write`,
    writes the snapshots that are missing; an existing snapshot is never overwritten."""
    snapshots = {
        snapshot_path(type, version, directory): schema_text(model)
        for type, version, model in registry.released()
    }
    if write:
        for path, text in snapshots.items():
            if not path.exists():
                path.write_text(text, encoding="utf-8")
    return snapshots


def orphan_snapshots(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Snapshot files with no registered model: a released version must never disappear."""
    expected = snapshot_all(directory=directory)
    return sorted(path for path in directory.glob("*.json") if path not in expected)
