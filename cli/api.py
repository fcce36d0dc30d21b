"""``fleet api``: the HTTP API (api/), served by uvicorn until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import socket

import typer

from cli.output import fail, log_as_json

logger = logging.getLogger("fleet.api")


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` (0: any free port), so that an address in use or
    a host that does not resolve is our one-line error, not uvicorn's log and exit."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen()
        except OSError:
            sock.close()
            raise
    except OSError as error:
        fail(f"cannot listen on {host}:{port}: {error.strerror or error}")
    return sock


def api(
    host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on."),
    port: int = typer.Option(
        8000, "--port", min=0, max=65535, help="The port to listen on (0: any free one)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Log JSON lines."),
) -> None:
    """Serve the HTTP API (OpenAPI at /docs) until Ctrl-C or SIGTERM.

    Requests in flight when it is told to stop are let finish.
    """
    from api.server import serve
    from workers.runtime import tracing
    from workers.runtime.settings import get_settings

    settings = get_settings()
    tracing.configure("api")
    sock = listen(host, port)
    # aiormq stays quiet (see main): the API's own lines say why RabbitMQ cannot be used.
    for name in ("fleet", "uvicorn"):
        logging.getLogger(name).setLevel(logging.INFO)
    if as_json:
        log_as_json()
    shown_host = f"[{host}]" if ":" in host else host
    # The socket listens already: a request sent from now on is served once startup is done.
    logger.info("listening on http://%s:%d (OpenAPI at /docs)", shown_host, sock.getsockname()[1])
    serve(settings, sock)
