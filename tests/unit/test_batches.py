"""How deliveries are gathered into batches (workers/runtime/batches.py), with no servers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from workers.runtime.batches import Batches


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    async def __call__(self, items: Sequence[int]) -> list[str]:
        self.batches.append(list(items))
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("the database went away")
        return [f"done {item}" for item in items]


async def test_a_full_batch_goes_at_once_and_each_waiter_gets_its_own_result() -> None:
    process = Recorder()
    batches = Batches(process, size=3, wait=60.0)  # the timer would never fire in time
    results = await asyncio.wait_for(
        asyncio.gather(*(batches.submit(n) for n in (1, 2, 3))), timeout=5
    )
    assert results == ["done 1", "done 2", "done 3"]
    assert process.batches == [[1, 2, 3]]


async def test_a_batch_that_does_not_fill_goes_when_its_wait_is_over() -> None:
    process = Recorder()
    batches = Batches(process, size=10, wait=0.01)
    assert await asyncio.wait_for(batches.submit(7), timeout=5) == "done 7"
    assert process.batches == [[7]]


async def test_deliveries_beyond_a_full_batch_start_the_next() -> None:
    process = Recorder()
    batches = Batches(process, size=2, wait=0.01)
    results = await asyncio.gather(*(batches.submit(n) for n in range(5)))
    assert results == [f"done {n}" for n in range(5)]
    assert process.batches == [[0, 1], [2, 3], [4]]


async def test_a_batch_that_fails_as_a_whole_fails_every_waiter() -> None:
    batches = Batches(Recorder(fail=True), size=2, wait=0.01)
    outcomes = await asyncio.gather(batches.submit(1), batches.submit(2), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [RuntimeError, RuntimeError]


def test_a_batch_holds_at_least_one_delivery() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Batches(Recorder(), size=0, wait=0.01)
