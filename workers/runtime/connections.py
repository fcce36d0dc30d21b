"""Broker connections over every address of the broker (``Settings.broker_urls``): the one
place the fleet opens AMQP connections, so a cluster's nodes fail over for all of them.

``connect`` opens a plain connection to the first address that answers (one-shot commands).
``connect_robust`` opens a robust one (workers, relays, publishers): aio-pika reconnects
it by itself, and here every reconnection attempt takes the next address in turn, so a
client whose node is stopped goes on through another node of the cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from yarl import URL

log = logging.getLogger("fleet.connections")

Addresses = str | Sequence[str]


def _urls(addresses: Addresses) -> list[str]:
    urls = [addresses] if isinstance(addresses, str) else list(addresses)
    if not urls:
        raise ValueError("no broker address given")
    return urls


async def connect(addresses: Addresses, **options: Any) -> AbstractConnection:
    """A connection to the first of ``addresses`` that answers; the last failure if none
    does (``options``: aio-pika's, e.g. ``client_properties``, ``timeout``)."""
    urls = _urls(addresses)
    for number, url in enumerate(urls, 1):
        try:
            connection: AbstractConnection = await aio_pika.connect(url, **options)
            return connection
        except Exception as error:  # refused, timed out, closed while opening...
            if number == len(urls):
                raise
            log.warning("broker at %s: %s; trying the next address", _masked(url), error)
    raise AssertionError("unreachable")


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection that moves to the next address before each (re)connection
    attempt after its first."""

    addresses: tuple[URL, ...] = ()

    def __init__(self, url: URL, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        self._attempts = 0

    # aio-pika's RobustConnection makes every attempt through this (name-mangled) method,
    # and Connection.connect reads self.url afresh each time (aio-pika 10.2).
    async def _RobustConnection__connect_transport(self) -> None:
        if self.addresses:
            self.url = self.addresses[self._attempts % len(self.addresses)]
        self._attempts += 1
        await super()._RobustConnection__connect_transport()  # type: ignore[misc]


async def connect_robust(addresses: Addresses, **options: Any) -> AbstractRobustConnection:
    """A robust connection over ``addresses``: the first that answers, then the next in
    turn whenever the connection is lost or an attempt fails. Fails at once, as aio-pika
    does, when no address answers the first time."""
    urls = _urls(addresses)
    if len(urls) == 1:
        single: AbstractRobustConnection = await aio_pika.connect_robust(urls[0], **options)
        return single
    for offset, url in enumerate(urls):
        rotated = tuple(URL(u) for u in urls[offset:] + urls[:offset])
        failover = type("FailoverConnection", (FailoverConnection,), {"addresses": rotated})
        try:
            connection: AbstractRobustConnection = await aio_pika.connect_robust(
                url, connection_class=failover, **options
            )
            return connection
        except Exception as error:
            if offset == len(urls) - 1:
                raise
            log.warning("broker at %s: %s; trying the next address", _masked(url), error)
    raise AssertionError("unreachable")


def _masked(url: str) -> str:
    parsed = URL(url)
    return str(parsed.with_password("******")) if parsed.password else url
