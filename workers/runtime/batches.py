"""Deliveries of one queue gathered into batches, so that a transaction carries many.

    batches = Batches(process, size=10, wait=0.002)
    outcome = await batches.submit(delivery)     # from each delivery's own task

FastStream runs a task per delivery (up to the prefetch count at once). Each submits its
delivery and waits; a batch is handed to ``process`` as soon as it holds ``size``
deliveries, or ``wait`` seconds after its first arrived, whichever comes first, and every
waiting task then gets its own delivery's result. Batches are processed concurrently, so
with a prefetch of twice the batch size one batch fills while the other commits.
"""

from __future__ import annotations

import asyncio
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
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """``item``'s result, once the batch it joined has been processed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._filling.append((item, future))
        if len(self._filling) >= self._size:
            self._close()
        elif self._timer is None:
            self._timer = loop.call_later(self._wait, self._close)
        return await future

    def _close(self) -> None:
        """The filling batch goes to be processed; the next delivery starts a new one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._filling = self._filling, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)  # held until done, so it cannot be collected midway
            task.add_done_callback(self._running.discard)

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
