"""Deliveries of one queue gathered into batches, so that a transaction carries many.

    batches = Batches(process, size=10, wait=0.002)
    outcome = await batches.submit(delivery)     # from each delivery's own task

FastStream runs a task per delivery (up to the prefetch count at once). Each submits its
delivery and waits until the batch it joined has been processed, then gets its own
delivery's result.

A queue's batches are processed one at a time, in order: two batches of one queue in flight
at once would each hold the locks of their messages' orders until their commit, and two
such transactions taking two orders' locks in opposite orders deadlock. While one batch is
processed the next one fills, and it goes as soon as the first is done, or once it holds
``size`` deliveries: under load a batch holds what arrived while the one before it
committed (with a prefetch of twice the batch size, a full batch). When nothing is being
processed, a batch waits at most ``wait`` seconds after its first delivery for more.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batches(Generic[Item, Result]):
    def __init__(
        self,
        process: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        size: int,
        wait: float,
    ) -> None:
        if size < 1:
            raise ValueError(f"a batch holds at least one delivery, not {size}")
        self._process = process
        self._size = size
        self._wait = wait
        self._filling: list[tuple[Item, asyncio.Future[Result]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._closed: deque[list[tuple[Item, asyncio.Future[Result]]]] = deque()
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """``item``'s result, once the batch it joined has been processed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._filling.append((item, future))
        if len(self._filling) >= self._size:
            self._close()
        elif self._timer is None and self._runner is None:
            self._timer = loop.call_later(self._wait, self._close)
        return await future

    def _close(self) -> None:
        """The filling batch goes to be processed; the next delivery starts a new one."""
        self._seal()
        if self._closed and self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run_closed())

    def _seal(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._filling:
            self._closed.append(self._filling)
            self._filling = []

    async def _run_closed(self) -> None:
        try:
            while self._closed:
                await self._run(self._closed.popleft())
                if not self._closed:
                    self._seal()  # what filled meanwhile goes now, without waiting
        finally:
            self._runner = None

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._process([item for item, _ in batch])
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
