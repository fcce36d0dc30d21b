"""The archive's JSON form of AMQP header values reads back as the values it was made of,
and a restore that chooses nothing is refused before it touches a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from workers.operations import InvalidRequest
from workers.operations.archive import from_json, restore, to_json
from workers.runtime.settings import Settings

# What a dead letter's headers hold, as aio-pika delivers them: the broker's x-death (a
# list of tables with timestamps), our x-error-*, a trace context, and the odd value.
HEADERS: dict[str, Any] = {
    "x-error-type": "PermanentError",
    "x-error-signature": "PermanentError at workers.order.domain._placed_order",
    "x-attempts": 3,
    "x-death": [
        {
            "count": 1,
            "reason": "delivery_limit",
            "queue": "fleet.order.reject_order",
            "time": datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC),
            "exchange": "",
            "routing-keys": ["fleet.order.reject_order"],
        }
    ],
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "ratio": 0.25,
    "not a number": float("nan"),
    "amount": Decimal("19.80"),
    "flag": False,
    "nothing": None,
    "raw": bytearray(b"\x00\xff binary"),
    "looks like a tag": {"$bytes": "not base64, just a table"},
    "dollar key": {"$price": 3},
}


def round_trip(value: Any) -> Any:
    # Through JSON text, as jsonb stores it.
    return from_json(json.loads(json.dumps(to_json(value), allow_nan=False)))


def test_headers_read_back_as_they_were() -> None:
    back = round_trip(HEADERS)
    nan = back.pop("not a number")
    assert nan != nan
    expected = {key: value for key, value in HEADERS.items() if key != "not a number"}
    assert back == expected
    assert type(back["raw"]) is bytearray
    assert type(back["amount"]) is Decimal
    assert back["x-death"][0]["time"].tzinfo is not None
    assert type(back["x-attempts"]) is int and type(back["flag"]) is bool


def test_a_long_string_that_is_not_utf8_comes_back_as_bytes_the_client_can_send() -> None:
    # pamqp delivers such a string as bytes, but can only send bytes as a byte array.
    assert round_trip({"odd": b"\xc3\x28"}) == {"odd": bytearray(b"\xc3\x28")}


def test_plain_values_are_stored_as_plain_json() -> None:
    plain = {"x-error-type": "InvalidBody", "x-attempts": 1, "nested": {"a": [1, "b"]}}
    assert to_json(plain) == plain


@pytest.mark.parametrize(
    "choice",
    [
        {},
        {"ids": [1], "every": True},
        {"message_id": "m-1", "queue": "fleet.order.reject_order.dlq"},
        {"ids": []},
    ],
    ids=str,
)
async def test_a_restore_must_choose_exactly_one_way(choice: dict[str, Any]) -> None:
    # Unreachable servers: the refusal comes first.
    settings = Settings(
        amqp_url="amqp://nobody@127.0.0.1:1/", pg_admin_url="postgresql://x@127.0.0.1:1/x"
    )
    with pytest.raises(InvalidRequest, match="choose what to restore"):
        await restore(settings, **choice, operator="tests")
