"""Cached blocks give way: a copy in memory, or an idle open file, keeps no block file on disk;
blocks about to land make room before they do; a staged write that finds the cache disk full has
clean blocks evicted at once; and blocks fetched ahead that go unread are counted."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import lmdb
import pytest
import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.cache.blocks import BlockFiles
from mountfs.cache.eviction import CacheLimits, Evictor
from mountfs.cache.index import CacheIndex, block_key
from mountfs.config import MinFree
from tests.unit.cache_helpers import add_block, files_on_disk, obj

BLOCK = 64 * 1024
DATA = os.urandom(8 * BLOCK)
KB = 1000


class Store:
    """The object's bytes in blocks, counting what was fetched."""

    def __init__(self) -> None:
        self.fetched = 0

    async def fetch(self, start: int, length: int) -> list[bytes]:
        self.fetched += length
        data = DATA[start:start + length]
        return [data[i:i + BLOCK] for i in range(0, len(data), BLOCK)]


@dataclass
class Disk:
    f_frsize: int
    f_blocks: int
    f_bavail: int


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.01)


async def test_blocks_held_in_memory_do_not_keep_their_files(tmp_path: Path) -> None:
    cache = BlockCache(str(tmp_path), BLOCK, memory_bytes=len(DATA))
    cache.enable_eviction(CacheLimits(max_size=2 * BLOCK), interval=3600)
    store, target = Store(), obj("x")
    assert await cache.read(target, len(DATA), 0, len(DATA), store.fetch) == DATA  # stored at once
    assert len(cache._memory) == 8
    report = await cache.evict_now()
    assert report.satisfied and report.removed_blocks == 6
    assert sum(files_on_disk(cache.files).values()) <= 2 * BLOCK == cache.index.totals().bytes
    # The copies in memory stay, and serve without a fetch.
    assert await cache.read(target, len(DATA), 0, len(DATA), store.fetch) == DATA
    assert store.fetched == len(DATA)
    cache.close()


