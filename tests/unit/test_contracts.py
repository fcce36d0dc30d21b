"""Contracts: money, message models, the registry's decode/encode, upcasting, the envelope."""

from __future__ import annotations

import json
import struct
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp.commands import Basic
from pydantic import ValidationError

from contracts import (
    V1_CURRENCY,
    Command,
    ContractError,
    Envelope,
    Event,
    InvalidBody,
    InvalidEnvelope,
    Money,
    OrderLine,
    OrderPlaced,
    OutgoingMessage,
    PlaceOrder,
    Registry,
    SagaStyle,
    UnknownContractVersion,
    UnknownMessageType,
    decode_message,
    encode_message,
    registry,
)
from contracts.orders import order_placed_v1_to_v2
from workers.runtime.publisher import to_amqp_message

ORDER_ID = "0b6f3a4e-7c1d-4f7e-9a53-2f7c1b9e8d10"
PAYMENT_ID = "5d2c9e1a-3b4f-4a6d-8e7f-1a2b3c4d5e6f"
SHIPMENT_ID = "9f8e7d6c-5b4a-4c3d-8e2f-1a0b9c8d7e6f"
PRICE = {"amount": "12.50", "currency": "EUR"}
TOTAL = {"amount": "25.00", "currency": "EUR"}
ITEMS = [{"sku": "SKU-1", "quantity": 2, "unit_price": PRICE}]
ORDER = {"order_id": ORDER_ID, "customer_id": "c-1", "items": ITEMS, "country": "DE"}
SAGA = {"saga": "choreography"}
FAILED = {"order_id": ORDER_ID, "reason": "out of stock", **SAGA}

# One complete payload (every field, defaults included) per released (type, version).
SAMPLES: dict[tuple[str, int], dict[str, Any]] = {
    ("order.place_order", 1): {**ORDER, "idempotency_key": "k-1", **SAGA},
    ("order.confirm_order", 1): {"order_id": ORDER_ID},
    ("order.confirm_order", 2): {
        "order_id": ORDER_ID,
        "payment_id": PAYMENT_ID,
        "tracking_number": "TRK-1",
    },
    ("order.reject_order", 1): {"order_id": ORDER_ID, "reason": "payment failed"},
    ("inventory.reserve_stock", 1): {**ORDER, "total": TOTAL, **SAGA},
    ("inventory.release_stock", 1): {
        "order_id": ORDER_ID,
        "reason": "payment failed",
        "saga": "orchestration",
    },
    ("payment.charge_payment", 1): {**ORDER, "amount": TOTAL, **SAGA},
    ("payment.refund_payment", 1): {
        "order_id": ORDER_ID,
        "reason": "shipment failed",
        "saga": "choreography",
    },
    ("shipping.create_shipment", 1): {
        "order_id": ORDER_ID,
        "country": "DE",
        "items": ITEMS,
        **SAGA,
    },
    ("shipping.cancel_shipment", 1): {
        "order_id": ORDER_ID,
        "reason": "timeout",
        "saga": "orchestration",
    },
    ("order.placed", 1): {
        **ORDER,
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": 12.5}],
        "total": 25.0,
    },
    ("order.placed", 2): {**ORDER, "total": TOTAL, **SAGA},
    ("order.confirmed", 1): {"order_id": ORDER_ID},
    ("order.confirmed", 2): {
        "order_id": ORDER_ID,
        "payment_id": PAYMENT_ID,
        "tracking_number": "TRK-1",
    },
    ("order.confirmed", 3): {
        "order_id": ORDER_ID,
        "payment_id": PAYMENT_ID,
        "tracking_number": "TRK-1",
        **SAGA,
    },
    ("order.replay_events", 1): {
        "replay_id": SHIPMENT_ID,
        "target": "order_view",
        "after_position": 500,
        "up_to_position": 1200,
        "expected": 1100,
        "sent": 500,
    },
    ("order.events_replayed", 1): {
        "replay_id": SHIPMENT_ID,
        "target": "order_view",
        "events": 1100,
    },
    ("order.rejected", 1): {"order_id": ORDER_ID, "reason": "out of stock"},
    ("order.rejected", 2): {"order_id": ORDER_ID, "reason": "out of stock", **SAGA},
    ("stock.reserved", 1): {**ORDER, "total": TOTAL, **SAGA},
    ("stock.reservation_failed", 1): {**FAILED, "customer_id": "c-1"},
    ("stock.released", 1): {"order_id": ORDER_ID, **SAGA},
    ("payment.completed", 1): {
        "order_id": ORDER_ID,
        "payment_id": PAYMENT_ID,
        "amount": TOTAL,
        "country": "DE",
        "items": ITEMS,
        **SAGA,
    },
    ("payment.failed", 1): FAILED,
    ("payment.refunded", 1): {
        "order_id": ORDER_ID,
        "payment_id": PAYMENT_ID,
        "amount": TOTAL,
        **SAGA,
    },
    ("shipment.created", 1): {
        "order_id": ORDER_ID,
        "shipment_id": SHIPMENT_ID,
        "tracking_number": "TRK-1",
        **SAGA,
    },
    ("shipment.created", 2): {
        "order_id": ORDER_ID,
        "shipment_id": SHIPMENT_ID,
        "tracking_number": "TRK-1",
        **SAGA,
        "payment_id": PAYMENT_ID,
    },
    ("shipment.failed", 1): {**FAILED, "reason": "blocked country XX"},
    ("shipment.cancelled", 1): {"order_id": ORDER_ID, **SAGA},
    ("orchestrator.retry_step", 1): {"order_id": ORDER_ID, "requested_by": "alice"},
    ("orchestrator.compensate_saga", 1): {
        "order_id": ORDER_ID,
        "reason": "customer called",
        "requested_by": "alice",
    },
}


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def released_ids() -> list[str]:
    return [f"{type_}.v{version}" for type_, version, _ in registry.released()]


