"""``fleet status``'s verdict from its readings (no servers), and its command line: bad
arguments refused, help that loads no library."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from workers.operations.status import (
    DEFAULT_OUTBOX_AGE_THRESHOLD,
    FleetStatus,
    HandlerQueueStatus,
    OutboxStatus,
    QueueStatus,
    SagaStatus,
    ServiceStatus,
    ViewStatus,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def handler_queue(
    name: str = "fleet.payment.charge_payment",
    *,
    messages: int | None = 0,
    consumers: int | None = 1,
    dead_letters: int | None = 0,
) -> HandlerQueueStatus:
    return HandlerQueueStatus(
        QueueStatus(name, messages, consumers),
        QueueStatus(f"{name}.dlq", dead_letters, None if dead_letters is None else 0),
    )


def calm_outbox() -> OutboxStatus:
    return OutboxStatus(unpublished=0, oldest_age_seconds=None, relay_active=True)


def fleet(
    *,
    queues: tuple[HandlerQueueStatus, ...] | None = None,
    outbox: OutboxStatus | None = None,
    database_error: str | None = None,
    broker_error: str | None = None,
    unrouted: int = 0,
    overdue: int = 0,
) -> FleetStatus:
    """A fleet of one service, quiet unless told otherwise."""
    if queues is None and broker_error is None:
        queues = (handler_queue(),)
    if outbox is None and database_error is None:
        outbox = calm_outbox()
    return FleetStatus(
        namespace="fleet",
        checked_at=NOW,
        outbox_age_threshold=60.0,
        broker_error=broker_error,
        services=(ServiceStatus("payment", queues, outbox, database_error),),
        unrouted=None if broker_error else QueueStatus("fleet.unrouted.dlq", unrouted, 0),
        sagas=SagaStatus({"confirmed": 3, "running": 1}, overdue),
        view=ViewStatus(0, True, NOW, 0.0),
    )


def test_a_quiet_fleet_needs_nothing() -> None:
    status = fleet()
    assert status.problems == []
    assert not status.needs_action


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        (
            fleet(queues=(handler_queue(messages=4, consumers=0),)),
            "fleet.payment.charge_payment: no consumer (4 message(s) waiting)",
        ),
        (
            fleet(queues=(handler_queue(messages=None, consumers=None),)),
            "fleet.payment.charge_payment: queue not declared (has 'fleet topology' run?)",
        ),
        (
            fleet(queues=(handler_queue(messages=None, consumers=None, dead_letters=None),)),
            "fleet.payment.charge_payment and its DLQ: not declared (has 'fleet topology' run?)",
        ),
        (
            fleet(queues=(handler_queue(dead_letters=2),)),
            "fleet.payment.charge_payment.dlq: 2 dead letter(s)",
        ),
        (fleet(unrouted=1), "fleet.unrouted.dlq: 1 dead letter(s)"),
        (
            fleet(outbox=OutboxStatus(3, 61.0, relay_active=True)),
            "payment outbox: oldest unpublished row is 61 s old (more than 60 s)",
        ),
        (
            fleet(outbox=OutboxStatus(3, 1.0, relay_active=False)),
            "payment outbox: 3 unpublished row(s), no relay active",
        ),
        (fleet(overdue=2), "sagas: 2 past their deadline"),
        (
            fleet(database_error="ConnectionRefusedError: [Errno 111]"),
            "payment database unreachable: ConnectionRefusedError: [Errno 111]",
        ),
        (
            fleet(broker_error="AMQPConnectionError: refused"),
            "RabbitMQ unreachable: AMQPConnectionError: refused",
        ),
    ],
)
def test_what_needs_action_is_named_in_one_line(status: FleetStatus, problem: str) -> None:
    assert status.problems == [problem]
    assert status.needs_action


def test_an_outbox_within_its_threshold_with_a_relay_needs_nothing() -> None:
    assert fleet(outbox=OutboxStatus(500, 60.0, relay_active=True)).problems == []
    # No relay, but nothing to publish: nothing waits on it.
    assert fleet(outbox=OutboxStatus(0, None, relay_active=False)).problems == []


def test_an_idle_queue_with_its_consumer_is_fine_and_a_dlq_needs_no_consumer() -> None:
    queue = handler_queue(messages=120, consumers=2)
    assert queue.problems == []
    assert queue.dead_letters.consumers == 0


def test_the_json_document_carries_the_verdict_and_the_readings() -> None:
    status = fleet(queues=(handler_queue(consumers=0),), overdue=1)
    document = json.loads(json.dumps(status.to_dict()))
    assert document["needs_action"] is True
    assert document["problems"] == status.problems
    assert document["checked_at"] == NOW.isoformat()
    (service,) = document["services"]
    assert service["queues"][0]["consumers"] == 0
    assert service["queues"][0]["dead_letter_queue"]["queue"].endswith(".dlq")
    assert service["problems"] == status.problems[:1]
    assert document["sagas"] == {"by_status": {"confirmed": 3, "running": 1}, "overdue": 1}
    assert document["view"]["last_update"] == NOW.isoformat()
    assert json.loads(json.dumps(fleet().to_dict()))["needs_action"] is False


def test_unread_servers_are_null_in_json_not_guessed() -> None:
    document = fleet(broker_error="refused", database_error="refused").to_dict()
    (service,) = document["services"]
    assert service["queues"] is None and service["outbox"] is None
    assert document["broker"] == {"reachable": False, "error": "refused"}
    assert service["database"] == {"reachable": False, "error": "refused"}


def fleet_command(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--watch", "--interval", "-1"],
        ["status", "--interval", "0"],
        ["status", "--outbox-age", "-5"],
        ["status", "--outbox-age", "soon"],
    ],
    ids=" ".join,
)
def test_a_bad_argument_is_one_line_and_exit_2(argv: list[str]) -> None:
    result = fleet_command(*argv)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("fleet: "), result.stderr


def test_the_cli_default_threshold_agrees_with_the_library() -> None:
    """The CLI writes it out (its help loads no library); read, not imported."""
    tree = ast.parse((ROOT / "cli" / "status.py").read_text(encoding="utf-8"))
    written = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        if node.targets[0].id == "DEFAULT_OUTBOX_AGE"
    }
    assert written == {"DEFAULT_OUTBOX_AGE": DEFAULT_OUTBOX_AGE_THRESHOLD}
