"""Stuck sagas found and unstuck: ``fleet saga list / retry / compensate`` as operators run
them, against every service in its own real process.

A saga gets stuck for real here: its step's command is lost (purged from the service's
queue while the service is down), so no reply will ever come; the orchestrator's step
timeout is an hour, so its deadline watcher does not step in either.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import aio_pika
import pytest

from contracts import CompensateSaga, Money, OrderLine, PlaceOrder
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.support import ROOT, Fleet, FleetProcess, outgoing, scalar, wait_for
from workers.inventory import store as inventory_store
from workers.operations import sagas
from workers.operations.orders import place_order, wait_until_final
from workers.operations.verify import verify
from workers.orchestrator import public as orchestrator
from workers.orchestrator.settings import OrchestratorSettings
from workers.order_view import public as view
from workers.payment import store as payment_store
from workers.runtime import catalog

pytestmark = pytest.mark.integration

SERVICES = ("inventory", "payment", "shipping", "order", "orchestrator", "order_view")
# No deadline fires within a test: a stuck saga stays stuck until an operator acts.
ORCHESTRATOR = OrchestratorSettings(step_timeout_seconds=3600.0, deadline_poll_seconds=1.0)


class Operations:
    """The module's fleet: its worker processes, and what the tests do with them."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.workers: dict[str, FleetProcess] = {}

    async def cli(self, *args: str) -> tuple[int, str]:
        return await self.fleet.cli(*args)

    async def start(self, service: str) -> None:
        process = await self.fleet.spawn("worker", service)
        await process.wait_for_line("consuming")
        self.workers[service] = process

    async def stop(self, service: str) -> None:
        assert await self.workers.pop(service).terminate() == 0

    async def place(self, *, saga: str = "orchestration", customer: str = "rich") -> str:
        command = PlaceOrder(
            idempotency_key=str(uuid.uuid4()),
            customer_id=customer,
            items=[OrderLine(sku="WIDGET", quantity=2, unit_price=Money.of("4.50", "EUR"))],
            country="DE",
            saga=saga,
        )
        return await place_order(self.fleet.settings, command)

    async def at_step(self, order_id: str, step: str) -> orchestrator.SagaSummary:
        """Once the saga waits at ``step`` and the orchestrator has published its command
        (confirmed: it is in the service's queue)."""
        command_type = command_type_of(step)

        async def there() -> orchestrator.SagaSummary | None:
            saga = await orchestrator.saga_summary(self.fleet.settings, order_id)
            published = await scalar(
                self.fleet.engine("orchestrator"),
                "SELECT count(*) FROM outbox WHERE type = :type AND correlation_id = :id"
                " AND published_at IS NOT NULL",
                type=command_type,
                id=order_id,
            )
            return saga if saga is not None and saga.step == step and published else None

        found: orchestrator.SagaSummary = await wait_for(there, timeout=60)
        return found

    async def purge(self, service: str, handler: str) -> None:
        """Lose every message waiting in the handler's queue, as a broken broker would."""
        queue = catalog.load(service).handler_named(handler).queue(self.fleet.ns)
        connection = await aio_pika.connect(self.fleet.settings.amqp_url)
        try:
            channel = await connection.channel()
            await (await channel.declare_queue(queue, passive=True)).purge()
        finally:
            await connection.close()

    async def ended(self, order_id: str) -> dict[str, Any]:
        status = await wait_until_final(self.fleet.settings, order_id, 60)
        assert status is not None and status["status"] in ("CONFIRMED", "REJECTED"), status
        return status

    async def quiet_and_verified(self) -> None:
        problems: list[str] = []

        async def passes() -> bool:
            checks = await verify(self.fleet.settings)
            problems[:] = [f"{c.name}: {c.problems}" for c in checks if not c.passed]
            return not problems

        try:
            await wait_for(passes, timeout=60, interval=0.5)
        except AssertionError:
            raise AssertionError("\n".join(problems)) from None

    async def cli_json(self, *args: str) -> tuple[int, Any]:
        code, output = await self.cli(*args, "--json")
        try:
            return code, json.loads(output)
        except json.JSONDecodeError:
            raise AssertionError(f"exit {code}, not JSON:\n{output}") from None

    async def cli_answering(self, answer: str, *args: str) -> tuple[int, str]:
        """``fleet *args`` with ``answer`` typed at its prompt."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli",
            *args,
            cwd=ROOT,
            env=self.fleet.env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(answer.encode()), 60)
        assert process.returncode is not None
        return process.returncode, output.decode()


def command_type_of(step: str) -> str:
    """The type of the command the orchestrator sends for ``step``."""
    return {
        "reserve_stock": "inventory.reserve_stock",
        "charge_payment": "payment.charge_payment",
        "create_shipment": "shipping.create_shipment",
        "confirm_order": "order.confirm_order",
    }[step]


@pytest.fixture(scope="module")
async def ops(server_urls: tuple[str, str]) -> AsyncIterator[Operations]:
    settings = namespace_settings(server_urls)
    async with namespaced_fleet(settings, [ORCHESTRATOR]) as fleet:
        operations = Operations(fleet)
        async with fleet.unit_of_work("inventory") as uow:
            await inventory_store.seed(uow.conn, "WIDGET", 1000)
        async with fleet.unit_of_work("payment") as uow:
            await payment_store.seed_customer(uow.conn, "rich", Decimal("10000.00"), "EUR")
        await asyncio.gather(*(operations.start(service) for service in SERVICES))
        yield operations
        for service in list(operations.workers):
            await operations.stop(service)


async def test_stuck_sagas_are_listed_then_retried_and_compensated_through_the_orchestrator(
    ops: Operations,
) -> None:
    settings = ops.fleet.settings
    # Payment is down when two orders reach it, and their ChargePayment commands are lost.
    await ops.stop("payment")
    to_retry, to_compensate = await ops.place(), await ops.place()
    for order_id in (to_retry, to_compensate):
        await ops.at_step(order_id, "charge_payment")
    await ops.purge("payment", "charge_payment")
    await ops.start("payment")

    async def both_stuck() -> bool:
        stuck = await sagas.list_sagas(settings, stuck_for=timedelta(seconds=1))
        return {to_retry, to_compensate} <= {row.order_id for row in stuck}

    await wait_for(both_stuck, timeout=30)
    code, listing = await ops.cli_json("saga", "list", "--stuck-for", "1s")
    assert code == 0, listing
    rows = {row["order_id"]: row for row in listing["sagas"]}
    for order_id in (to_retry, to_compensate):
        assert rows[order_id]["style"] == "orchestration"
        assert (rows[order_id]["state"], rows[order_id]["step"]) == ("running", "charge_payment")
        assert rows[order_id]["idle_seconds"] >= 1
    code, text = await ops.cli("saga", "list", "--stuck-for", "1s")
    assert code == 0 and "2 saga(s)" in text, text
    # Not stuck for an hour, and not choreographed.
    for args in (("--stuck-for", "1h"), ("--stuck-for", "1s", "--style", "choreography")):
        code, listing = await ops.cli_json("saga", "list", *args)
        assert code == 0, listing
        assert not {to_retry, to_compensate} & {row["order_id"] for row in listing["sagas"]}

    # Asked, the operator says no: nothing is sent, nothing recorded.
    before = await orchestrator.saga_summary(settings, to_retry)
    code, output = await ops.cli_answering("n\n", "saga", "retry", to_retry)
    assert code == 130 and "Send charge_payment again" in output, output
    assert "fleet: aborted" in output
    assert await orchestrator.saga_summary(settings, to_retry) == before

    # Retried: payment gets ChargePayment again and the saga goes on to the end.
    code, retried = await ops.cli_json("saga", "retry", to_retry, "--yes", "--wait", "60")
    assert code == 0, retried
    assert retried["before"]["step"] == "charge_payment" and retried["settled"] is True
    assert "operator retry by" in retried["answer"], retried
    assert "charge_payment sent again" in retried["answer"], retried
    assert (await ops.ended(to_retry))["status"] == "CONFIRMED"
    code, text = await ops.cli("saga", "show", to_retry)
    assert code == 0 and "operator retry by" in text, text

    # Compensated: the reservation is released, the order rejected with the reason given.
    reason = ("--reason", "given up by the tests")
    code, compensated = await ops.cli_json(
        "saga", "compensate", to_compensate, "--yes", *reason, "--wait", "60"
    )
    assert code == 0, compensated
    assert compensated["after"]["state"] == "rejected" and compensated["settled"] is True
    assert "compensation requested at charge_payment" in compensated["answer"], compensated
    ended = await ops.ended(to_compensate)
    assert ended["status"] == "REJECTED" and ended["reason"] == "given up by the tests", ended

    await ops.quiet_and_verified()
    code, output = await ops.cli("verify")
    assert code == 0, output

    # The audit log has both, each with the message id the command was sent as; the
    # declined retry is not there.
    code, history = await ops.cli_json("history", "--action", "saga")
    assert code == 0, history
    by_target = {(entry["action"], entry["target"]): entry for entry in history}
    assert len(history) == len(by_target) == 2, history
    retry_entry = by_target["saga.retry", to_retry]
    assert retry_entry["message_ids"] == [retried["message_id"]] and retry_entry["count"] == 1
    assert retry_entry["detail"] == {"state": "running", "step": "charge_payment"}
    compensate_entry = by_target["saga.compensate", to_compensate]
    assert compensate_entry["message_ids"] == [compensated["message_id"]]
    assert compensate_entry["detail"]["reason"] == "given up by the tests"


async def test_an_ended_choreographed_or_unknown_saga_is_refused_with_the_reason(
    ops: Operations,
) -> None:
    confirmed = await ops.place()
    choreographed = await ops.place(saga="choreography")
    for order_id in (confirmed, choreographed):
        assert (await ops.ended(order_id))["status"] == "CONFIRMED"

    async def in_the_view() -> bool:
        return await view.find_order(ops.fleet.settings, choreographed) is not None

    await wait_for(in_the_view)
    code, listing = await ops.cli_json("saga", "list", "--style", "choreography")
    assert code == 0, listing
    row = next(row for row in listing["sagas"] if row["order_id"] == choreographed)
    assert (row["state"], row["order_status"], row["step"]) == ("confirmed", "CONFIRMED", None)

    refusals = [
        (("retry", confirmed), 1, f"saga {confirmed} already ended confirmed"),
        (("compensate", confirmed), 1, "already ended confirmed: there is nothing to compensate"),
        (("retry", choreographed), 1, f"order {choreographed} is choreographed"),
        (("compensate", choreographed), 1, "there is no coordinator to ask"),
        (("retry", str(uuid.uuid4())), 1, "neither the orchestrator nor the view knows it"),
        (("retry", "not-an-order"), 2, "'not-an-order' is not an order id"),
    ]
    for args, exit_code, reason in refusals:
        code, output = await ops.cli("saga", *args, "--yes")
        assert code == exit_code and reason in output, (args, output)
        assert len(output.splitlines()) == 1, output
    for args, reason in [
        (("--stuck-for", "soon"), "--stuck-for: 'soon' is not a duration"),
        (("--state", "stuck"), "--state must be one of running, compensating"),
        (("--style", "jazz"), "--style must be one of orchestration, choreography"),
    ]:
        code, output = await ops.cli("saga", "list", *args)
        assert code == 2 and reason in output and len(output.splitlines()) == 1, output
    code, history = await ops.cli_json("history", "--target", confirmed)
    assert code == 0 and history == [], history  # a refusal sends and records nothing


async def test_a_saga_past_the_pivot_is_not_compensated(ops: Operations) -> None:
    settings = ops.fleet.settings
    # Stuck at confirm_order: the order service is down once the saga gets there.
    await ops.stop("inventory")
    order_id = await ops.place()
    await ops.at_step(order_id, "reserve_stock")
    await ops.stop("order")
    await ops.start("inventory")
    at_pivot = await ops.at_step(order_id, "confirm_order")

    code, output = await ops.cli("saga", "compensate", order_id, "--yes")
    assert code == 1 and "past the pivot (confirm_order)" in output, output
    # Sent to the orchestrator anyway (as a race between operators would), it refuses too.
    command = CompensateSaga(order_id=order_id, reason="too late", requested_by="tests")
    message = outgoing(command, exchange=f"{ops.fleet.ns}.commands")
    async with ops.fleet.publisher() as publisher:
        await publisher.publish(message)
    assert message.message_id is not None

    async def answered() -> str | None:
        return await orchestrator.request_answer(settings, order_id, message.message_id or "")

    answer = await wait_for(answered)
    assert "operator compensation by tests" in answer and "past the pivot" in answer, answer
    assert await orchestrator.saga_summary(settings, order_id) == at_pivot  # unchanged

    await ops.start("order")
    assert (await ops.ended(order_id))["status"] == "CONFIRMED"
    await ops.quiet_and_verified()