# --- Money -------------------------------------------------------------------------------


def test_money_parses_decimal_strings_and_serialises_them_back() -> None:
    money = Money.model_validate_json('{"amount": "12.50", "currency": "EUR"}')
    assert money.amount == Decimal("12.50")
    assert money.model_dump_json() == '{"amount":"12.50","currency":"EUR"}'
    assert money.model_dump() == {"amount": "12.50", "currency": "EUR"}
    assert Money.of("-0.0001", "USD").model_dump_json() == '{"amount":"-0.0001","currency":"USD"}'
    assert Money.model_validate(money.model_dump()) == money


@pytest.mark.parametrize("amount", ["12.5", "12", "0", "1e3", "null", "true"])
def test_money_rejects_json_numbers(amount: str) -> None:
    with pytest.raises(ValidationError, match="decimal string"):
        Money.model_validate_json(f'{{"amount": {amount}, "currency": "EUR"}}')


@pytest.mark.parametrize("amount", [12.5, 12, Decimal("12.50"), True, None])
def test_money_rejects_anything_but_a_string_from_python(amount: object) -> None:
    with pytest.raises(ValidationError, match="decimal string"):
        Money.model_validate({"amount": amount, "currency": "EUR"})


MALFORMED_AMOUNTS = ["", "12.", ".5", "12.12345", "1e3", "12,50", " 12", "12 ", "+1", "NaN"]


# "\u0661\u0662" is 12 in Arabic-Indic digits, which Decimal() would happily accept.
@pytest.mark.parametrize("amount", [*MALFORMED_AMOUNTS, "Infinity", "12.50\n", "\u0661\u0662"])
def test_money_rejects_malformed_strings(amount: str) -> None:
    with pytest.raises(ValidationError, match="decimal string"):
        Money.of(amount, "EUR")


@pytest.mark.parametrize("currency", ["eur", "EURO", "EU", "", "E1R"])
def test_money_rejects_malformed_currencies(currency: str) -> None:
    with pytest.raises(ValidationError):
        Money.of("1.00", currency)


