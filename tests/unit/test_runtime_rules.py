"""Settings, error classification and naming, with no servers."""

from __future__ import annotations

import os

import asyncpg
import pytest
from pydantic import ValidationError

from workers.runtime import topology
from workers.runtime.errors import PermanentError, TransientError, is_transient
from workers.runtime.settings import Settings


def test_defaults_need_no_configuration_and_derive_each_service_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [name for name in os.environ if name.startswith("FLEET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FLEET_DB_SECRETS", '{"payment": "s3cret/payment"}')
    settings = Settings()
    assert settings.namespace == "fleet"
    assert settings.database_url("payment") == (
        "postgresql://fleet_payment:s3cret%2Fpayment@127.0.0.1:5432/fleet_payment"
    )


def test_a_database_url_set_for_a_service_wins() -> None:
    settings = Settings(db_urls={"order": "postgresql://x@db:5432/orders"})
    assert settings.database_url("order") == "postgresql://x@db:5432/orders"


def test_settings_come_from_fleet_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_NAMESPACE", "staging")
    monkeypatch.setenv("FLEET_RETRY_DELAYS_MS", "[100, 200]")
    settings = Settings()
    assert settings.namespace == "staging"
    assert [settings.retry_delay_ms(n) for n in (1, 2, 3, 9)] == [100, 200, 200, 200]


@pytest.mark.parametrize("namespace", ["", "Fleet", "1fleet", "a-b", "x" * 40])
def test_a_namespace_must_be_a_plain_lower_case_name(namespace: str) -> None:
    with pytest.raises(ValidationError, match="namespace"):
        Settings(namespace=namespace)


def test_retry_delays_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        Settings(retry_delays_ms=[])
    with pytest.raises(ValidationError):
        Settings(retry_delays_ms=[100, 0])


@pytest.mark.parametrize(
    "error",
    [
        TransientError("conflict"),
        ConnectionRefusedError(),
        TimeoutError(),
        asyncpg.SerializationError("could not serialize"),
        asyncpg.DeadlockDetectedError("deadlock"),
        asyncpg.AdminShutdownError("terminating connection"),
        asyncpg.ConnectionDoesNotExistError("gone"),
        asyncpg.ObjectNotInPrerequisiteStateError("database is not accepting connections"),
        asyncpg.LockNotAvailableError("could not obtain lock"),
        asyncpg.InvalidCatalogNameError("database does not exist"),
        TimeoutError(),  # no pooled connection came free in time
    ],
)
def test_transient_errors_are_retried(error: BaseException) -> None:
    assert is_transient(error)


def test_a_wrapped_serialization_failure_is_transient() -> None:
    try:
        try:
            raise asyncpg.SerializationError("x")
        except asyncpg.SerializationError as cause:
            raise RuntimeError("while handling") from cause
    except RuntimeError as wrapped:
        assert is_transient(wrapped)


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("never"),
        KeyError("a bug"),
        ValueError("bad"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.CheckViolationError("negative stock"),
    ],
)
def test_everything_else_goes_to_the_dead_letter_queue(error: BaseException) -> None:
    assert not is_transient(error)


def test_queue_names() -> None:
    assert topology.dead_letter_queue("fleet.inventory.reserve_stock") == (
        "fleet.inventory.reserve_stock.dlq"
    )
    assert topology.original_queue("fleet.inventory.reserve_stock.dlq") == (
        "fleet.inventory.reserve_stock"
    )
    assert topology.delay_tier("fleet", 500) == "fleet.delay.500ms"
    assert topology.legacy_retry_queue("q", 500) == "q.retry.500ms"
    with pytest.raises(ValueError, match="not a dead-letter queue"):
        topology.original_queue("fleet.inventory.reserve_stock")
