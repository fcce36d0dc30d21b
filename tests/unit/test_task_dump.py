"""The task dump names every task and where it waits."""

from __future__ import annotations

import asyncio

from workers.runtime.task_dump import stacks


async def test_a_waiting_task_is_named_with_the_line_it_waits_on() -> None:
    never = asyncio.Event()

    async def waits_for_a_confirm_that_never_comes() -> None:
        await never.wait()

    task = asyncio.create_task(waits_for_a_confirm_that_never_comes(), name="stuck-batch")
    await asyncio.sleep(0)
    try:
        dump = stacks({task})
    finally:
        task.cancel()
    assert "task stuck-batch" in dump
    assert "waits_for_a_confirm_that_never_comes" in dump
    assert "await never.wait()" in dump