def test_money_arithmetic_is_exact_and_keeps_one_currency() -> None:
    assert Money.of("0.10", "EUR") + Money.of("0.20", "EUR") == Money.of("0.30", "EUR")
    assert Money.of("12.50", "EUR").times(3).model_dump() == {"amount": "37.50", "currency": "EUR"}
    assert str(Money.of("100", "EUR").times(10)) == "1000 EUR"
    with pytest.raises(ValueError, match="cannot add USD to EUR"):
        _ = Money.of("1", "EUR") + Money.of("1", "USD")
    with pytest.raises(TypeError):
        Money.of("1", "EUR").times(True)
    line = OrderLine(sku="A", quantity=3, unit_price=Money.of("1.25", "EUR"))
    assert line.subtotal() == Money.of("3.75", "EUR")


# --- Message models ----------------------------------------------------------------------


def test_every_released_version_has_a_sample() -> None:
    assert set(SAMPLES) == {(type_, version) for type_, version, _ in registry.released()}


@pytest.mark.parametrize(("type_", "version", "model"), registry.released(), ids=released_ids())
def test_model_parses_its_sample_from_json(type_: str, version: int, model: Any) -> None:
    message = model.model_validate_json(body(SAMPLES[type_, version]))
    assert (message.TYPE, message.VERSION) == (type_, version)


@pytest.mark.parametrize(("type_", "version", "model"), registry.released(), ids=released_ids())
def test_model_rejects_extra_fields(type_: str, version: int, model: Any) -> None:
    with pytest.raises(ValidationError, match="bogus"):
        model.model_validate_json(body({**SAMPLES[type_, version], "bogus": 1}))


def test_messages_are_frozen_and_strict_in_python() -> None:
    message = PlaceOrder.model_validate_json(body(SAMPLES["order.place_order", 1]))
    with pytest.raises(ValidationError):
        setattr(message, "country", "FR")  # noqa: B010 (a plain assignment would not type-check)
    with pytest.raises(ValidationError):
        OrderLine.model_validate({"sku": "A", "quantity": "2", "unit_price": PRICE})


def test_order_ids_are_uuid_text_with_one_spelling() -> None:
    payload = {**SAMPLES["order.confirm_order", 1], "order_id": ORDER_ID.upper()}
    assert decode_message("order.confirm_order", 1, body(payload)).model_dump() == {
        "order_id": ORDER_ID,
        "payment_id": None,
        "tracking_number": None,
    }
    with pytest.raises(InvalidBody, match="order_id"):
        decode_message("order.confirm_order", 1, body({"order_id": "order-1"}))


def test_place_order_needs_items_in_one_currency() -> None:
    dollars = {**ITEMS[0], "sku": "SKU-2", "unit_price": {"amount": "1.00", "currency": "USD"}}
    payload = {**SAMPLES["order.place_order", 1], "items": [*ITEMS, dollars]}
    with pytest.raises(InvalidBody, match="same currency"):
        decode_message("order.place_order", 1, body(payload))
    with pytest.raises(InvalidBody, match="items"):
        decode_message("order.place_order", 1, body({**payload, "items": []}))


def test_place_order_refuses_negative_prices_and_takes_free_items() -> None:
    refund = {**ITEMS[0], "sku": "SKU-2", "unit_price": {"amount": "-5.00", "currency": "EUR"}}
    payload = {**SAMPLES["order.place_order", 1], "items": [*ITEMS, refund]}
    with pytest.raises(InvalidBody, match=r"items\.1\.unit_price must not be negative"):
        decode_message("order.place_order", 1, body(payload))
    free = {**refund, "unit_price": {"amount": "0.00", "currency": "EUR"}}
    placed = decode_message("order.place_order", 1, body({**payload, "items": [*ITEMS, free]}))
    assert isinstance(placed, PlaceOrder) and len(placed.items) == 2


def test_place_order_defaults() -> None:
    payload = {k: v for k, v in SAMPLES["order.place_order", 1].items() if k != "saga"}
    message = decode_message("order.place_order", 1, body(payload))
    assert isinstance(message, PlaceOrder)
    assert (message.saga, message.order_id) == ("orchestration", ORDER_ID)


