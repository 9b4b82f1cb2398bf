"""Where blocking work leaves the trio loop.

SDK calls, LMDB transactions and file I/O all block; the FUSE loop must never wait on them.
Each store and the cache disk get their own runner (its own thread budget), so a slow store
cannot starve the others of threads.
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import outcome
import trio

T = TypeVar("T")


class Slots:
    """At most `total` holders at once, the rest waiting in turn: trio.CapacityLimiter without its
    bookkeeping. Each thread hop takes a slot, and `async with CapacityLimiter` (a checkpoint, a
    parking lot, borrower sets) was a fifth of the event loop's time in warm random reads."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._waiting: collections.deque[trio.lowlevel.Task] = collections.deque()

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.free > 0 and not self._waiting:
            self.free -= 1
            return
        task = trio.lowlevel.current_task()
        self._waiting.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiting.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)  # woken by release(), the slot handed over

    def release(self) -> None:
        if self._waiting:
            trio.lowlevel.reschedule(self._waiting.popleft())
        else:
            self.free += 1

    @property
    def in_use(self) -> int:
        return self.total - self.free


class BlockingRunner:
    """Runs blocking callables in worker threads, at most `threads` at a time.

    Straight on trio's thread cache (`start_thread_soon`) rather than `trio.to_thread.run_sync`:
    that one also renames the OS thread twice per call through ctypes, and the whole hop cost
    about 29 us against 19 us here; small-file reads make several hops per file. As with
    `to_thread`, a cancelled caller still waits for its call to finish.
    """

    def __init__(self, threads: int) -> None:
        self.slots = Slots(threads)

    async def __call__(self, fn: Callable[..., T], *args: object) -> T:
        await self.slots.acquire()
        try:
            task = trio.lowlevel.current_task()
            token = trio.lowlevel.current_trio_token()

            def deliver(result: outcome.Outcome[T]) -> None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(trio.lowlevel.reschedule, task, result)

            trio.lowlevel.start_thread_soon(functools.partial(fn, *args), deliver)
            value: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
            return value
        finally:
            self.slots.release()


async def gather(*calls: Callable[[], Awaitable[T]]) -> list[T]:
    """Run the calls concurrently and return their results in order.

    If any fails, the others are cancelled and the first failure is raised as itself, not inside
    an ExceptionGroup, so callers can catch the error types they know.
    """
    slots: dict[int, T] = {}

    async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
        slots[index] = await call()

    try:
        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                nursery.start_soon(run, index, call)
    except BaseExceptionGroup as group:
        raise _first_leaf(group) from None
    return [slots[i] for i in range(len(calls))]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
