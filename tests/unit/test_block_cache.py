"""The block cache: single-flight, persistence, ETag in the key, crash safety, integrity."""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable
from typing import Any

import pytest
import trio

from mountfs.backends.base import ObjectId
from mountfs.cache.block_cache import BlockCache, PageCachePoll
from mountfs.cache.blocks import TEMP_SUFFIX, BlockFiles
from mountfs.cache.index import block_key
from mountfs.errors import Offline, Stale, StoreUnavailable

BLOCK = 64 * 1024
DATA = bytes(range(256)) * (BLOCK * 3 // 256) + b"tail"  # three blocks and a bit
OBJ = ObjectId("memory", "mem", "dir/file.bin", "etag-1")


class Source:
    """A store stand-in that counts fetches and can be slowed down."""

    def __init__(self, data: bytes = DATA, delay: float = 0.0, piece: int = BLOCK) -> None:
        self.data = data
        self.delay = delay
        self.piece = piece
        self.fetches: list[tuple[int, int]] = []

    async def fetch(self, start: int, length: int) -> list[bytes]:
        self.fetches.append((start, length))
        if self.delay:
            await trio.sleep(self.delay)
        data = self.data[start:start + length]
        return [data[i:i + self.piece] for i in range(0, len(data), self.piece)]


def make_cache(path: str, memory: int = 1 << 20) -> BlockCache:
    return BlockCache(path, BLOCK, memory)


async def test_reads_exact_ranges_across_blocks(tmp_path: os.PathLike[str]) -> None:
    cache, source = make_cache(str(tmp_path)), Source()
    for offset, length in [(0, 10), (BLOCK - 5, 10), (BLOCK - 1, 2 * BLOCK + 2), (len(DATA) - 3, 100),
                           (len(DATA), 10), (len(DATA) + 5, 10), (0, len(DATA))]:
        assert await cache.read(OBJ, len(DATA), offset, length, source.fetch) == DATA[offset:offset + length]
    assert sorted(set(source.fetches)) == [(0, BLOCK), (BLOCK, BLOCK), (2 * BLOCK, BLOCK), (3 * BLOCK, 4)]
    cache.close()


async def test_two_readers_of_one_block_fetch_it_once(tmp_path: os.PathLike[str]) -> None:
    cache, source = make_cache(str(tmp_path)), Source(delay=0.05)
    results: list[bytes] = []

    async def reader() -> None:
        results.append(await cache.read(OBJ, len(DATA), 100, 1000, source.fetch))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(reader)
    assert results == [DATA[100:1100]] * 5
    assert source.fetches == [(0, BLOCK)]
    assert cache.stats.misses == 1
    assert cache.stats.shared == 4
    cache.close()


async def test_a_failed_fetch_reaches_every_waiter_and_is_retried_later(tmp_path: os.PathLike[str]) -> None:
    cache = make_cache(str(tmp_path))
    calls = 0

    async def failing(start: int, length: int) -> bytes:
        nonlocal calls
        calls += 1
        await trio.sleep(0.02)
        raise Stale("changed")

    errors: list[BaseException] = []

    async def reader() -> None:
        try:
            await cache.read(OBJ, len(DATA), 0, 10, failing)
        except Stale as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(reader)
    assert len(errors) == 2 and calls == 1
    assert await cache.read(OBJ, len(DATA), 0, 10, Source().fetch) == DATA[:10]
    cache.close()


async def test_blocks_survive_a_restart_without_touching_the_store(tmp_path: os.PathLike[str]) -> None:
    first = make_cache(str(tmp_path))
    await first.read(OBJ, len(DATA), 0, len(DATA), Source().fetch)
    first.close()
    second, source = make_cache(str(tmp_path)), Source()
    assert await second.read(OBJ, len(DATA), 0, len(DATA), source.fetch) == DATA
    assert source.fetches == []
    assert second.stats.hits == 4 and second.stats.misses == 0
    totals = await second.totals()
    assert (totals.blocks, totals.bytes) == (4, len(DATA))
    second.close()


async def test_a_new_etag_never_serves_old_bytes(tmp_path: os.PathLike[str]) -> None:
    cache = make_cache(str(tmp_path))
    await cache.read(OBJ, len(DATA), 0, 10, Source().fetch)
    changed = ObjectId(OBJ.store, OBJ.bucket, OBJ.key, "etag-2")
    new_data = b"x" * len(DATA)
    source = Source(new_data)
    assert await cache.read(changed, len(new_data), 0, 10, source.fetch) == b"x" * 10
    assert source.fetches == [(0, BLOCK)]
    assert block_key(OBJ, BLOCK, 0) != block_key(changed, BLOCK, 0)
    cache.close()


async def test_a_short_fetch_is_stale_not_served(tmp_path: os.PathLike[str]) -> None:
    cache = make_cache(str(tmp_path))
    with pytest.raises(Stale, match="expected 65536 bytes"):
        await cache.read(OBJ, len(DATA), 0, 10, Source(DATA[:100]).fetch)
    cache.close()


async def test_a_block_file_without_its_record_is_never_served(tmp_path: os.PathLike[str]) -> None:
    # What kill -9 between writing a block and committing it leaves: bytes but no record.
    files = BlockFiles(str(tmp_path))
    files.write(block_key(OBJ, BLOCK, 0), b"\0" * BLOCK)
    cache, source = make_cache(str(tmp_path)), Source()
    assert await cache.read(OBJ, len(DATA), 0, 10, source.fetch) == DATA[:10]
    assert source.fetches == [(0, BLOCK)]
    cache.close()


async def test_orphan_temp_files_of_dead_writers_are_removed(tmp_path: os.PathLike[str]) -> None:
    files = BlockFiles(str(tmp_path))
    path = files.path(block_key(OBJ, BLOCK, 0))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    dead = f"{path}.999999999.1{TEMP_SUFFIX}"
    alive = f"{path}.1.2{TEMP_SUFFIX}"  # pid 1 is always running
    for name in (dead, alive):
        with open(name, "wb") as f:
            f.write(b"half a block")
    cache = make_cache(str(tmp_path))
    assert await cache.startup() == 1
    assert not os.path.exists(dead) and os.path.exists(alive)
    cache.close()


async def test_a_corrupt_block_is_dropped_and_fetched_again(tmp_path: os.PathLike[str]) -> None:
    first = make_cache(str(tmp_path))
    await first.read(OBJ, len(DATA), 0, 10, Source().fetch)
    first.close()
    path = BlockFiles(str(tmp_path)).path(block_key(OBJ, BLOCK, 0))
    with open(path, "r+b") as f:
        f.write(b"garbage")
    second, source = make_cache(str(tmp_path)), Source()
    assert await second.read(OBJ, len(DATA), 0, 10, source.fetch) == DATA[:10]
    assert source.fetches == [(0, BLOCK)]
    assert second.stats.corrupt == 1
    second.close()


async def test_memory_layer_stays_within_its_budget(tmp_path: os.PathLike[str]) -> None:
    cache = make_cache(str(tmp_path), memory=2 * BLOCK)
    await cache.read(OBJ, len(DATA), 0, len(DATA), Source().fetch)
    assert cache._memory_bytes <= 2 * BLOCK
    cache.close()


async def test_access_times_are_batched_into_the_index(tmp_path: os.PathLike[str]) -> None:
    first = make_cache(str(tmp_path))
    await first.read(OBJ, len(DATA), 0, 10, Source().fetch)
    first.close()
    before = dict(make_cache_index_records(str(tmp_path)))
    second = make_cache(str(tmp_path), memory=0)
    await trio.sleep(0.01)
    await second.read(OBJ, len(DATA), 0, 10, Source().fetch)
    second.close()
    after = dict(make_cache_index_records(str(tmp_path)))
    key = block_key(OBJ, BLOCK, 0)
    assert after[key].last_access > before[key].last_access


def make_cache_index_records(path: str) -> list[tuple[bytes, object]]:
    from mountfs.cache.index import CacheIndex

    index = CacheIndex(path)
    try:
        return list(index.iter_blocks())
    finally:
        index.close()


async def test_background_persistence_commits_in_batches_and_survives_restart(
        tmp_path: os.PathLike[str]) -> None:
    cache, source = make_cache(str(tmp_path)), Source()
    async with trio.open_nursery() as nursery:
        cache.nursery = nursery
        nursery.start_soon(cache.run_committer)
        assert await cache.read(OBJ, len(DATA), 0, len(DATA), source.fetch) == DATA
        while (await cache.totals()).blocks < 4:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    cache.close()
    again, fresh = make_cache(str(tmp_path)), Source()
    assert await again.read(OBJ, len(DATA), 0, len(DATA), fresh.fetch) == DATA
    assert fresh.fetches == []
    again.close()


async def test_small_blocks_waiting_for_the_disk_are_written_in_one_worker_call(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    cache = make_cache(str(tmp_path))
    threads = _count_threads(cache, monkeypatch)
    first_write_may_end = threading.Event()
    real_write = cache.files.write

    def slow_first_write(key: bytes, data: object) -> tuple[int, ...]:
        if key == block_key(objects[0], BLOCK, 0):
            first_write_may_end.wait(10)
        return real_write(key, data)  # type: ignore[arg-type]

    monkeypatch.setattr(cache.files, "write", slow_first_write)
    objects = [ObjectId("memory", "mem", f"small/{i}", "etag-1") for i in range(6)]
    async with trio.open_nursery() as nursery:
        cache.nursery = nursery  # no committer: the records stay pending, in memory
        for obj in objects:
            await cache.get_block(obj, len(DATA), 0, Source().fetch, on_disk_checked=True)
            await trio.sleep(0.01)  # the writer, busy with the first block, leaves the rest queued
        first_write_may_end.set()
    assert threads[0] == 2, "the first block, then the five that waited for it, in one hop"
    assert len(cache._to_commit) == 6 and cache._writers == 0
    cache.close()
    again, fresh = make_cache(str(tmp_path)), Source()
    for obj in objects:
        assert await again.read(obj, len(DATA), 0, 10, fresh.fetch) == DATA[:10]
    assert fresh.fetches == []
    again.close()


async def test_a_block_that_cannot_be_written_frees_its_slot_and_is_left_out(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mountfs.cache import block_cache

    cache = make_cache(str(tmp_path))
    real_write = cache.files.write

    def full_disk_for_block_1(key: bytes, data: object) -> tuple[int, ...]:
        if key == block_key(OBJ, BLOCK, 1):
            raise block_cache.NoSpace("cache disk full")
        return real_write(key, data)  # type: ignore[arg-type]

    monkeypatch.setattr(cache.files, "write", full_disk_for_block_1)
    async with trio.open_nursery() as nursery:
        cache.nursery = nursery
        assert await cache.read(OBJ, len(DATA), 0, len(DATA), Source().fetch) == DATA
    assert sorted(key for _, key, _ in cache._to_commit) == sorted(
        block_key(OBJ, BLOCK, i) for i in (0, 2, 3))
    assert cache._persist_slots.value == block_cache.PERSIST_BACKLOG and cache._eviction_wanted.is_set()
    cache.close()


async def test_records_still_pending_at_close_are_committed(tmp_path: os.PathLike[str]) -> None:
    cache = make_cache(str(tmp_path))
    async with trio.open_nursery() as nursery:
        cache.nursery = nursery  # no committer running: records wait in memory
        await cache.read(OBJ, len(DATA), 0, 10, Source().fetch)
        while not cache._to_commit:
            await trio.sleep(0.01)
    cache.close()
    again, fresh = make_cache(str(tmp_path)), Source()
    assert await again.read(OBJ, len(DATA), 0, 10, fresh.fetch) == DATA[:10]
    assert fresh.fetches == []
    again.close()


def test_block_files_verify_only_the_chunks_a_read_touches(tmp_path: os.PathLike[str]) -> None:
    from mountfs.cache.blocks import CHUNK, CorruptBlock

    files = BlockFiles(str(tmp_path))
    data = os.urandom(4 * CHUNK + 100)
    key = block_key(OBJ, BLOCK, 7)
    crcs = files.write(key, data)
    assert len(crcs) == 5
    assert files.read(key, len(data), crcs) == data
    assert files.read(key, len(data), crcs, CHUNK - 3, CHUNK + 3) == data[CHUNK - 3:CHUNK + 3]
    assert files.read(key, len(data), crcs, 4 * CHUNK, len(data)) == data[4 * CHUNK:]
    with open(files.path(key), "r+b") as f:
        f.seek(3 * CHUNK + 10)
        f.write(b"\0garbage\0")
    assert files.read(key, len(data), crcs, 0, 100) == data[:100], "other chunks still verify"
    with pytest.raises(CorruptBlock, match="chunk 3"):
        files.read(key, len(data), crcs, 3 * CHUNK, 3 * CHUNK + 1)
    with open(files.path(key), "ab") as f:
        f.write(b"x")
    with pytest.raises(CorruptBlock, match="wrong length"):
        files.read(key, len(data), crcs, 0, 10)


async def test_small_reads_of_a_cached_block_do_not_load_it_whole(tmp_path: os.PathLike[str]) -> None:
    big_block = 1 << 20
    data = os.urandom(3 * big_block)
    first = BlockCache(str(tmp_path), big_block, 8 << 20)
    await first.read(OBJ, len(data), 0, len(data), Source(data, piece=big_block).fetch)
    first.close()
    second, source = BlockCache(str(tmp_path), big_block, 8 << 20), Source(data, piece=big_block)
    for offset in (5, big_block + 70_000, 2 * big_block + 3):
        assert await second.read(OBJ, len(data), offset, 4096, source.fetch) == data[offset:offset + 4096]
    assert source.fetches == [] and second.stats.hits == 3
    assert second._memory_bytes == 0, "served from the block files, not loaded into memory"
    second.close()


async def test_warm_reads_of_an_open_block_skip_the_index_and_worker_threads(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    big_block = 1 << 20
    data = os.urandom(2 * big_block)
    first = BlockCache(str(tmp_path), big_block, 8 << 20)
    await first.read(OBJ, len(data), 0, len(data), Source(data, piece=big_block).fetch)
    first.close()
    cache = BlockCache(str(tmp_path), big_block, 0)  # no memory layer: every read is a disk read
    lookups: list[bytes] = []
    lookup = cache.index.lookup
    monkeypatch.setattr(cache.index, "lookup", lambda key: lookups.append(key) or lookup(key))
    offsets = [5, 300_000, 70_000, 900_000, big_block + 4096, big_block + 800_000]
    for offset in offsets:
        assert await cache.read(OBJ, len(data), offset, 4096, Source().fetch) == data[offset:offset + 4096]
    # per block: a lookup on the loop (a miss needs no thread), one in the thread that opens its
    # file (the record may have gone meanwhile); then its open file serves
    assert len(lookups) == 4
    threads = 0
    real_io = cache._io

    async def counted_io(*args: object) -> object:
        nonlocal threads
        threads += 1
        return await real_io(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(cache, "_io", counted_io)
    for offset in offsets:  # their pages are in the page cache now
        assert await cache.read(OBJ, len(data), offset, 4096, Source().fetch) == data[offset:offset + 4096]
    assert threads == 0, "page-cached reads of an open block are served on the loop"
    cache.close()


async def test_a_block_the_cache_lacks_is_told_without_a_worker_thread(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold miss goes straight to the store: only the fetch and the write of what it brought
    take worker threads, not the look at the disk before them (a read of the index's memory map)."""
    data = os.urandom(3 * BLOCK)
    cache = BlockCache(str(tmp_path), BLOCK, 0)
    calls: list[str] = []
    real_io = cache._io

    async def counted_io(fn: Any, *args: object) -> object:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await real_io(fn, *args)

    monkeypatch.setattr(cache, "_io", counted_io)
    assert await cache.read(OBJ, len(data), BLOCK + 10, 4096, Source(data).fetch, random=True) == \
        data[BLOCK + 10:BLOCK + 10 + 4096]
    assert "_open_and_read" not in calls and "_load_many" not in calls, calls
    cache.close()


async def test_corruption_found_in_an_open_block_drops_it_and_fetches_again(
        tmp_path: os.PathLike[str]) -> None:
    from mountfs.cache.blocks import CHUNK

    data = os.urandom(4 * CHUNK)
    first = BlockCache(str(tmp_path), len(data), 8 << 20)
    await first.read(OBJ, len(data), 0, len(data), Source(data, piece=len(data)).fetch)
    first.close()
    cache, source = BlockCache(str(tmp_path), len(data), 0), Source(data, piece=len(data))
    assert await cache.read(OBJ, len(data), 10, 100, source.fetch) == data[10:110]  # opens the block
    with open(cache.files.path(block_key(OBJ, BLOCK, 0)), "r+b") as f:
        f.seek(2 * CHUNK + 10)
        f.write(b"\0garbage\0")
    assert await cache.read(OBJ, len(data), 2 * CHUNK, 100, source.fetch) == data[2 * CHUNK:2 * CHUNK + 100]
    assert cache.stats.corrupt == 1 and source.fetches == [(0, len(data))]
    cache.close()


async def test_a_run_of_blocks_is_one_request_for_what_is_neither_in_memory_nor_on_disk(
        tmp_path: os.PathLike[str]) -> None:
    data = os.urandom(8 * BLOCK)
    first = make_cache(str(tmp_path))
    await first.read(OBJ, len(data), 2 * BLOCK, 10, Source(data).fetch)  # block 2 on disk
    first.close()
    cache, source = make_cache(str(tmp_path)), Source(data, delay=0.01)
    await cache.read(OBJ, len(data), 5 * BLOCK, 10, source.fetch)  # block 5 in memory
    source.fetches.clear()
    results: list[bytes] = []

    async def reader() -> None:
        results.append(bytes(await cache.read(OBJ, len(data), 3 * BLOCK + 7, BLOCK, source.fetch)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.get_run, OBJ, len(data), 0, 8, source.fetch)
        await trio.sleep(0)
        nursery.start_soon(reader)
    assert source.fetches == [(0, 2 * BLOCK), (3 * BLOCK, 2 * BLOCK), (6 * BLOCK, 2 * BLOCK)]
    assert results == [data[3 * BLOCK + 7:4 * BLOCK + 7]], "the reader joined the run in flight"
    assert cache.stats.shared >= 1
    assert all(cache.is_resident(OBJ, i) for i in range(8))
    cache.close()


async def test_a_failed_run_reaches_the_readers_waiting_on_any_of_its_blocks(
        tmp_path: os.PathLike[str]) -> None:
    cache = make_cache(str(tmp_path))
    started = trio.Event()

    async def failing(start: int, length: int) -> list[bytes]:
        started.set()
        await trio.sleep(0.01)
        raise Stale("changed")

    async def reader() -> None:
        with pytest.raises(Stale):
            await cache.read(OBJ, len(DATA), 2 * BLOCK, 10, Source().fetch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_expect_stale, cache.get_run(OBJ, len(DATA), 0, 4, failing))
        await started.wait()
        nursery.start_soon(reader)
    assert not cache._in_flight
    assert await cache.read(OBJ, len(DATA), 2 * BLOCK, 10, Source().fetch) == DATA[2 * BLOCK:2 * BLOCK + 10]
    cache.close()


@pytest.mark.parametrize("error", [StoreUnavailable("GET: 503 SlowDown (gave up after 6 attempt(s))"),
                                   Offline("the store is offline")])
async def test_a_reader_waiting_on_a_fetch_ahead_that_ran_out_of_retries_asks_the_store_itself(
        tmp_path: os.PathLike[str], error: StoreUnavailable) -> None:
    cache, source = make_cache(str(tmp_path)), Source()
    started = trio.Event()

    async def failing(start: int, length: int) -> list[bytes]:
        started.set()
        await trio.sleep(0.01)
        raise error

    async def ahead() -> None:
        with pytest.raises(StoreUnavailable):
            await cache.get_run(OBJ, len(DATA), 0, 4, failing)

    got: list[bytes | BaseException] = []

    async def reader() -> None:
        try:
            got.append(bytes(await cache.read(OBJ, len(DATA), 2 * BLOCK, 10, source.fetch)))
        except StoreUnavailable as exc:
            got.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ahead)
        await started.wait()
        nursery.start_soon(reader)
    if isinstance(error, Offline):  # known down: asking again would only wait to fail
        assert got == [error] and source.fetches == []
    else:  # the prefetch's bad luck is not the reader's: it retries on its own budget
        assert got == [DATA[2 * BLOCK:2 * BLOCK + 10]] and source.fetches == [(2 * BLOCK, BLOCK)]
    cache.close()


async def _expect_stale(call: Awaitable[None]) -> None:
    with pytest.raises(Stale):
        await call


async def test_commits_are_gathered_and_totals_count_what_waits(tmp_path: os.PathLike[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Records of blocks just written are committed together (one fdatasync for many), a moment
    later; `totals` (what `mountfs status` shows) counts those still waiting too."""
    from mountfs.cache import block_cache

    monkeypatch.setattr(block_cache, "COMMIT_DELAY", 30.0)
    cache = make_cache(str(tmp_path))
    async with trio.open_nursery() as nursery:
        cache.nursery = nursery
        nursery.start_soon(cache.run_committer)
        assert await cache.read(OBJ, len(DATA), 0, len(DATA), Source().fetch) == DATA
        with trio.fail_after(10):
            while len(cache._to_commit) < 4:  # written; the committer waits for more
                await trio.sleep(0.01)
        assert len(cache._to_commit) == 4 and cache.index.totals().blocks == 0
        assert (await cache.totals()).blocks == 4
        nursery.cancel_scope.cancel()
    cache.close()


def test_new_caches_use_crc32c_in_16k_chunks_and_old_ones_keep_theirs(tmp_path: os.PathLike[str]) -> None:
    import zlib
    from pathlib import Path

    import google_crc32c

    fresh = BlockFiles(os.path.join(tmp_path, "new"))
    key = block_key(OBJ, BLOCK, 0)
    expected = (google_crc32c.value(b"x" * 16384),) * 4 + (google_crc32c.value(b"x" * 4464),)
    assert fresh.write(key, b"x" * 70_000) == expected
    again = BlockFiles(os.path.join(tmp_path, "new"))  # the CHECKSUM file says so
    assert (again.checksum, again.chunk) == (fresh.checksum, 16384)

    earlier = Path(tmp_path, "earlier", "blocks")  # crc32c in 64 KiB chunks, as mountfs wrote before
    earlier.mkdir(parents=True)
    (earlier / "CHECKSUM").write_text("crc32c\n")
    sixty_four = BlockFiles(os.path.join(tmp_path, "earlier"))
    assert sixty_four.chunk == 65536
    assert sixty_four.write(key, b"x" * 70_000) == (google_crc32c.value(b"x" * 65536),
                                                     google_crc32c.value(b"x" * 4464))
    assert sixty_four.read(key, 70_000, sixty_four.write(key, b"x" * 70_000), 65530, 65540) == b"x" * 10

    old_root = Path(tmp_path, "old", "blocks")  # a cache written before the CHECKSUM file: crc32
    (old_root / key.hex()[:2]).mkdir(parents=True)
    (old_root / key.hex()[:2] / key.hex()).write_bytes(b"y" * 100)
    old = BlockFiles(os.path.join(tmp_path, "old"))
    assert old.checksum is zlib.crc32
    assert old.read(key, 100, (zlib.crc32(b"y" * 100),)) == b"y" * 100
    assert (old_root / "CHECKSUM").read_text().strip() == "crc32"

    (old_root / "CHECKSUM").write_text("sha999\n")
    with pytest.raises(ValueError, match="unknown block checksum 'sha999'"):
        BlockFiles(os.path.join(tmp_path, "old"))


async def test_a_block_written_but_not_yet_committed_is_read_from_disk(tmp_path: os.PathLike[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory before its record is committed, a block is still found on disk, not fetched
    again (a sequential read of 1 GiB once fetched one block twice)."""
    from mountfs.cache import block_cache

    monkeypatch.setattr(block_cache, "COMMIT_DELAY", 30.0)
    cache = make_cache(str(tmp_path), memory=BLOCK)  # room for one block in memory
    first, again = Source(), Source()
    async with trio.open_nursery() as nursery:
        cache.nursery = nursery
        nursery.start_soon(cache.run_committer)
        assert await cache.read(OBJ, len(DATA), 0, len(DATA), first.fetch) == DATA
        with trio.fail_after(10):
            while len(cache._to_commit) < 4:
                await trio.sleep(0.01)
        assert cache.index.totals().blocks == 0  # nothing committed yet
        assert await cache.read(OBJ, len(DATA), 0, len(DATA), again.fetch) == DATA
        assert again.fetches == []
        nursery.cancel_scope.cancel()
    cache.close()


async def _opened_cache(tmp_path: os.PathLike[str], data: bytes, block_size: int) -> BlockCache:
    """A cache whose blocks of `data` are on disk, with no memory layer, each block opened once."""
    first = BlockCache(str(tmp_path), block_size, 8 << 20)
    await first.read(OBJ, len(data), 0, len(data), Source(data, piece=block_size).fetch)
    first.close()
    cache = BlockCache(str(tmp_path), block_size, 0)
    for offset in range(0, len(data), block_size):
        await cache.read(OBJ, len(data), offset, 10, Source().fetch)
    return cache


def _count_threads(cache: BlockCache, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real_io = cache._io

    async def counted_io(*args: object) -> object:
        calls[0] += 1
        return await real_io(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(cache, "_io", counted_io)
    return calls


async def test_a_small_read_that_misses_the_page_cache_waits_for_it_on_the_loop(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mountfs.cache import blocks

    data = os.urandom(2 * BLOCK)
    cache = await _opened_cache(tmp_path, data, BLOCK)
    threads = _count_threads(cache, monkeypatch)
    misses = {"left": 0}
    real_nowait = blocks.OpenBlock.read_nowait

    def slow_disk(self: blocks.OpenBlock, start: int, end: int) -> object:
        if misses["left"]:
            misses["left"] -= 1
            return None  # the disk read is still under way
        return real_nowait(self, start, end)

    monkeypatch.setattr(blocks.OpenBlock, "read_nowait", slow_disk)
    for offset in (100, BLOCK + 5000, 30_000):
        misses["left"] = 3
        assert await cache.read(OBJ, len(data), offset, 4096, Source().fetch) == data[offset:offset + 4096]
        assert misses["left"] == 0
    assert threads[0] == 0, "the pages came while polling: no worker thread"

    cache.poll.budget = 0.0  # a disk slower than the budget: read in a thread, then stop polling
    misses["left"] = 10**6
    assert await cache.read(OBJ, len(data), 200, 4096, Source().fetch) == data[200:4296]
    assert threads[0] == 1
    asked = misses["left"]
    assert await cache.read(OBJ, len(data), 300, 4096, Source().fetch) == data[300:4396]
    assert threads[0] == 2 and asked - misses["left"] == 1, "one page-cache check, then the thread"
    cache.close()


def test_page_cache_polling_pauses_briefly_after_one_slow_read_and_longer_after_many() -> None:
    poll = PageCachePoll(min_backoff=2, max_backoff=8)

    def polled_reads(n: int) -> int:
        return sum(poll.wanted(4096) for _ in range(n))

    assert polled_reads(3) == 3 and not poll.wanted(1 << 20), "large reads never poll"
    poll.timed_out()  # one outlier of a fast disk: two reads in threads, then polling again
    assert polled_reads(3) == 1
    poll.succeeded()
    poll.timed_out()
    assert polled_reads(3) == 1, "a success in between keeps the pause short"
    for _ in range(4):  # a slow disk: every poll times out, the pause doubles up to the maximum
        poll.timed_out()
    assert polled_reads(9) == 1
    poll.succeeded()
    poll.timed_out()
    assert polled_reads(3) == 1


async def test_a_large_read_that_misses_the_page_cache_goes_to_a_thread_at_once(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mountfs.cache import blocks

    big_block = 1 << 20
    data = os.urandom(big_block)
    cache = await _opened_cache(tmp_path, data, big_block)
    threads = _count_threads(cache, monkeypatch)
    buffers: list[object] = []
    real_preadv = os.preadv

    def uncached(fd: int, buffers_: list[bytearray], offset: int, flags: int = 0) -> int:
        buffers.append(buffers_[0])
        if flags & os.RWF_NOWAIT:
            raise BlockingIOError
        return real_preadv(fd, buffers_, offset, flags)

    monkeypatch.setattr(blocks.os, "preadv", uncached)
    assert await cache.read(OBJ, len(data), 4096, 512 * 1024, Source().fetch) == data[4096:4096 + 512 * 1024]
    assert threads[0] == 1
    assert len(buffers) == 2 and buffers[0] is buffers[1], "the missed read's buffer is read into"
    cache.close()


async def test_a_read_cancelled_while_polling_keeps_its_block_open(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mountfs.cache import blocks

    data = os.urandom(BLOCK)
    cache = await _opened_cache(tmp_path, data, BLOCK)
    monkeypatch.setattr(blocks.OpenBlock, "read_nowait", lambda self, start, end: None)
    cache.poll.budget = 60.0
    with trio.move_on_after(0.05):
        await cache.read(OBJ, len(data), 100, 4096, Source().fetch)
    (block,) = cache._open_blocks.values()
    assert not block.closed
    cache.close()


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, (1 << 20) + 5, 3 << 20])
@pytest.mark.parametrize("kind", ["aligned", "bytes"])
def test_blocks_written_directly_read_back_whole(tmp_path: os.PathLike[str], size: int, kind: str) -> None:
    from mountfs.buffers import aligned

    files = BlockFiles(str(tmp_path))  # below DIRECT_MIN through the page cache, O_DIRECT above
    payload = os.urandom(size)
    data: bytes | memoryview = payload
    if kind == "aligned":  # as S3 GETs deliver them: written without a staging copy
        data = aligned(size)
        data[:] = payload
    key = block_key(OBJ, BLOCK, size)
    crcs = files.write(key, data)
    if not files.direct:
        pytest.skip("this file system refuses O_DIRECT: only the buffered fallback was tested")
    assert os.path.getsize(files.path(key)) == size
    assert files.read(key, size, crcs) == payload


def test_a_file_system_without_o_direct_gets_buffered_block_writes(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    real_open = os.open

    def no_direct(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    files = BlockFiles(str(tmp_path))
    monkeypatch.setattr(os, "open", no_direct)
    key, size = block_key(OBJ, BLOCK, 0), (2 << 20) + 3
    crcs = files.write(key, b"z" * size)
    assert not files.direct
    assert files.read(key, size, crcs) == b"z" * size


def test_an_error_writing_a_small_block_does_not_turn_o_direct_off(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def failing_write(fd: int, data: object) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    files = BlockFiles(str(tmp_path))
    monkeypatch.setattr(os, "write", failing_write)  # small blocks are written buffered
    with pytest.raises(OSError):
        files.write(block_key(OBJ, BLOCK, 0), b"z" * 4096)
    assert files.direct, "only a refused O_DIRECT write turns direct writes off"


def test_whole_large_blocks_are_read_directly_and_still_checked(tmp_path: os.PathLike[str]) -> None:
    from mountfs.cache.blocks import CorruptBlock

    files = BlockFiles(str(tmp_path))
    size = (2 << 20) + 100
    payload = os.urandom(size)
    key = block_key(OBJ, BLOCK, 0)
    crcs = files.write(key, payload)
    assert bytes(files.read_whole(key, size, crcs)) == payload
    with open(files.path(key), "r+b") as f:
        f.seek(size - 10)
        f.write(b"!")
    with pytest.raises(CorruptBlock, match="checksum"):
        files.read_whole(key, size, crcs)
    with pytest.raises(CorruptBlock, match="wrong length"):
        files.read_whole(key, size + 1, crcs)
    os.unlink(files.path(key))
    with pytest.raises(CorruptBlock, match="missing"):
        files.read_whole(key, size, crcs)


async def test_a_block_evicted_and_fetched_again_while_a_reader_opened_it_is_not_corrupt(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader looks the block up, eviction takes record and file, another reader stores the block
    again, and only then does the first open its file (gone): a plain miss, and the new copy stays."""
    first = make_cache(str(tmp_path))
    await first.read(OBJ, len(DATA), 0, 10, Source().fetch)
    first.close()
    cache = BlockCache(str(tmp_path), BLOCK, 0)
    key = block_key(OBJ, BLOCK, 0)
    real_open = cache.files.open

    def open_after_eviction_and_refetch(k: bytes, length: int, crcs: tuple[int, ...],
                                        present: int | None = None) -> object:
        monkeypatch.setattr(cache.files, "open", real_open)
        cache.index.remove(k)
        cache.files.remove(k)
        try:
            return real_open(k, length, crcs, present)
        finally:
            cache._store(OBJ, k, DATA[:BLOCK])  # the other reader's fetch lands meanwhile

    monkeypatch.setattr(cache.files, "open", open_after_eviction_and_refetch)
    source = Source()
    assert await cache.read(OBJ, len(DATA), 0, 10, source.fetch) == DATA[:10]
    assert cache.stats.corrupt == 0
    assert cache.index.lookup(key) is not None and os.path.exists(cache.files.path(key))
    cache.close()


async def test_a_block_stored_again_while_eviction_unlinks_its_old_file_keeps_record_and_file_together(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Eviction removes the record and the file; a reader that missed meanwhile fetches the block
    and stores it under the same name. The unlink must not take the new file from under its new
    record: a record never outlives its file."""
    from mountfs.cache.eviction import CacheLimits

    cache = BlockCache(str(tmp_path), BLOCK, 0)
    await cache.read(OBJ, len(DATA), 0, 10, Source().fetch)  # no nursery: stored at once
    key = block_key(OBJ, BLOCK, 0)
    assert cache.index.lookup(key) is not None
    cache.enable_eviction(CacheLimits(max_files=0), interval=3600)
    real_remove = cache.files.remove

    refetch: list[threading.Thread] = []

    def remove_after_a_refetch_landed(k: bytes) -> bool:
        if k == key and not refetch:  # the other reader's fetch, stored (or waiting to) just before
            refetch.append(threading.Thread(target=cache._store, args=(OBJ, k, DATA[:BLOCK])))
            refetch[0].start()
            refetch[0].join(timeout=0.5)
        return real_remove(k)

    monkeypatch.setattr(cache.files, "remove", remove_after_a_refetch_landed)
    await cache.evict_now()
    refetch[0].join()
    monkeypatch.setattr(cache.files, "remove", real_remove)
    if cache.index.lookup(key) is not None:
        assert os.path.exists(cache.files.path(key)), "a record whose file the eviction unlinked"
    source = Source()
    assert await cache.read(OBJ, len(DATA), 0, 10, source.fetch) == DATA[:10]
    assert cache.stats.corrupt == 0
    cache.close()


async def test_a_pending_block_whose_file_an_eviction_unlinked_is_fetched_again_not_corrupt(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A block that left memory while its first copy was written is fetched again by a reader that
    found no record yet. An eviction pass that began before the second copy was queued (so did not
    count it in use) evicts the first copy's record, and with it unlinks the file the second copy
    just put under the same key. The second copy's pending record then names no file: that block is
    not cached (its commit leaves it out), not corrupt, and is fetched again without a warning."""
    import logging

    from mountfs.cache import block_cache

    monkeypatch.setattr(block_cache, "COMMIT_DELAY", 30.0)
    cache, source = make_cache(str(tmp_path)), Source()
    key = block_key(OBJ, BLOCK, 0)

    async def pending() -> None:
        with trio.fail_after(10):
            while key not in cache._pending:
                await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        cache.nursery = nursery  # no committer: records wait until totals() commits them
        assert await cache.read(OBJ, len(DATA), 0, 10, source.fetch) == DATA[:10]
        await pending()
        await cache.totals()  # the first copy's record is committed
        cache._memory.clear()
        cache._memory_bytes = 0
        await cache.get_block(OBJ, len(DATA), 0, source.fetch, on_disk_checked=True)  # the second copy
        await pending()
        assert cache.index.remove(key, unlink=cache.files.remove)  # the pass, by the first record
        cache._memory.clear()
        cache._memory_bytes = 0
        with caplog.at_level(logging.WARNING, logger="mountfs.cache.block_cache"):
            assert await cache.read(OBJ, len(DATA), 0, 10, source.fetch) == DATA[:10]
        assert cache.stats.corrupt == 0 and "dropping cached block" not in caplog.text
        assert len(source.fetches) == 3
        await pending()
        await cache.totals()
        assert cache.index.lookup(key) is not None and cache.files.exists(key)
        nursery.cancel_scope.cancel()
    cache.close()


async def _open_then_corrupt(path: str) -> tuple[BlockCache, Source, bytes, bytes]:
    """A cache whose block is open (read once, its chunks checked) and then corrupted on disk."""
    data = os.urandom(BLOCK)
    first = BlockCache(path, BLOCK, 8 << 20)
    await first.read(OBJ, len(data), 0, len(data), Source(data).fetch)
    first.close()
    cache, source = BlockCache(path, BLOCK, 0), Source(data)
    cache.generation_check = 0.0  # look at the index's generation on every read
    key = block_key(OBJ, BLOCK, 0)
    assert await cache.read(OBJ, len(data), 0, 100, source.fetch) == data[:100]
    assert key in cache._open_blocks and not source.fetches
    with open(cache.files.path(key), "r+b") as f:
        f.write(b"\0garbage\0")
    return cache, source, data, key


async def test_an_open_block_that_verify_dropped_is_fetched_again_not_served(
        tmp_path: os.PathLike[str]) -> None:
    """Its chunk was checked when first read: without a look at the index, the open (now unlinked)
    file would serve the corrupt bytes until remount."""
    from mountfs.cache import maintenance

    cache, source, data, _ = await _open_then_corrupt(str(tmp_path))
    report = await trio.to_thread.run_sync(maintenance.verify_index, cache.index, cache.files)
    assert report.corrupt == 1
    assert await cache.read(OBJ, len(data), 0, 100, source.fetch) == data[:100]
    assert source.fetches == [(0, BLOCK)]
    cache.close()


async def test_an_open_block_another_process_dropped_and_wrote_again_is_not_served_stale(
        tmp_path: os.PathLike[str]) -> None:
    """Another daemon drops the record (unlinking the file) and writes the block again, with the
    same record: the open descriptor still reads the old, corrupt file, and must be closed."""
    cache, source, data, key = await _open_then_corrupt(str(tmp_path))

    def other_daemon() -> None:  # a second CacheIndex cannot be opened in this process
        cache.index.remove_many([key], unlink=cache.files.remove)
        cache._store(OBJ, key, data)  # written and recorded anew, as another daemon would

    await trio.to_thread.run_sync(other_daemon)
    assert await cache.read(OBJ, len(data), 0, 100, source.fetch) == data[:100]
    assert await cache.read(OBJ, len(data), 0, len(data), source.fetch) == data
    cache.close()


async def test_prune_all_closes_open_blocks(tmp_path: os.PathLike[str]) -> None:
    from mountfs.cache import maintenance

    cache, source, data, _ = await _open_then_corrupt(str(tmp_path))
    await trio.to_thread.run_sync(lambda: maintenance.prune_index(cache.index, cache.files, all=True))
    assert await cache.read(OBJ, len(data), 0, 100, source.fetch) == data[:100]
    assert source.fetches == [(0, BLOCK)]
    cache.close()


async def test_the_index_generation_changes_only_when_records_are_dropped(tmp_path: os.PathLike[str]) -> None:
    cache = make_cache(str(tmp_path))
    await cache.read(OBJ, len(DATA), 0, len(DATA), Source().fetch)
    cache._commit_pending()
    start = cache.index.generation()
    keys = [block_key(OBJ, BLOCK, index) for index in range(2)]
    cache.index.touch(keys)
    assert cache.index.generation() == start, "a touch or a commit drops nothing"
    cache.index.remove_many(keys)
    assert cache.index.generation() > start
    cache.close()