def test_commands_and_events_route_by_kind() -> None:
    services = {"order", "inventory", "payment", "shipping", "orchestrator"}
    for type_, _, model in registry.released():
        assert registry.kind(type_) == model.KIND
        if issubclass(model, Command):
            assert type_.split(".")[0] in services, f"{type_} is not <service>.<command>"
        else:
            assert issubclass(model, Event)


def test_every_saga_field_is_a_saga_style() -> None:
    """A saga style, or (on a version that added it) a style or None for older ones."""
    assert get_args(SagaStyle) == ("orchestration", "choreography")
    for _, _, model in registry.released():
        if "saga" in model.model_fields:
            field = model.model_fields["saga"]
            annotation = field.annotation
            if field.default is None:
                assert get_args(annotation)[1:] == (type(None),), model
                annotation = get_args(annotation)[0]
            assert get_args(annotation) == get_args(SagaStyle), model


# --- decode / encode ---------------------------------------------------------------------


@pytest.mark.parametrize(("type_", "version", "model"), registry.released(), ids=released_ids())
def test_decode_returns_the_newest_version(type_: str, version: int, model: Any) -> None:
    message = decode_message(type_, version, body(SAMPLES[type_, version]))
    latest = registry.latest_version(type_)
    assert type(message) is registry.model_for(type_, latest)
    if version == latest:
        assert json.loads(encode_message(message)) == SAMPLES[type_, version]


def test_encode_is_compact_json() -> None:
    message = decode_message("order.rejected", 2, body(SAMPLES["order.rejected", 2]))
    expected = '{"order_id":"' + ORDER_ID + '","reason":"out of stock","saga":"choreography"}'
    assert encode_message(message) == expected.encode()


def test_encode_refuses_unregistered_models() -> None:
    class Stray(Event):
        TYPE = "order.confirmed"
        VERSION = 1

        order_id: str

    with pytest.raises(UnknownMessageType, match="not the registered model"):
        encode_message(Stray(order_id=ORDER_ID))


def test_invalid_json_is_an_invalid_body() -> None:
    with pytest.raises(InvalidBody) as caught:
        decode_message("order.confirmed", 1, b"{not json")
    assert str(caught.value).startswith("order.confirmed v1: invalid body: ")
    assert "Invalid JSON" in str(caught.value)
    with pytest.raises(InvalidBody, match="object"):
        decode_message("order.confirmed", 1, b"[]")


def test_unknown_type() -> None:
    with pytest.raises(UnknownMessageType) as caught:
        decode_message("order.shipped", 1, b"{}")
    assert str(caught.value) == "order.shipped v1: unknown message type"


@pytest.mark.parametrize("version", [99, 3, 0, -1])
def test_unknown_version(version: int) -> None:
    with pytest.raises(UnknownContractVersion) as caught:
        decode_message("order.placed", version, body(SAMPLES["order.placed", 2]))
    assert str(caught.value) == f"order.placed v{version}: unknown contract version (known: v1, v2)"


def test_invalid_body_names_the_fields_on_one_line() -> None:
    payload = {**SAMPLES["order.placed", 2], "items": [{**ITEMS[0], "quantity": 0}]}
    del payload["total"]
    with pytest.raises(InvalidBody) as caught:
        decode_message("order.placed", 2, body(payload))
    error = caught.value
    assert (error.type, error.version) == ("order.placed", 2)
    assert "\n" not in str(error)
    assert str(error).startswith("order.placed v2: invalid body: ")
    assert "items.0.quantity: Input should be greater than or equal to 1" in str(error)
    assert "total: Field required" in str(error)


def test_invalid_body_summary_is_bounded() -> None:
    with pytest.raises(InvalidBody, match=r"; and \d+ more$"):
        decode_message("stock.reserved", 1, b"{}")


