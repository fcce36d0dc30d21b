"""The orchestrator's own settings (``FLEET_STEP_TIMEOUT_SECONDS``,
``FLEET_DEADLINE_POLL_SECONDS``)."""

from __future__ import annotations

from workers.runtime.settings import ServiceSettings


class OrchestratorSettings(ServiceSettings):
    # How long a saga step may wait for its reply before it is compensated (or, for confirm
    # and the compensations, sent again).
    step_timeout_seconds: float = 30.0
    # How often the stored deadlines are checked.
    deadline_poll_seconds: float = 1.0
