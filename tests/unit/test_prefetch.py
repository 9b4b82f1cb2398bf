"""Readahead: the per-handle pattern, and the scheduler's concurrency and memory bounds."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.memory import MemoryStore
from mountfs.cache.block_cache import BlockCache
from mountfs.cache.prefetch import PrefetchGroup, PrefetchScheduler, ReadPattern

BLOCK = 64 * 1024


def pattern(max_window: int = 8 * BLOCK) -> ReadPattern:
    return ReadPattern(BLOCK, max_window, tolerance=BLOCK)


def test_sequential_reads_double_the_window_up_to_the_maximum() -> None:
    p = pattern()
    windows = [p.observe(i * 4096, 4096) for i in range(6)]
    assert windows == [BLOCK, 2 * BLOCK, 4 * BLOCK, 8 * BLOCK, 8 * BLOCK, 8 * BLOCK]


def test_small_out_of_order_reads_still_count_as_sequential() -> None:
    p = pattern()
    for offset in (0, 8192, 4096, 16384, 12288, 20480):  # kernel readahead reorders a little
        assert p.observe(offset, 4096) > 0


def test_a_seek_resets_and_a_random_start_does_not_prefetch() -> None:
    p = pattern()
    for i in range(4):
        p.observe(i * 4096, 4096)
    assert p.observe(100 * BLOCK, 4096) == 0
    assert p.observe(100 * BLOCK + 4096, 4096) == 0, "one continuation is not yet a stream"
    assert p.observe(100 * BLOCK + 8192, 4096) == BLOCK, "sequential again from the new place"
    assert pattern().observe(50 * BLOCK, 4096) == 0


def test_a_big_random_read_split_into_adjacent_requests_does_not_prefetch() -> None:
    p = pattern()
    for offset in (37 * BLOCK + 12288, 5 * BLOCK + 4096, 81 * BLOCK):
        assert p.observe(offset, 128 * 1024) == 0
        assert p.observe(offset + 128 * 1024, 896 * 1024) == 0


def make(tmp_path: Path, latency: float = 0.0, concurrency: int = 4, max_bytes: int = 1 << 30,
         request_bytes: int = BLOCK) -> tuple[MemoryStore, BlockCache, PrefetchScheduler]:
    store = MemoryStore()
    store.latency = latency
    cache = BlockCache(str(tmp_path), BLOCK, 64 * BLOCK)
    return store, cache, PrefetchScheduler(cache, concurrency, max_bytes, request_bytes)


class CountingFetch:
    """Fetches one object through an AsyncStore, counting how many calls overlap."""

    def __init__(self, store: MemoryStore, key: str) -> None:
        self.store, self.key = AsyncStore(store, 8), key
        self.meta = store.head(key)
        self.obj = store.object_id(self.meta)
        self.running = self.most_at_once = 0

    async def __call__(self, start: int, length: int) -> list[bytes]:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            return await self.store.get_pieces(self.key, start, length, BLOCK, self.meta.etag)
        finally:
            self.running -= 1


async def test_prefetch_fetches_ahead_in_parallel_and_readers_join(tmp_path: Path) -> None:
    store, cache, scheduler = make(tmp_path, latency=0.05, concurrency=8)
    data = os.urandom(8 * BLOCK)
    store.put_object("f", data)
    fetch = CountingFetch(store, "f")
    async with trio.open_nursery() as nursery:
        scheduler.nursery = nursery
        scheduler.schedule(PrefetchGroup(), fetch.obj, len(data), 0, len(data), fetch)
        assert scheduler.active == 8
        assert await cache.read(fetch.obj, len(data), 0, len(data), fetch) == data
    assert store.calls["get_range"] == 8, "each block fetched once, readers joined the prefetches"
    assert fetch.most_at_once == 8, "the eight blocks were fetched in parallel, not one after another"
    assert (scheduler.active, scheduler.bytes_in_flight) == (0, 0)


async def test_concurrency_and_memory_bounds_hold(tmp_path: Path) -> None:
    store, _cache, scheduler = make(tmp_path, latency=0.01, concurrency=3, max_bytes=2 * BLOCK)
    store.put_object("f", os.urandom(10 * BLOCK))
    fetch = CountingFetch(store, "f")
    async with trio.open_nursery() as nursery:
        scheduler.nursery = nursery
        scheduler.schedule(PrefetchGroup(), fetch.obj, 10 * BLOCK, 0, 10 * BLOCK, fetch)
        assert scheduler.active == 2 and scheduler.bytes_in_flight == 2 * BLOCK
        scheduler.max_bytes = 100 * BLOCK
        scheduler.schedule(PrefetchGroup(), fetch.obj, 10 * BLOCK, 0, 10 * BLOCK, fetch)
        assert scheduler.active == 3, "never more than max_concurrency fetches"
    assert store.calls["get_range"] == 3 and fetch.most_at_once <= 3


async def test_closing_a_handle_stops_its_prefetches(tmp_path: Path) -> None:
    store, cache, scheduler = make(tmp_path, concurrency=4)
    meta = store.put_object("f", os.urandom(4 * BLOCK))
    obj = store.object_id(meta)
    release = trio.Event()

    async def slow_fetch(start: int, length: int) -> list[bytes]:
        await release.wait()
        return [b"x" * length]

    group = PrefetchGroup()
    async with trio.open_nursery() as nursery:
        scheduler.nursery = nursery
        scheduler.schedule(group, obj, 4 * BLOCK, 0, 4 * BLOCK, slow_fetch)
        assert scheduler.active == 4
        await trio.sleep(0.01)
        group.cancel()
        await trio.sleep(0.01)
        assert scheduler.active == 0
        scheduler.schedule(group, obj, 4 * BLOCK, 0, 4 * BLOCK, slow_fetch)
        assert scheduler.active == 0, "a closed handle schedules nothing"
    assert not any(cache.is_resident(obj, i) for i in range(4))


async def test_no_nursery_means_no_prefetch(tmp_path: Path) -> None:
    _store, _cache, scheduler = make(tmp_path)

    async def fetch(start: int, length: int) -> list[bytes]:
        raise AssertionError("must not fetch")

    from mountfs.backends.base import ObjectId

    scheduler.schedule(PrefetchGroup(), ObjectId("m", "b", "k", "e"), BLOCK, 0, BLOCK, fetch)
    assert scheduler.active == 0


def test_files_opened_in_listing_order_are_detected() -> None:
    from mountfs.cache.prefetch import DirectoryPattern

    in_order = DirectoryPattern()
    assert [in_order.observe(p) for p in (0, 1, 3, 2, 4, 6)] == [False, False, True, True, True, True]
    shuffled = DirectoryPattern()
    assert not any(shuffled.observe(p) for p in (500, 17, 920, 333, 48, 771))


async def test_blocks_ahead_are_fetched_in_runs_of_up_to_request_bytes(tmp_path: Path) -> None:
    store, cache, scheduler = make(tmp_path, concurrency=8, request_bytes=4 * BLOCK)
    data = os.urandom(10 * BLOCK)
    store.put_object("f", data)
    fetch = CountingFetch(store, "f")
    async with trio.open_nursery() as nursery:
        scheduler.nursery = nursery
        # Blocks 1-4 in one request, then 5-7: the window (to block 4) rounded up to a whole run.
        scheduler.schedule(PrefetchGroup(), fetch.obj, len(data), BLOCK, 5 * BLOCK, fetch)
        assert scheduler.active == 2 and scheduler.started == 7
    assert store.calls["get_range"] == 2
    assert all(cache.is_resident(fetch.obj, i) for i in range(1, 8))
    assert not cache.is_resident(fetch.obj, 8) and not cache.is_resident(fetch.obj, 0)
    assert await cache.read(fetch.obj, len(data), 0, len(data), fetch) == data


def test_a_stream_that_skips_ahead_stays_a_stream() -> None:
    """Two `cat`s of one file: the kernel's pages the other one filled never reach this handle, so
    its reads skip ahead; they are still a stream (whole blocks, a window ahead), not random reads."""
    p = pattern()
    for i in range(4):
        p.observe(i * 128 * 1024, 128 * 1024)
    assert not p.random
    window = p.observe(768 * 1024, 128 * 1024)  # 256 KiB on: the other reader read what lies between
    assert not p.random and window >= BLOCK
    assert p.observe(896 * 1024, 128 * 1024) >= BLOCK
    p.observe(40 * BLOCK, 4096)  # farther than the widest window: a seek
    assert p.random
