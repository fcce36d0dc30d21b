"""The order service's own settings (``FLEET_SNAPSHOT_EVERY``, ``FLEET_REPLAY_PAGE_SIZE``)."""

from __future__ import annotations

from pydantic import Field

from workers.runtime.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    # A snapshot of an order stream every this many events (0: never).
    snapshot_every: int = 20
    # Events sent per page of a replay (one transaction each; the outbox holds them).
    replay_page_size: int = Field(default=1_000, ge=1)
