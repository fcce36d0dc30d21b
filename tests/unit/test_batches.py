"""How deliveries are gathered into batches (workers/runtime/batches.py), with no servers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from workers.runtime.batches import Batches, Turn


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    async def __call__(self, items: Sequence[int], turn: Turn) -> list[str]:
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


# --- Batches side by side (``in_flight``), and what stays in order. --------------------


class Orders:
    """A process whose items are order ids: it says which orders its batch decides about,
    then applies them (each waits on an event the test sets), then settles; it records when
    each step happened."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def __call__(self, items: Sequence[str], turn: Turn) -> list[str]:
        name = "+".join(items)
        self.events.append(f"start {name}")
        await turn.decide_about(set(items))
        self.events.append(f"apply {name}")
        await self.release.setdefault(name, asyncio.Event()).wait()
        turn.applied()
        await turn.settle_after_earlier()
        self.events.append(f"settle {name}")
        turn.settled()
        return list(items)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(5_000):  # 5 s
        if condition():
            return
        await asyncio.sleep(0.001)
    raise TimeoutError("the condition never held")


async def test_batches_of_different_orders_are_applied_side_by_side_and_settle_in_order() -> None:
    process = Orders()
    batches = Batches(process, size=1, wait=60.0, in_flight=2)
    first = asyncio.ensure_future(batches.submit("a"))
    second = asyncio.ensure_future(batches.submit("b"))
    await _until(lambda: "apply b" in process.events and "apply a" in process.events)
    process.release.setdefault("b", asyncio.Event()).set()  # the later one is done first...
    await asyncio.sleep(0.05)
    assert "settle b" not in process.events  # ...but settles only after the earlier one
    process.release.setdefault("a", asyncio.Event()).set()
    assert list(await asyncio.wait_for(asyncio.gather(first, second), 5)) == ["a", "b"]
    assert process.events.index("settle a") < process.events.index("settle b")


async def test_a_batch_that_shares_an_order_with_an_earlier_one_waits_until_it_applied() -> None:
    process = Orders()
    batches = Batches(process, size=2, wait=60.0, in_flight=2)
    first = [asyncio.ensure_future(batches.submit(order)) for order in ("a", "b")]
    second = [asyncio.ensure_future(batches.submit(order)) for order in ("b", "c")]
    await _until(lambda: "start b+c" in process.events and "apply a+b" in process.events)
    await asyncio.sleep(0.05)
    assert "apply b+c" not in process.events  # order b: not while the first holds it
    process.release.setdefault("a+b", asyncio.Event()).set()
    await _until(lambda: "apply b+c" in process.events)
    process.release.setdefault("b+c", asyncio.Event()).set()
    await asyncio.wait_for(asyncio.gather(*first, *second), 5)
    assert process.events.index("apply b+c") > process.events.index("apply a+b")


async def test_no_more_batches_than_in_flight_are_processed_at_once() -> None:
    process = Orders()
    batches = Batches(process, size=1, wait=60.0, in_flight=2)
    waiting = [asyncio.ensure_future(batches.submit(order)) for order in ("a", "b", "c")]
    await _until(lambda: "apply a" in process.events and "apply b" in process.events)
    await asyncio.sleep(0.05)
    assert "start c" not in process.events
    process.release.setdefault("a", asyncio.Event()).set()
    await _until(lambda: "start c" in process.events)
    for order in ("b", "c"):
        process.release.setdefault(order, asyncio.Event()).set()
    assert await asyncio.wait_for(asyncio.gather(*waiting), 5) == ["a", "b", "c"]


async def test_a_batch_that_cannot_name_its_orders_waits_for_every_earlier_one() -> None:
    loop = asyncio.get_running_loop()
    earlier = Turn(None)
    later = Turn(earlier)
    await earlier.decide_about({"a"})
    waiting = loop.create_task(later.decide_about(None))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    earlier.applied()
    await asyncio.wait_for(waiting, 5)