def test_every_contract_error_is_a_contract_error() -> None:
    for error in (InvalidBody, UnknownMessageType, UnknownContractVersion, InvalidEnvelope):
        assert issubclass(error, ContractError)


# --- upcasting order.placed v1 -> v2 -----------------------------------------------------


def test_order_placed_v1_upcasts_to_v2_in_eur() -> None:
    v1 = {**SAMPLES["order.placed", 1], "items": [{"sku": "A", "quantity": 3, "unit_price": 0.1}]}
    v1["total"] = 0.30000000000000004  # 0.1 * 3 in floats
    message = decode_message("order.placed", 1, body(v1))
    assert isinstance(message, OrderPlaced)
    assert message.total == Money.of("0.30", V1_CURRENCY)
    assert message.items[0].unit_price == Money.of("0.10", "EUR")
    assert message.saga == "orchestration"
    assert json.loads(encode_message(message))["total"] == {"amount": "0.30", "currency": "EUR"}


def test_order_placed_v1_accepts_integral_numbers() -> None:
    v1 = {**SAMPLES["order.placed", 1], "total": 25}
    message = decode_message("order.placed", 1, body(v1))
    assert isinstance(message, OrderPlaced)
    assert message.model_dump()["total"] == {"amount": "25.00", "currency": "EUR"}


@pytest.mark.parametrize("total", [b"NaN", b"Infinity", b'"25.00"'])
def test_order_placed_v1_rejects_non_numbers(total: bytes) -> None:
    raw = body({**SAMPLES["order.placed", 1], "total": 0}).replace(
        b'"total": 0', b'"total": ' + total
    )
    with pytest.raises(InvalidBody, match="total"):
        decode_message("order.placed", 1, raw)


def test_a_failing_upcast_is_an_invalid_body() -> None:
    with pytest.raises(InvalidBody, match="upcasting v1 to v2 failed"):
        decode_message("order.placed", 1, body({**SAMPLES["order.placed", 1], "total": 1e40}))


@given(cents=st.integers(min_value=0, max_value=10**12))
def test_v1_amounts_upcast_to_exact_cents(cents: int) -> None:
    number = cents / 100  # what a v1 producer put on the wire
    v1 = {**SAMPLES["order.placed", 1], "total": number}
    v1["items"] = [{"sku": "A", "quantity": 1, "unit_price": number}]
    message = decode_message("order.placed", 1, body(v1))
    assert isinstance(message, OrderPlaced)
    expected = Decimal(number).quantize(Decimal("0.01"))  # the float, rounded to cents
    assert expected == Decimal(cents) / 100
    assert message.total.amount == expected
    assert message.items[0].unit_price.amount == expected
    assert message.model_dump()["total"]["amount"] == f"{cents // 100}.{cents % 100:02d}"


def test_upcaster_is_a_plain_dict_function() -> None:
    v1 = SAMPLES["order.placed", 1]
    v2 = order_placed_v1_to_v2(v1)
    assert v2["total"] == {"amount": "25.00", "currency": "EUR"}
    assert v1["total"] == 25.0  # input left alone


# --- the registry itself -----------------------------------------------------------------


class Ping(Event):
    TYPE = "test.ping"
    VERSION = 1

    n: int


class PingV2(Event):
    TYPE = "test.ping"
    VERSION = 2

    count: int


def test_registry_rules() -> None:
    fresh = Registry()
    fresh.register(Ping)
    fresh.register(PingV2)
    with pytest.raises(ValueError, match="already registered"):
        fresh.register(Ping)
    assert (fresh.types(), fresh.latest_version("test.ping"), fresh.kind("test.ping")) == (
        ["test.ping"],
        2,
        "event",
    )
    assert fresh.model_for("test.ping", 1) is Ping
    assert fresh.missing_upcasters() == [("test.ping", 1)]
    with pytest.raises(UnknownContractVersion, match="no upcaster from v1 to v2"):
        fresh.decode("test.ping", 1, b'{"n": 1}')
    with pytest.raises(UnknownMessageType):
        fresh.upcaster("test.pong", 1)
    with pytest.raises(UnknownContractVersion):
        fresh.upcaster("test.ping", 2)  # there is no v3 to upcast to

    @fresh.upcaster("test.ping", 1)
    def rename(payload: dict[str, Any]) -> dict[str, Any]:
        return {"count": payload["n"]}

    assert fresh.decode("test.ping", 1, b'{"n": 7}') == PingV2(count=7)
    with pytest.raises(ValueError, match="already has an upcaster"):
        fresh.upcaster("test.ping", 1)(rename)