async def test_a_pass_that_kept_blocks_being_read_is_retried_soon(tmp_path: Path) -> None:
    cache = BlockCache(str(tmp_path), BLOCK, memory_bytes=0)
    store, target = Store(), obj("x")
    await cache.read(target, len(DATA), 0, len(DATA), store.fetch)
    cache.enable_eviction(CacheLimits(max_size=BLOCK // 2), interval=3600)  # no block fits
    oldest = block_key(target, BLOCK, 0)
    cache._reading[oldest] = 1  # being read from its file right now: kept
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.run_eviction)
        await wait_for(lambda: cache.stats.evicted == 7)
        assert cache.index.lookup(oldest) is not None
        del cache._reading[oldest]  # the read is over: the next pass comes soon, not an interval later
        await wait_for(lambda: cache.index.lookup(oldest) is None)
        nursery.cancel_scope.cancel()
    assert cache.index.totals().bytes == 0
    cache.close()


def test_blocks_about_to_land_make_room_under_max_size(tmp_path: Path) -> None:
    index, files = CacheIndex(str(tmp_path)), BlockFiles(str(tmp_path))
    keys = [add_block(index, files, f"f{n}", 0, KB, 1000.0 + n) for n in range(6)]
    report = Evictor(index, files).evict(CacheLimits(max_size=6 * KB), incoming=2 * KB)
    assert report.removed_blocks == 2 and set(report.keys) == set(keys[:2]) and report.satisfied
    index.close()


async def test_a_full_disk_makes_clean_blocks_give_way_at_once(tmp_path: Path) -> None:
    cache = BlockCache(str(tmp_path), BLOCK, memory_bytes=len(DATA))
    staged = [0]

    def statvfs(path: str) -> Disk:  # a disk of 16 blocks: the cache's blocks and staged data on it
        used = cache.index.totals().bytes + staged[0]
        return Disk(f_frsize=1024, f_blocks=16 * BLOCK // 1024, f_bavail=max(0, 16 * BLOCK - used) // 1024)

    cache.enable_eviction(CacheLimits(min_free=MinFree(percent=5.0)), interval=3600, statvfs=statvfs)
    store, target = Store(), obj("x")
    await cache.read(target, len(DATA), 0, len(DATA), store.fetch)  # 8 blocks, all in memory too
    staged[0] = 8 * BLOCK  # staged writes took the rest: not a byte free
    assert await cache.make_room(BLOCK)
    # The block wanted, and some to spare (an eighth of the disk), beyond 5%: four of the eight.
    assert cache.stats.room_made == cache.stats.evicted == 4
    assert statvfs("").f_bavail * 1024 >= BLOCK + 2 * BLOCK + 0.05 * 16 * BLOCK
    staged[0] = 16 * BLOCK - cache.index.totals().bytes  # full again: the rest go
    assert await cache.make_room(BLOCK)
    assert cache.index.totals().blocks == 0
    staged[0] = 16 * BLOCK  # full of staged data: nothing left to give way
    assert not await cache.make_room(BLOCK)
    assert await cache.read(target, len(DATA), 0, len(DATA), store.fetch) == DATA
    assert store.fetched == len(DATA), "blocks in memory kept serving"
    cache.close()


async def test_blocks_fetched_ahead_and_evicted_unread_are_counted(tmp_path: Path) -> None:
    cache = BlockCache(str(tmp_path), BLOCK, memory_bytes=2 * BLOCK)
    cache.enable_eviction(CacheLimits(max_files=0), interval=3600)
    store, target = Store(), obj("x")
    await cache.get_run(target, len(DATA), 0, 4, store.fetch)  # fetched ahead; 2 and 3 in memory
    await cache.read(target, len(DATA), 0, 10, store.fetch)  # block 0 read (from disk)
    await cache.read(target, len(DATA), 0, 10, store.fetch)
    await cache.evict_now()  # every file goes: block 1 had no other copy, 2 and 3 are in memory
    assert cache.stats.prefetched_unread == 1
    await cache.read(target, len(DATA), 2 * BLOCK, 10, store.fetch)  # block 2 read after all
    await cache.read(target, len(DATA), 4 * BLOCK, 10, store.fetch)  # pushes block 3 out of memory
    assert cache.stats.prefetched_unread == 2
    await cache.get_run(target, len(DATA), 6, 2, store.fetch)  # loaded or fetched ahead, then read
    await cache.read(target, len(DATA), 6 * BLOCK, 2 * BLOCK, store.fetch)
    await cache.evict_now()
    await cache.read(target, len(DATA), 0, 2 * BLOCK, store.fetch)
    assert cache.stats.prefetched_unread == 2
    cache.close()


class FullDisk:
    """An LMDB environment whose next write commits fail as on a disk full to the last byte
    (LMDB cannot grow its file even to drop records). Faking it: a test cannot fill a disk."""

    def __init__(self, env: lmdb.Environment, failures: int) -> None:
        self.env = env
        self.failures = failures

    def begin(self, **kwargs: object) -> object:
        txn = self.env.begin(**kwargs)  # type: ignore[arg-type]
        outer = self

        class Transaction:
            def __enter__(self) -> lmdb.Transaction:
                return txn

            def __exit__(self, kind: object, *rest: object) -> None:
                if kind is None and kwargs.get("write") and outer.failures:
                    outer.failures -= 1
                    txn.abort()
                    raise lmdb.DiskError("mdb_txn_commit: No space left on device")
                txn.__exit__(kind, *rest)  # type: ignore[arg-type]

        return Transaction()


def test_on_a_disk_too_full_for_the_index_the_files_go_first(tmp_path: Path) -> None:
    index, files = CacheIndex(str(tmp_path)), BlockFiles(str(tmp_path))
    keys = [add_block(index, files, f"f{n}", 0, KB, 1000.0 + n) for n in range(6)]
    env = index.env
    index.env = FullDisk(env, failures=1)  # type: ignore[assignment]
    report = Evictor(index, files).evict(CacheLimits(max_files=2))
    index.env = env
    assert report.removed_blocks == 4 and report.missing_files == 0 and report.satisfied
    assert {key for key, _ in index.iter_blocks()} == set(keys[4:])
    assert len(files_on_disk(files)) == 2
    index.env = FullDisk(env, failures=2)  # type: ignore[assignment]
    with pytest.raises(lmdb.DiskError):  # files freed and still no room: the pass fails
        Evictor(index, files).evict(CacheLimits(max_files=0))
    index.env = env
    index.close()


async def test_records_the_index_could_not_take_are_committed_later(tmp_path: Path) -> None:
    cache = BlockCache(str(tmp_path), BLOCK, memory_bytes=0)
    commit_many = cache.index.commit_many
    failures = [1]

    def full_once(blocks: object, present: object = None) -> object:
        if failures[0]:
            failures[0] -= 1
            raise lmdb.DiskError("mdb_txn_commit: No space left on device")
        return commit_many(blocks, present)  # type: ignore[arg-type]

    cache.index.commit_many = full_once  # type: ignore[method-assign,assignment]
    store, target = Store(), obj("x")
    async with trio.open_nursery() as nursery:
        cache.nursery = nursery
        nursery.start_soon(cache.run_committer)
        await cache.read(target, len(DATA), 0, len(DATA), store.fetch)
        await wait_for(lambda: not failures[0] and not cache._to_commit and not cache._pending)
        nursery.cancel_scope.cancel()
    assert cache.index.totals().blocks == 8
    cache.close()
