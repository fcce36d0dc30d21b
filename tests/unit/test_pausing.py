"""What ``fleet pause`` and ``fleet resume`` take as a target, and the names of the markers
that say a handler is paused."""

from __future__ import annotations

import pytest

from workers.operations import InvalidRequest
from workers.operations.pausing import PauseState, handler_names, resolve_target
from workers.runtime import catalog, control
from workers.runtime.service import Handler

HANDLERS = {
    "inventory": ("reserve_stock", "release_stock"),
    "payment": ("charge_payment", "refund_payment"),
}


def test_a_service_names_every_handler_it_has_in_order() -> None:
    assert resolve_target("inventory", HANDLERS) == (
        "inventory.reserve_stock",
        "inventory.release_stock",
    )


def test_a_handler_names_itself_only() -> None:
    assert resolve_target("payment.refund_payment", HANDLERS) == ("payment.refund_payment",)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("shipping", "unknown service 'shipping'; services are inventory, payment"),
        ("shipping.create_shipment", "unknown service 'shipping'; services are inventory"),
        (
            "inventory.reserve",
            "inventory has no handler 'reserve'; its handlers are reserve_stock, release_stock",
        ),
        ("inventory.", "inventory has no handler ''; its handlers are reserve_stock"),
        ("inventory.reserve_stock.x", "inventory has no handler 'reserve_stock.x'"),
        ("", "no service in ''"),
        (".reserve_stock", "no service in '.reserve_stock'"),
        ("Inventory", "unknown service 'Inventory'"),
    ],
)
def test_anything_else_is_bad_usage_naming_what_exists(target: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        resolve_target(target, HANDLERS)
    assert message in str(raised.value)


def test_the_catalog_s_handlers_are_named_as_their_inboxes_name_them() -> None:
    names = handler_names(catalog.load_all())
    assert list(names) == list(catalog.SERVICES)
    for service in catalog.load_all():
        targets = resolve_target(service.name, names)
        assert targets == tuple(handler.consumer for handler in service.handlers)


def test_a_marker_is_named_after_its_handler_s_queue() -> None:
    handler: Handler = catalog.load("inventory").handlers[0]
    assert control.pause_marker(handler.queue("fleet")) == "fleet.inventory.reserve_stock.paused"


def test_a_state_says_what_it_left_unchanged() -> None:
    state = PauseState(
        "resume",
        "inventory",
        ("inventory.reserve_stock", "inventory.release_stock"),
        ("inventory.release_stock",),
        ("payment.charge_payment",),
    )
    assert state.unchanged == ("inventory.reserve_stock",)
    assert state.to_dict()["unchanged"] == ["inventory.reserve_stock"]
