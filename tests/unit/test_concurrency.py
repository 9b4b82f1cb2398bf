"""gather(): results in order, and a failure raised as itself rather than inside a group."""

from __future__ import annotations

import pytest
import trio

from mountfs.concurrency import BlockingRunner, gather
from mountfs.errors import NotFound


async def test_results_come_back_in_call_order() -> None:
    async def slow() -> str:
        await trio.sleep(0.02)
        return "slow"

    async def fast() -> str:
        return "fast"

    assert await gather(slow, fast) == ["slow", "fast"]


async def test_the_first_failure_is_raised_bare_and_the_rest_cancelled() -> None:
    finished: list[str] = []

    async def fails() -> str:
        raise NotFound("gone")

    async def waits() -> str:
        await trio.sleep(10)
        finished.append("waited")
        return "never"

    with pytest.raises(NotFound, match="gone"):
        await gather(fails, waits)
    assert finished == []


async def test_blocking_work_runs_in_threads_within_the_limit() -> None:
    import threading

    run = BlockingRunner(2)
    names = await gather(*[lambda: run(lambda: threading.current_thread().name) for _ in range(4)])
    assert all(name != threading.main_thread().name for name in names)
    assert run.slots.total == 2 and run.slots.in_use == 0


async def test_slots_are_taken_in_turn_and_a_cancelled_waiter_leaves_its_place() -> None:
    from mountfs.concurrency import Slots

    slots = Slots(1)
    order: list[str] = []

    async def hold(name: str, seconds: float, scope: trio.CancelScope | None = None) -> None:
        with scope or trio.CancelScope():
            await slots.acquire()
            order.append(name)
            try:
                await trio.sleep(seconds)
            finally:
                slots.release()

    cancelled = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, "first", 0.05)
        await trio.sleep(0.01)
        nursery.start_soon(hold, "gives up", 0, cancelled)
        await trio.sleep(0.01)
        nursery.start_soon(hold, "second", 0)
        await trio.sleep(0.01)
        assert slots.in_use == 1 and len(slots._waiting) == 2
        cancelled.cancel()
    assert order == ["first", "second"] and slots.free == 1 and not slots._waiting
