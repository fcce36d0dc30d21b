"""The operator's tools: namespaces set up and torn down, dead letters, verify, the view's
rebuild, load, seeding, test messages, orders placed and followed, the supervisor of
`fleet up`. They use a service only through its public module (``workers/<service>/public.py``)
or the broker, never its domain rules or its tables."""

from __future__ import annotations

from collections.abc import Callable

# How a long-running tool reports: (what it is doing, how many done, of how many or None).
Progress = Callable[[str, int, int | None], None]


def no_progress(_stage: str, _done: int, _total: int | None) -> None:
    pass


class OperatorError(Exception):
    """A request an operator tool cannot carry out; the message is one line."""


class InvalidRequest(OperatorError):
    """A request that is wrong as asked (bad usage): the CLI exits 2, not 1."""
