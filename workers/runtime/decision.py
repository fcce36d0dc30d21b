"""What a handler decides about one message: a value, so every rule and every reply is
tested without servers.

    def reserve_stock(stock: Stock, command: ReserveStock) -> Decision[Change]:
        ...
        return Decision(changes=(Reserved(order_id, lines),), send=(StockReserved(...),))

A handler is three parts (``workers.runtime.service``): *load* reads what a batch of
messages needs, *decide* is a pure function of that state and one message, *write* stores
the batch's changes. The runtime decides the messages of a batch in delivery order, each
seeing the changes of those before it: the state a handler loads knows how a change alters
it (``State.apply``), and ``after`` applies a decision's changes to it.

The messages a decision sends are written to the outbox by the runtime, in the same
transaction; a plain message gets the defaults of ``contracts.Send`` (a new id, the handled
message's correlation id, its type's exchange).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar

from contracts import Message, Send

Change = TypeVar("Change")


@dataclass(frozen=True)
class Decision(Generic[Change]):
    # What ``write`` stores (and ``State.apply`` makes of the state), in order.
    changes: tuple[Change, ...] = ()
    # What goes to the outbox: messages, or ``Send`` where the envelope needs more.
    send: tuple[Message | Send, ...] = ()
    # Why nothing changed, or what happened, for the worker's log (one INFO line).
    note: str | None = None


class State(Protocol):
    """What a handler's load returns: the batch's rows, and how a change alters them."""

    def apply(self, change: Any) -> Self: ...


StateT = TypeVar("StateT", bound=State)


def after(state: StateT, changes: Iterable[Any]) -> StateT:
    """``state`` with ``changes`` applied in order (a decision's, or several decisions')."""
    for change in changes:
        state = state.apply(change)
    return state
