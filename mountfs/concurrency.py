"""Where blocking work leaves the trio loop.

SDK calls, LMDB transactions and file I/O all block; the FUSE loop must never wait on them.
Each store and the cache disk get their own runner (its own thread budget), so a slow store
cannot starve the others of threads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class BlockingRunner:
    """Runs blocking callables in worker threads, at most `threads` at a time."""

    def __init__(self, threads: int) -> None:
        self.limiter = trio.CapacityLimiter(threads)

    async def __call__(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)


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