def test_an_upcaster_producing_an_invalid_payload_is_an_invalid_body() -> None:
    fresh = Registry()
    fresh.register(Ping)
    fresh.register(PingV2)
    fresh.upcaster("test.ping", 1)(lambda payload: {"n": payload["n"]})
    with pytest.raises(InvalidBody, match="invalid after upcasting: count: Field required"):
        fresh.decode("test.ping", 1, b'{"n": 7}')


def test_the_fleet_registry_can_upcast_every_version() -> None:
    assert registry.missing_upcasters() == []


NO_REFERENCES = {"payment_id": None, "tracking_number": None}


@pytest.mark.parametrize(
    ("type_", "version", "newest", "added"),
    [
        ("order.confirm_order", 1, 2, NO_REFERENCES),
        ("order.confirmed", 1, 3, {**NO_REFERENCES, "saga": None}),
        ("order.confirmed", 2, 3, {"saga": None}),
        ("order.rejected", 1, 2, {"saga": None}),
        ("shipment.created", 1, 2, {"payment_id": None}),
    ],
)
def test_an_old_version_reads_as_the_newest_with_what_it_lacked_as_none(
    type_: str, version: int, newest: int, added: dict[str, Any]
) -> None:
    decoded = registry.decode(type_, version, body(SAMPLES[type_, version]))
    assert decoded.VERSION == newest
    assert decoded.model_dump(mode="json") == {**SAMPLES[type_, version], **added}


# --- Envelope ----------------------------------------------------------------------------


def over_the_wire(envelope: Envelope) -> Envelope:
    """As the publisher sends it (its one conversion to an aio-pika message) and pamqp
    encodes it, as a consumer would receive it."""
    outgoing = OutgoingMessage.of(envelope, b"{}", exchange="x", routing_key="y")
    sent = to_amqp_message(outgoing).properties
    raw = sent.marshal()
    received = Basic.Properties()
    received.unmarshal(struct.unpack(">H", raw[:2])[0], raw[2:])
    return Envelope.from_amqp(
        message_id=received.message_id,
        type=received.message_type,
        correlation_id=received.correlation_id,
        headers=received.headers,
        timestamp=received.timestamp,
        app_id=received.app_id,
    )


def test_new_envelope() -> None:
    envelope = Envelope.new("order.placed", 2, "order")
    assert str(uuid.UUID(envelope.message_id)) == envelope.message_id
    assert envelope.correlation_id == envelope.message_id
    assert envelope.causation_id is None
    assert envelope.occurred_at.tzinfo is UTC
    assert abs(datetime.now(UTC) - envelope.occurred_at) < timedelta(seconds=5)
    child = Envelope.new(
        "stock.reserved", 1, "inventory", envelope.correlation_id, envelope.message_id
    )
    assert (child.correlation_id, child.causation_id) == (envelope.message_id, envelope.message_id)


def test_a_new_outgoing_message_carries_its_envelope_in_properties_and_headers() -> None:
    envelope = Envelope.new("order.placed", 2, "order", correlation_id="saga-1", causation_id="c")
    message = OutgoingMessage.of(
        envelope, b"{}", exchange="fleet.events", routing_key="order.placed", headers={"h": 1}
    )
    assert (message.exchange, message.routing_key, message.body) == (
        "fleet.events",
        "order.placed",
        b"{}",
    )
    assert (message.message_id, message.type, message.correlation_id) == (
        envelope.message_id,
        "order.placed",
        "saga-1",
    )
    assert (message.timestamp, message.app_id, message.content_type) == (
        envelope.occurred_at,
        "order",
        "application/json",
    )
    assert message.headers == {"h": 1, "x-contract-version": 2, "x-causation-id": "c"}
    assert (message.version, message.causation_id) == (2, "c")
    first = OutgoingMessage.of(Envelope.new("a.b", 1, "order"), b"", exchange="", routing_key="q")
    assert "x-causation-id" not in first.headers and first.causation_id is None


