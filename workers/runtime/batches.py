"""Deliveries of one queue gathered into batches, so that a transaction carries many.

    batches = Batches(process, size=10, wait=0.002, in_flight=2)
    outcome = await batches.submit(delivery)     # from each delivery's own task

aio-pika runs a task per delivery (up to the prefetch count at once). Each submits its
delivery and waits until the batch it joined has been processed, then gets its own
delivery's result.

Up to ``in_flight`` batches of a queue are processed at once, so one batch's round trips to
the database overlap another's (its commit's flush to disk above all). Each gets a ``Turn``
that keeps what must stay in delivery order: a batch that decides about an order an
earlier batch in flight decides about too waits until that one has applied its messages
(one order's messages are applied in the order they came, and two batches never hold the
same order's lock), and every batch settles its deliveries after the earlier ones have
settled theirs (a ``multiple`` ack covers the channel's lower delivery tags). Batches of
different orders go side by side. The locks a transaction takes are taken at once, sorted
(``db.inbox.record_locked``), so batches side by side never deadlock over them.

A batch goes as soon as it holds ``size`` deliveries, or, when a place is free, ``wait``
seconds after its first delivery; while every place is taken the next batch fills, and
goes as soon as one frees (under load a batch holds what arrived meanwhile, with a prefetch
of ``in_flight`` times the batch size a full one).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Turn:
    """A batch's place among its queue's batches in flight (see the module docstring)."""

    def __init__(self, earlier: Turn | None) -> None:
        loop = asyncio.get_running_loop()
        self._earlier = earlier
        # The orders the batch decides about (None: it cannot say, so every one).
        self._keys: asyncio.Future[frozenset[str] | None] = loop.create_future()
        self._applied: asyncio.Future[None] = loop.create_future()
        self._settled: asyncio.Future[None] = loop.create_future()

    async def decide_about(self, keys: Collection[str] | None) -> None:
        """Say which orders this batch decides about, and wait until every earlier batch in
        flight that decides about one of them has applied its messages."""
        mine = None if keys is None else frozenset(keys)
        if not self._keys.done():
            self._keys.set_result(mine)
        turn = self._earlier
        while turn is not None and not turn._settled.done():
            theirs = await turn._keys
            if mine is None or theirs is None or mine & theirs:
                await turn._applied
            turn = turn._earlier

    def applied(self) -> None:
        """This batch's messages are applied (committed, retried or dead-lettered)."""
        if not self._keys.done():
            self._keys.set_result(None)
        if not self._applied.done():
            self._applied.set_result(None)

    async def settle_after_earlier(self) -> None:
        if self._earlier is not None:
            await asyncio.shield(self._earlier._settled)

    def settled(self) -> None:
        """This batch's deliveries are settled: the ones after it may settle theirs."""
        self.applied()
        if not self._settled.done():
            self._settled.set_result(None)
        self._earlier = None  # every earlier one has settled: nothing to wait for there


class Batches(Generic[Item, Result]):
    def __init__(
        self,
        process: Callable[[Sequence[Item], Turn], Awaitable[Sequence[Result]]],
        *,
        size: int,
        wait: float,
        in_flight: int = 1,
    ) -> None:
        if size < 1:
            raise ValueError(f"a batch holds at least one delivery, not {size}")
        if in_flight < 1:
            raise ValueError(f"at least one batch is processed at a time, not {in_flight}")
        self._process = process
        self._size = size
        self._wait = wait
        self._in_flight = in_flight
        self._filling: list[tuple[Item, asyncio.Future[Result]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._closed: deque[list[tuple[Item, asyncio.Future[Result]]]] = deque()
        self._running = 0
        self._last_turn: Turn | None = None

    async def submit(self, item: Item) -> Result:
        """``item``'s result, once the batch it joined has been processed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._filling.append((item, future))
        if len(self._filling) >= self._size:
            self._close()
        elif self._timer is None and self._running < self._in_flight:
            self._timer = loop.call_later(self._wait, self._close)
        return await future

    def _close(self) -> None:
        """The filling batch goes to be processed; the next delivery starts a new one."""
        self._seal()
        self._start()

    def _seal(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._filling:
            self._closed.append(self._filling)
            self._filling = []

    def _start(self) -> None:
        """Closed batches to places that are free, in order, each with its turn."""
        while self._closed and self._running < self._in_flight:
            batch = self._closed.popleft()
            self._running += 1
            self._last_turn = turn = Turn(self._last_turn)
            asyncio.get_running_loop().create_task(self._run(batch, turn))

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]], turn: Turn) -> None:
        try:
            await self._process_one(batch, turn)
        finally:
            turn.settled()  # (the process settles it; this frees the later ones whatever)
            self._running -= 1
            if not self._closed:
                self._seal()  # what filled meanwhile goes now, without waiting
            self._start()

    async def _process_one(
        self, batch: list[tuple[Item, asyncio.Future[Result]]], turn: Turn
    ) -> None:
        try:
            results = await self._process([item for item, _ in batch], turn)
        except BaseException as error:  # every waiting delivery learns of it (and nacks)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # a waiter cancelled (shutdown) needs no result
                future.set_result(result)
