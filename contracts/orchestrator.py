"""Messages to the orchestrator: what an operator asks of a stuck saga.

The orchestrator alone decides what a saga does; an operator tool never edits its tables, it
sends one of these commands and the orchestrator applies it under the order's lock, as it
applies a reply (``workers/orchestrator/domain.py``: ``on_retry``, ``on_compensate``).
"""

from __future__ import annotations

from contracts.base import Command, NonEmptyStr, OrderId, Reason
from contracts.registry import registry


@registry.register
class RetryStep(Command):
    """Send the saga's current step's command again (and restart its deadline)."""

    TYPE = "orchestrator.retry_step"
    VERSION = 1

    order_id: OrderId
    requested_by: NonEmptyStr  # the operator, for the saga's step log


@registry.register
class CompensateSaga(Command):
    """Stop going forward: undo what the saga did and reject the order (refused at the
    pivot, ``confirm_order``, from where a saga only goes forward)."""

    TYPE = "orchestrator.compensate_saga"
    VERSION = 1

    order_id: OrderId
    reason: Reason  # the order's rejection reason
    requested_by: NonEmptyStr
