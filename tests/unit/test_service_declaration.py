"""How a handler is declared: what it reads comes from its signature, and a signature that
does not say it clearly is refused at import, with the reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from contracts import (
    Envelope,
    Message,
    OrderConfirmedV2,
    OrderPlacedV2,
    PaymentFailed,
    Received,
    ReleaseStock,
    ReserveStock,
    ShipmentFailed,
    StockReleased,
    command_or_choreography,
    not_choreography,
)
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime import catalog
from workers.runtime.decision import Decision
from workers.runtime.service import DeclarationError, Service
from workers.shipping.settings import ShippingSettings

ORDER_ID = "0b6f3a4e-7c1d-4f7e-9a53-2f7c1b9e8d10"
ONE_EURO = {"amount": "1", "currency": "EUR"}


@dataclass(frozen=True)
class Empty:
    """A state that no change alters (these declarations are never run)."""

    def apply(self, change: object) -> Empty:
        return self


async def load_nothing(conn: object, messages: Sequence[Message]) -> Empty:
    return Empty()


async def write_nothing(conn: object, changes: Sequence[object]) -> None:
    return None


def test_the_queue_is_bound_to_the_types_of_the_annotation_in_its_order() -> None:
    service = Service("test")

    def release(state: Empty, message: ReleaseStock | PaymentFailed) -> Decision[object]:
        return Decision()

    handler = service.handler(release, load=load_nothing, write=write_nothing)
    assert service.handlers == [handler]
    assert handler.types == ("inventory.release_stock", "payment.failed")
    assert handler.queue_spec("ns").bindings == (
        ("ns.commands", "inventory.release_stock"),
        ("ns.events", "payment.failed"),
    )
    assert handler.consumer == "test.release" and handler.queue("ns") == "ns.test.release"


def test_a_handler_with_nothing_to_load_decides_on_the_message_alone() -> None:
    service = Service("test")

    def forward(message: ReserveStock) -> Decision[object]:
        return Decision(send=(StockReleased(order_id=message.order_id, saga=message.saga),))

    handler = service.handler(forward, name="forwarder")
    assert handler.name == "forwarder" and handler.load is None and handler.write is None
    received = Received(Envelope.new(ReserveStock.TYPE, 1, "test"), {})
    decision = handler.decision(None, reserve_command(), received, None)
    assert decision.send == (StockReleased(order_id=ORDER_ID, saga="orchestration"),)


def test_decide_gets_the_settings_and_the_envelope_it_asks_for_by_keyword() -> None:
    service = Service("test", settings=ShippingSettings)
    seen: list[tuple[ShippingSettings, Received]] = []

    def decide(
        state: Empty, message: ReserveStock, *, settings: ShippingSettings, received: Received
    ) -> Decision[object]:
        seen.append((settings, received))
        return Decision()

    handler = service.handler(decide, load=load_nothing)
    assert handler.decide_wants == {"settings", "received"}
    section = ShippingSettings(blocked_countries=["ZZ"])
    received = Received(Envelope.new(ReserveStock.TYPE, 1, "test"), {"x-stream-version": 3})
    handler.decision(Empty(), reserve_command(), received, section)
    assert seen == [(section, received)]


def reserve_command() -> ReserveStock:
    return ReserveStock.model_validate(
        {
            "order_id": ORDER_ID,
            "items": [{"sku": "S", "quantity": 1, "unit_price": ONE_EURO}],
            "saga": "orchestration",
            "customer_id": "c-1",
            "total": ONE_EURO,
            "country": "DE",
        }
    )


def test_an_old_version_in_the_annotation_is_refused() -> None:
    service = Service("test")

    def confirmed(state: Empty, message: OrderConfirmedV2) -> Decision[object]:
        return Decision()

    with pytest.raises(DeclarationError, match=r"OrderConfirmedV2.*newest.*OrderConfirmedV3"):
        service.handler(confirmed, load=load_nothing)


@pytest.mark.parametrize("annotation", ["dict", "int | ReserveStock", "object"])
def test_a_message_parameter_that_is_not_contracts_is_refused(annotation: str) -> None:
    service = Service("test")
    namespace: dict[str, object] = {}
    exec(  # a decide whose annotation is the parametrised one
        f"def handle(message: {annotation}) -> None: ...",
        {"ReserveStock": ReserveStock},
        namespace,
    )
    with pytest.raises(DeclarationError, match="contract classes"):
        service.handler(namespace["handle"])  # type: ignore[arg-type]


def test_settings_are_given_only_as_the_services_own_section() -> None:
    def wants(message: ReserveStock, *, settings: ShippingSettings) -> Decision[object]:
        return Decision()

    with pytest.raises(DeclarationError, match="declares no settings"):
        Service("test").handler(wants)
    with pytest.raises(DeclarationError, match="declares OrchestratorSettings"):
        Service("test", settings=OrchestratorSettings).handler(wants)


def test_a_part_of_another_shape_is_refused_at_declaration() -> None:
    service = Service("test")

    def decide(state: Empty, message: ReserveStock) -> Decision[object]:
        return Decision()

    with pytest.raises(DeclarationError, match=r"must take \(message\)"):
        service.handler(decide)  # no load: decide takes the message alone
    with pytest.raises(DeclarationError, match=r"must take \(state, message\)"):
        service.handler(lambda message: Decision(), load=load_nothing, name="lonely")

    def nosy(state: Empty, message: ReserveStock, *, conn: object) -> Decision[object]:
        return Decision()

    with pytest.raises(DeclarationError, match="asks for conn; it may ask for received, settings"):
        service.handler(nosy, load=load_nothing)

    async def write_badly(changes: Sequence[object]) -> None: ...

    with pytest.raises(DeclarationError, match=r"must take \(conn, changes\)"):
        service.handler(decide, load=load_nothing, write=write_badly)  # type: ignore[arg-type]


def test_two_handlers_of_one_name_are_refused() -> None:
    service = Service("test")

    def first(message: ReserveStock) -> Decision[object]:
        return Decision()

    service.handler(first, name="same")
    with pytest.raises(DeclarationError, match="already has a handler named same"):
        service.handler(first, name="same")


def placed(saga: str) -> OrderPlacedV2:
    return OrderPlacedV2.model_validate(
        {
            "order_id": ORDER_ID,
            "customer_id": "c-1",
            "items": [{"sku": "S", "quantity": 1, "unit_price": ONE_EURO}],
            "total": ONE_EURO,
            "country": "DE",
            "saga": saga,
        }
    )


def test_the_saga_style_filters_split_every_message_between_services_and_orchestrator() -> None:
    orchestrated, choreographed = placed("orchestration"), placed("choreography")
    command = ReleaseStock(order_id=ORDER_ID, reason="r", saga="orchestration")
    failed = ShipmentFailed(order_id=ORDER_ID, reason="r", saga="choreography")
    unknown = OrderConfirmedV2.model_validate({"order_id": ORDER_ID})  # no style: v2
    assert command_or_choreography(command) and command_or_choreography(choreographed)
    assert command_or_choreography(failed)
    assert not command_or_choreography(orchestrated)
    assert not_choreography(orchestrated) and not not_choreography(choreographed)
    assert not_choreography(unknown)


def test_every_service_filters_before_its_transaction_where_the_style_matters() -> None:
    """The saga-style decisions are declared, not hidden in handler bodies: each handler
    that reads another style's events declares its filter."""
    for service in catalog.load_all():
        for handler in service.handlers:
            kinds = {model.KIND for model in handler.models}
            styled = any("saga" in model.model_fields for model in handler.models)
            if service.name == "orchestrator":
                assert handler.when is not_choreography, handler.name
            elif styled and "event" in kinds and service.name != "order_view":
                assert handler.when is command_or_choreography, handler.name
