"""Where blocking work leaves the trio loop.

SDK calls, LMDB transactions and file I/O all block; the FUSE loop must never wait on them.
Each store and the cache disk get their own runner (its own thread budget), so a slow store
cannot starve the others of threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class BlockingRunner:
    """Runs blocking callables in worker threads, at most `threads` at a time."""

    def __init__(self, threads: int) -> None:
        self.limiter = trio.CapacityLimiter(threads)

    async def __call__(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
