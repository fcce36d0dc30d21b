"""The pure parts of replaying: which dead letter is which (letter keys), how an edited body
is checked against its contract, how a rate sizes the chunks, which handler a queue has."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from workers.operations import InvalidRequest
from workers.operations.dead_letters import DeadLetter
from workers.operations.replays import (
    chunk_for,
    editable_body,
    handler_of,
    letter_key,
    validated_body,
)
from workers.runtime.settings import Settings

MESSAGE = "0b0e1f6c-4c0e-4a53-8d1a-0d5f0f0e0a01"


def dead(
    headers: dict[str, object], body: bytes = b"{}", message_id: str | None = MESSAGE
) -> DeadLetter:
    return DeadLetter(message_id, "order.confirmed", headers, body)


def test_a_letter_key_is_the_message_and_when_it_failed() -> None:
    first = dead({"x-failed-at": "2025-01-01T10:00:00+00:00", "x-attempts": 3})
    # Read again, or moved to the tail (the same headers): the same letter.
    assert letter_key(first) == letter_key(dead(dict(first.headers)))
    # The same message failing again after a replay is another letter.
    again = dead({"x-failed-at": "2025-01-01T11:00:00+00:00", "x-attempts": 3})
    assert letter_key(first) != letter_key(again)
    assert letter_key(first).startswith(MESSAGE)


def test_a_letter_the_broker_dead_lettered_is_keyed_by_its_x_death() -> None:
    when = datetime(2025, 1, 1, 10, tzinfo=UTC)
    death = {"queue": "fleet.order.place_order", "reason": "delivery_limit", "count": 1}
    once = dead({"x-death": [{**death, "time": when}]})
    twice = dead({"x-death": [{**death, "time": when, "count": 2}]})
    later = dead({"x-death": [{**death, "time": when.replace(hour=11)}]})
    keys = {letter_key(once), letter_key(twice), letter_key(later)}
    assert len(keys) == 3
    assert letter_key(once) == letter_key(dead({"x-death": [{**death, "time": when}]}))


def test_a_letter_with_no_failure_recorded_is_keyed_by_its_contents() -> None:
    one = dead({}, body=b'{"a": 1}', message_id=None)
    assert letter_key(one) == letter_key(dead({}, body=b'{"a": 1}', message_id=None))
    assert letter_key(one) != letter_key(dead({}, body=b'{"a": 2}', message_id=None))


ORDER = {
    "idempotency_key": "cart-1",
    "customer_id": "CUST-0001",
    "items": [
        {"sku": "SKU-0001", "quantity": 1, "unit_price": {"amount": "9.90", "currency": "EUR"}}
    ],
    "country": "DE",
}


def test_a_valid_edit_becomes_the_body_a_producer_would_send() -> None:
    body = validated_body("order.place_order", 1, json.dumps(ORDER))
    assert json.loads(body)["items"][0]["quantity"] == 1
    # The version header as text (as some clients send it) is read the same.
    assert validated_body("order.place_order", "1", json.dumps(ORDER)) == body


@pytest.mark.parametrize(
    ("type_", "version", "data", "words"),
    [
        (
            "order.place_order",
            1,
            json.dumps({**ORDER, "items": [{**ORDER["items"][0], "quantity": 0}]}),  # type: ignore[dict-item]
            "not a valid order.place_order v1: items.0.quantity",
        ),
        ("order.place_order", 1, json.dumps({**ORDER, "country": "Germany"}), "country"),
        ("order.place_order", 1, "{oops", "not JSON"),
        ("order.place_order", 99, json.dumps(ORDER), "cannot edit order.place_order v99"),
        ("order.place_order", None, json.dumps(ORDER), "x-contract-version"),
        ("no.such.type", 1, "{}", "unknown type 'no.such.type'"),
        (None, 1, "{}", "unknown type None"),
    ],
)
def test_an_invalid_edit_is_refused_with_what_is_wrong(
    type_: str | None, version: object, data: str, words: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validated_body(type_, version, data)
    assert words in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_body_to_edit_is_pretty_json_or_the_text_as_it_is() -> None:
    assert editable_body(dead({}, body=b'{"order_id":"x"}')) == '{\n  "order_id": "x"\n}\n'
    assert editable_body(dead({}, body=b"{not json")) == "{not json"


def test_a_rate_takes_about_one_second_of_letters_at_a_time() -> None:
    assert chunk_for(None) == 100
    assert chunk_for(20) == 20
    assert chunk_for(0.5) == 1
    assert chunk_for(10_000) == 100


def test_the_queue_tells_the_service_and_the_handler_inbox() -> None:
    settings = Settings(namespace="fleet")
    assert handler_of(settings, "fleet.order.place_order") == ("order", "order.place_order")
    assert handler_of(settings, "fleet.order.nosuch") is None
    assert handler_of(settings, "fleet.nosuch.place_order") is None
    assert handler_of(settings, "other.order.place_order") is None
    assert handler_of(settings, "fleet.events/order.placed") is None
