"""A small TCP proxy for the fault tests: clients connect to it instead of the server, and
the test cuts every connection at the moment it chooses, as a network failure or a broker's
crash looks to the clients (no toxiproxy here).

    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()                      # listens on a free local port: proxy.port
    url = proxy.url_for(amqp_url)            # the same URL, through the proxy
    proxy.cut()                              # every live connection reset, both sides
    proxy.pause(to_client=False)             # hold what goes one way (or both); then
    proxy.resume()                           # let it through
    await proxy.close()

A cut aborts both sockets of every pair (an RST, no AMQP close): what the client sent and
the server did not read yet is lost, and so are the server's confirms on their way back.
New connections are accepted again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


@dataclass
class ProxyCounts:
    connections: int = 0  # accepted and connected to the server
    cut: int = 0  # ended by cut()
    bytes_to_server: int = 0
    bytes_to_client: int = 0


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter

    def abort(self) -> None:
        self.client.transport.abort()
        self.server.transport.abort()


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.counts = ProxyCounts()
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        # One gate per direction: to the server (publishes, acks), to the clients
        # (deliveries, confirms).
        self._flowing = {True: asyncio.Event(), False: asyncio.Event()}
        self.resume()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url_for(self, url: str) -> str:
        """``url`` (amqp://user:pass@host:port/vhost?query) with this proxy as its host."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def live(self) -> int:
        """Connections open through the proxy now."""
        return len(self._pairs)

    def cut(self) -> int:
        """Reset every live connection, both sides; how many there were."""
        pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            pair.abort()
        self.counts.cut += len(pairs)
        return len(pairs)

    def pause(self, *, to_server: bool = True, to_client: bool = True) -> None:
        """Hold the bytes going one way or both (connections stay open), as a hung peer:
        held to the clients, a publisher's confirms are outstanding while the broker has its
        messages; held to the server, a consumer's acks never arrive."""
        if to_server:
            self._flowing[True].clear()
        if to_client:
            self._flowing[False].clear()

    def resume(self) -> None:
        for gate in self._flowing.values():
            gate.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.resume()
        self.cut()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        try:
            server, to_server = await asyncio.open_connection(*self.target)
        except OSError:
            to_client.transport.abort()
            return
        pair = _Pair(to_client, to_server)
        self._pairs.add(pair)
        self.counts.connections += 1
        try:
            await asyncio.gather(
                self._pipe(client, to_server, to_server=True),
                self._pipe(server, to_client, to_server=False),
            )
        finally:
            self._pairs.discard(pair)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, to_server: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                await self._flowing[to_server].wait()
                if sink.transport.is_closing():
                    return
                sink.write(data)
                await sink.drain()
                if to_server:
                    self.counts.bytes_to_server += len(data)
                else:
                    self.counts.bytes_to_client += len(data)
        # The source closed (or was reset): end the other direction too, after what is
        # already on its way (a clean AMQP close ends with the server closing its socket).
        sink.close()
