"""Serving the API with uvicorn, as ``fleet api`` does."""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator

import uvicorn

from api.app import create_app
from workers.runtime.settings import Settings


class Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # SIGINT and SIGTERM stop gracefully, then the process exits 0 as 'fleet worker'
        # does (uvicorn's own raises the signal again once stopped: exit -15).
        previous = {
            signum: signal.signal(signum, self.handle_exit)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def serve(settings: Settings, sock: socket.socket) -> None:
    """Serve on ``sock`` (bound and listening) until SIGINT or SIGTERM; requests in flight
    get 10 s to finish."""
    config = uvicorn.Config(
        create_app(settings),
        log_config=None,  # the fleet's logging (and --json), not uvicorn's own
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    Server(config).run(sockets=[sock])
