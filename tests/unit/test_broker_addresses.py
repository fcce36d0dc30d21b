"""Several broker addresses (FLEET_AMQP_URLS): how they are read, and in which order the
connections try them."""

from __future__ import annotations

import socket

import pytest

from workers.runtime import connections
from workers.runtime.settings import Settings


def test_addresses_are_read_comma_separated_or_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_AMQP_URL", "amqp://a/")
    monkeypatch.setenv("FLEET_AMQP_URLS", " amqp://b/, amqp://c/ ,")
    assert Settings().broker_urls == ["amqp://a/", "amqp://b/", "amqp://c/"]
    monkeypatch.setenv("FLEET_AMQP_URLS", '["amqp://b/", "amqp://a/"]')
    assert Settings().broker_urls == ["amqp://a/", "amqp://b/"]  # amqp_url first, once


def test_one_address_by_default() -> None:
    assert Settings(amqp_url="amqp://a/").broker_urls == ["amqp://a/"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_every_address_is_tried_and_the_last_failure_raised() -> None:
    first, last = closed_port(), closed_port()
    urls = [f"amqp://guest:guest@127.0.0.1:{first}/", f"amqp://guest:guest@127.0.0.1:{last}/"]
    for connect in (connections.connect, connections.connect_robust):
        with pytest.raises(ConnectionError, match=str(last)):
            await connect(urls, timeout=2)
