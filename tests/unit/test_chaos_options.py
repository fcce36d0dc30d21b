"""Which databases ``fleet chaos --databases`` lets the database fault hit, as values."""

from __future__ import annotations

import pytest

from workers.operations import InvalidRequest
from workers.operations.chaos import parse_services


def test_no_list_means_every_service() -> None:
    assert parse_services(None) is None


def test_a_list_is_read_in_order_without_repeats() -> None:
    assert parse_services(" payment, order,payment ") == ("payment", "order")


@pytest.mark.parametrize("text", ["", "payments", "payment,nope"])
def test_an_unknown_or_empty_list_is_bad_usage_naming_what_is_known(text: str) -> None:
    with pytest.raises(InvalidRequest, match=r"runnable: .*payment"):
        parse_services(text)
