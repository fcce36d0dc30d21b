"""The shipping's own settings (``FLEET_BLOCKED_COUNTRIES``)."""

from __future__ import annotations

from pydantic import Field

from workers.runtime.settings import ServiceSettings


class ShippingSettings(ServiceSettings):
    # Destinations refused (a business refusal, not an error).
    blocked_countries: list[str] = Field(default_factory=lambda: ["XX"])
