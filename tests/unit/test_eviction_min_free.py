"""The daemon's eviction loop wakes when a commit leaves the cache disk short of cache.min_free,
not only on its periodic pass."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.cache.eviction import CacheLimits
from mountfs.config import MinFree
from tests.unit.cache_helpers import obj

BLOCK = 64 * 1024
DATA = os.urandom(8 * BLOCK)


@dataclass
class Disk:
    f_frsize: int
    f_blocks: int
    f_bavail: int


async def fetch(start: int, length: int) -> list[bytes]:
    data = DATA[start:start + length]
    return [data[i:i + BLOCK] for i in range(0, len(data), BLOCK)]


async def test_a_commit_short_of_free_space_wakes_eviction(tmp_path: Path) -> None:
    cache = BlockCache(str(tmp_path), BLOCK, memory_bytes=BLOCK)

    def statvfs(path: str) -> Disk:  # a 1 MiB disk that the cache's blocks fill up
        used = cache.index.totals().bytes
        return Disk(f_frsize=1024, f_blocks=1024, f_bavail=(1024 * 1024 - used) // 1024)

    # Free space must stay at 3/4 of the disk: at most 4 blocks of 64 KiB fit.
    cache.enable_eviction(CacheLimits(min_free=MinFree(size=768 * 1024)), interval=3600, statvfs=statvfs)
    target = obj("big")
    async with trio.open_nursery() as nursery:
        cache.nursery = nursery
        nursery.start_soon(cache.run_committer)
        nursery.start_soon(cache.run_eviction)
        for index in range(8):
            await cache.read(target, len(DATA), index * BLOCK, 10, fetch)
        with trio.fail_after(5):
            while cache.stats.evicted < 4 or cache._to_commit:
                await trio.sleep(0.01)
        assert cache.index.totals().bytes <= 4 * BLOCK
        nursery.cancel_scope.cancel()
    cache.close()
