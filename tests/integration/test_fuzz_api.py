"""Schemathesis against the HTTP API's own OpenAPI document: ``fleet api`` as a real process
on a namespace of its own, every operation fuzzed with valid and invalid requests (Hypothesis
underneath). Every answer must be one the document promises: no 5xx (the servers are up, so
not even the documented 503), a documented status code, a content type and a body that
match its schema, and invalid input refused.

    FLEET_FUZZ_EXAMPLES=500 uv run pytest tests/integration/test_fuzz_api.py
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.support import start_api

pytestmark = pytest.mark.integration

# Examples per operation and mode (valid and invalid requests).
EXAMPLES = int(os.environ.get("FLEET_FUZZ_EXAMPLES", "60"))
Operation = APIOperation[Any, Any, Any, Any]
OPERATIONS = ("POST /orders", "GET /orders", "GET /orders/{order_id}", "GET /health")


@dataclass
class Served:
    base_url: str
    operations: dict[str, Operation]


@pytest.fixture(scope="module")
async def served(server_urls: tuple[str, str]) -> AsyncIterator[Served]:
    """``fleet api`` on the namespace's view; no workers: orders placed wait in the order
    service's queue, and the view answers from its (empty) table."""
    async with namespaced_fleet(namespace_settings(server_urls)) as fleet:
        process, base_url = await start_api(fleet)
        schema = await asyncio.to_thread(schemathesis.openapi.from_url, f"{base_url}/openapi.json")
        operations = {name: schema[name.split()[1]][name.split()[0]] for name in OPERATIONS}
        yield Served(base_url, operations)
        assert await process.terminate() == 0, "\n".join(process.lines[-20:])


def test_the_document_lists_every_operation_fuzzed_here() -> None:
    """A new endpoint must be fuzzed too: this list follows the app's routes."""
    from api.app import create_app
    from workers.runtime.settings import Settings

    document = create_app(Settings()).openapi()
    listed = {
        f"{method.upper()} {path}" for path, ops in document["paths"].items() for method in ops
    }
    assert listed == set(OPERATIONS)


def mixed_currencies(case: Case[Any]) -> bool:
    """An order whose lines have several currencies: its document cannot say that one
    order has one currency (a rule across its lines), so it is refused as a 422 though it
    matches the schema."""
    items = case.body.get("items") if isinstance(case.body, dict) else None
    if not isinstance(items, list):
        return False
    prices = [item.get("unit_price") for item in items if isinstance(item, dict)]
    return len({price.get("currency") for price in prices if isinstance(price, dict)}) > 1


def fuzz(operation: Operation, base_url: str, mode: GenerationMode) -> None:
    """``EXAMPLES`` requests of ``mode`` to ``operation``, each answer checked by every
    check Schemathesis has (derandomized: the same requests on every run)."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Case[Any]) -> None:
        excluded: list[CheckFunction] | None = (
            [positive_data_acceptance] if mixed_currencies(case) else None
        )
        case.call_and_validate(base_url=base_url, excluded_checks=excluded, timeout=30)

    check()


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        *((name, GenerationMode.POSITIVE) for name in OPERATIONS),
        # GET /health takes no input: nothing of it can be invalid.
        *((name, GenerationMode.NEGATIVE) for name in OPERATIONS if name != "GET /health"),
    ],
)
async def test_every_answer_is_documented_and_none_is_a_server_error(
    served: Served, name: str, mode: GenerationMode
) -> None:
    # In a thread: the event loop goes on reading the API process's output meanwhile.
    await asyncio.to_thread(fuzz, served.operations[name], served.base_url, mode)
