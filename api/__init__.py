"""The fleet's HTTP API (FastAPI): orders in through the order service's PlaceOrder command,
out of the read model; served by ``fleet api``."""

from api.app import create_app

__all__ = ["create_app"]
