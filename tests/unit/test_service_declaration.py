"""How a handler is declared: what it reads comes from its signature, and a signature that
does not say it clearly is refused at import, with the reason."""

from __future__ import annotations

import pytest

from contracts import (
    OrderConfirmedV2,
    OrderPlacedV2,
    PaymentFailed,
    ReleaseStock,
    ReserveStock,
    ShipmentFailed,
    command_or_choreography,
    not_choreography,
)
from db.unit_of_work import UnitOfWork
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime import catalog
from workers.runtime.service import DeclarationError, Service
from workers.shipping.settings import ShippingSettings

ORDER_ID = "0b6f3a4e-7c1d-4f7e-9a53-2f7c1b9e8d10"
ONE_EURO = {"amount": "1", "currency": "EUR"}


def test_the_queue_is_bound_to_the_types_of_the_annotation_in_its_order() -> None:
    service = Service("test")

    @service.handler(name="release")
    async def release(uow: UnitOfWork, message: ReleaseStock | PaymentFailed) -> None: ...

    (handler,) = service.handlers
    assert handler.types == ("inventory.release_stock", "payment.failed")
    assert handler.queue_spec("ns").bindings == (
        ("ns.commands", "inventory.release_stock"),
        ("ns.events", "payment.failed"),
    )
    assert handler.consumer == "test.release" and handler.queue("ns") == "ns.test.release"


def test_an_old_version_in_the_annotation_is_refused() -> None:
    service = Service("test")
    with pytest.raises(DeclarationError, match=r"OrderConfirmedV2.*newest.*OrderConfirmedV3"):

        @service.handler()
        async def confirmed(uow: UnitOfWork, message: OrderConfirmedV2) -> None: ...


@pytest.mark.parametrize("annotation", ["dict", "int | ReserveStock", "object"])
def test_a_message_parameter_that_is_not_contracts_is_refused(annotation: str) -> None:
    service = Service("test")
    namespace: dict[str, object] = {}
    exec(  # a handler whose annotation is the parametrised one
        f"async def handle(uow: UnitOfWork, message: {annotation}) -> None: ...",
        {"UnitOfWork": UnitOfWork, "ReserveStock": ReserveStock},
        namespace,
    )
    with pytest.raises(DeclarationError, match="contract classes"):
        service.handler()(namespace["handle"])  # type: ignore[arg-type]


def test_settings_are_given_only_as_the_services_own_section() -> None:
    without = Service("test")
    with pytest.raises(DeclarationError, match="declares no settings"):

        @without.handler()
        async def wants(
            uow: UnitOfWork, message: ReserveStock, settings: ShippingSettings
        ) -> None: ...

    other = Service("test", settings=OrchestratorSettings)
    with pytest.raises(DeclarationError, match="declares OrchestratorSettings"):

        @other.handler()
        async def wrong(
            uow: UnitOfWork, message: ReserveStock, settings: ShippingSettings
        ) -> None: ...

    with pytest.raises(DeclarationError, match=r"\(uow, message\)"):

        @other.handler()
        async def lonely(uow: UnitOfWork) -> None: ...


def test_two_handlers_of_one_name_are_refused() -> None:
    service = Service("test")

    @service.handler(name="same")
    async def first(uow: UnitOfWork, message: ReserveStock) -> None: ...

    with pytest.raises(DeclarationError, match="already has a handler named same"):

        @service.handler(name="same")
        async def second(uow: UnitOfWork, message: ReserveStock) -> None: ...


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
