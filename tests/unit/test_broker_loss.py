"""A broker connection lost to a missed heartbeat: aiormq cancels its reader task, and what
waited on it gets that task's CancelledError; ``broker_loss_as_connection_error`` makes it
a ConnectionError, unless the waiting task is itself being cancelled."""

from __future__ import annotations

import asyncio

import pytest

from workers.runtime.errors import broker_loss_as_connection_error


async def test_a_cancelled_reader_is_a_lost_connection_for_who_waited_on_it() -> None:
    reader: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    reader.cancel()  # as aiormq ends a connection whose heartbeat stopped
    with pytest.raises(ConnectionError, match="no heartbeat"):
        with broker_loss_as_connection_error():
            await reader


async def test_a_task_cancelled_itself_is_still_cancelled() -> None:
    started = asyncio.Event()

    async def waiting() -> None:
        with broker_loss_as_connection_error():
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(waiting())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