def test_for_message_routes_a_contract_by_its_kind_and_type() -> None:
    command = PlaceOrder.model_validate_json(body(SAMPLES["order.place_order", 1]))
    message = OutgoingMessage.for_message(command, producer="cli", namespace="ns")
    assert (message.exchange, message.routing_key) == ("ns.commands", "order.place_order")
    assert message.body == encode_message(command)
    assert message.correlation_id == message.message_id  # it starts a conversation


@pytest.mark.parametrize("causation_id", [None, str(uuid.uuid4())])
def test_envelope_round_trips_through_amqp(causation_id: str | None) -> None:
    envelope = Envelope.new("order.placed", 2, "order", "saga-1", causation_id)
    assert over_the_wire(envelope) == envelope
    message = OutgoingMessage.of(envelope, b"{}", exchange="", routing_key="q")
    read_back = Envelope.from_amqp(
        message_id=message.message_id,
        type=message.type,
        correlation_id=message.correlation_id,
        headers=message.headers,
        timestamp=message.timestamp,
        app_id=message.app_id,
    )
    assert read_back == envelope


def test_from_amqp_fills_what_may_be_missing() -> None:
    message_id = str(uuid.uuid4())
    envelope = Envelope.from_amqp(message_id, "order.placed", None, {"x-contract-version": "2"})
    assert envelope.version == 2
    assert envelope.correlation_id == message_id
    assert envelope.producer == "unknown"
    assert abs(datetime.now(UTC) - envelope.occurred_at) < timedelta(seconds=5)
    assert envelope.causation_id is None


def test_from_amqp_normalises() -> None:
    message_id = uuid.uuid4()
    envelope = Envelope.from_amqp(
        message_id=str(message_id).upper(),
        type="order.placed",
        headers={"x-contract-version": b"2", "x-causation-id": b"abc"},
        timestamp=datetime(2024, 1, 2, 3, 4, 5),  # naive: AMQP timestamps are UTC
    )
    assert envelope.message_id == str(message_id)
    assert (envelope.version, envelope.causation_id) == (2, "abc")
    assert envelope.occurred_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert Envelope.from_amqp(
        str(message_id), "a.b", None, {"x-contract-version": 1}, 0
    ).occurred_at == (datetime(1970, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({"message_id": None}, "message_id property is missing"),
        ({"message_id": ""}, "message_id property is missing"),
        ({"message_id": "order-1"}, "message_id 'order-1' is not a UUID"),
        ({"type": None}, "type property is missing"),
        ({"headers": {}}, "x-contract-version header is missing"),
        ({"headers": None}, "x-contract-version header is missing"),
        (
            {"headers": {"x-contract-version": "two"}},
            "x-contract-version header 'two' is not an int",
        ),
        ({"headers": {"x-contract-version": 2.0}}, "is not an int"),
        ({"headers": {"x-contract-version": True}}, "is not an int"),
        ({"headers": {"x-contract-version": 0}}, "version 0 is not a positive int"),
        ({"timestamp": "yesterday"}, "timestamp 'yesterday' is not a time"),
    ],
)
def test_invalid_envelopes(properties: dict[str, Any], reason: str) -> None:
    amqp = {
        "message_id": str(uuid.uuid4()),
        "type": "order.placed",
        "headers": {"x-contract-version": 2},
        **properties,
    }
    with pytest.raises(InvalidEnvelope) as caught:
        Envelope.from_amqp(**amqp)
    assert reason in str(caught.value)
    assert str(caught.value).startswith("invalid envelope")
    assert "\n" not in str(caught.value)
