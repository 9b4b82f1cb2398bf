"""Cache limits: LRU eviction by size and file count, expiry, free disk space, in-use blocks kept,
the lru sub-db kept in step with the records, the daemon's eviction loop, and two processes
sharing one cache dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb
import pytest
import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.cache.blocks import BlockFiles
from mountfs.cache.eviction import CacheLimits, Evictor
from mountfs.cache.index import BlockRecord, CacheIndex, IndexTotals, block_key, split_lru_key
from mountfs.config import CacheConfig, MinFree
from tests.unit.cache_helpers import add_block, files_on_disk, ident, obj

KB = 1000
NOW = 1_000_000.0


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[tuple[CacheIndex, BlockFiles]]:
    index = CacheIndex(str(tmp_path))
    yield index, BlockFiles(str(tmp_path))
    index.close()


def lru_order(index: CacheIndex) -> list[bytes]:
    with index.env.begin(db=index.lru) as txn:
        return [split_lru_key(k)[1] for k, _ in txn.cursor()]


def fill(index: CacheIndex, files: BlockFiles, count: int, size: int = KB) -> list[bytes]:
    """`count` blocks, the first the least recently used."""
    return [add_block(index, files, f"f{n}", 0, size, NOW + n) for n in range(count)]


def assert_consistent(index: CacheIndex, files: BlockFiles) -> None:
    """The totals, the records, the lru sub-db and the files on disk all agree."""
    records = dict(index.iter_blocks())
    on_disk = files_on_disk(files)
    assert index.totals() == IndexTotals(len(records), sum(r.length for r in records.values()))
    assert {k.hex(): r.length for k, r in records.items()} == on_disk
    assert sorted(lru_order(index)) == sorted(records)
    assert index.counts()["lru"] == len(records)


# --- the lru sub-db ----------------------------------------------------------------------------


def test_lru_follows_commits_touches_and_removals(cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    a, b, c = fill(index, files, 3)
    assert lru_order(index) == [a, b, c]
    index.touch([a], when=NOW + 10)
    assert lru_order(index) == [b, c, a]
    index.touch([a], when=NOW + 5)  # never moved back: another daemon may have used it later
    assert index.lookup(a).last_access == NOW + 10  # type: ignore[union-attr]
    index.commit(ident("f1"), b, BlockRecord(KB, index.lookup(b).crcs, NOW + 20))  # type: ignore[union-attr]
    assert lru_order(index) == [c, a, b]
    index.remove(c)
    assert lru_order(index) == [a, b]
    files.remove(c)
    assert index.access_range() == (NOW + 10, NOW + 20)
    assert_consistent(index, files)


def test_removing_an_objects_last_block_drops_its_object_entry(cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    k0 = add_block(index, files, "obj", 0, KB, NOW)
    k1 = add_block(index, files, "obj", 1, KB, NOW)
    other = add_block(index, files, "obj-other", 0, KB, NOW)
    assert index.counts()["objects"] == 2
    index.remove(k0)
    assert index.counts()["objects"] == 2
    index.remove_many([k1, other])
    assert index.counts()["objects"] == 0


def test_an_index_written_before_the_lru_sub_db_gets_one_on_open(tmp_path: Path) -> None:
    index, files = CacheIndex(str(tmp_path)), BlockFiles(str(tmp_path))
    keys = fill(index, files, 3)
    with index.env.begin(write=True) as txn:  # as an older mountfs left it
        txn.drop(index.lru, delete=False)
        txn.delete(b"lru-v1", db=index.meta)
    index.close()
    index = CacheIndex(str(tmp_path))
    assert lru_order(index) == keys
    index.close()


# --- limits ------------------------------------------------------------------------------------


def test_max_size_evicts_least_recently_used_first(cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    keys = fill(index, files, 10)
    index.touch([keys[0]], when=NOW + 100)  # the oldest block, used again: now the youngest
    report = Evictor(index, files).evict(CacheLimits(max_size=6 * KB), now=NOW + 200)
    assert report.removed_blocks == 4 and report.removed_bytes == 4 * KB and report.satisfied
    assert set(report.keys) == set(keys[1:5])
    assert lru_order(index) == [*keys[5:], keys[0]]
    assert report.totals == index.totals() == IndexTotals(6, 6 * KB)
    assert_consistent(index, files)


def test_max_files_evicts_least_recently_used_first(cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    keys = fill(index, files, 10)
    report = Evictor(index, files).evict(CacheLimits(max_files=3), now=NOW + 200)
    assert list(report.keys) == keys[:7]
    assert lru_order(index) == keys[7:]
    assert_consistent(index, files)


def test_within_limits_nothing_is_evicted(cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    fill(index, files, 5)
    report = Evictor(index, files).evict(CacheLimits(max_size=5 * KB, max_files=5), now=NOW + 200)
    assert report.removed_blocks == 0 and report.satisfied
    assert index.totals() == IndexTotals(5, 5 * KB)


def test_headroom_evicts_below_the_limit_once_over_it(cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    fill(index, files, 101)
    limits = CacheLimits(max_files=100, headroom=0.1)
    assert Evictor(index, files).evict(limits).totals.blocks == 90
    fill(index, files, 5)  # under the limit again: no eviction
    assert Evictor(index, files).evict(limits).removed_blocks == 0


def test_blocks_in_use_are_kept_and_the_next_oldest_go(cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    keys = fill(index, files, 6)
    in_use = {keys[0], keys[2]}
    report = Evictor(index, files).evict(CacheLimits(max_files=3), in_use.__contains__, now=NOW + 200)
    assert list(report.keys) == [keys[1], keys[3], keys[4]]
    assert report.skipped_in_use == 2 and report.satisfied
    assert lru_order(index) == [keys[0], keys[2], keys[5]]
    assert_consistent(index, files)


def test_when_everything_left_is_in_use_the_report_says_so(cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    keys = fill(index, files, 4)
    report = Evictor(index, files).evict(CacheLimits(max_files=1), set(keys[:3]).__contains__)
    assert list(report.keys) == [keys[3]]
    assert not report.satisfied and report.skipped_in_use == 3
    assert index.totals().blocks == 3


def test_eviction_in_small_batches_removes_as_much_as_one_big_one(
        cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    keys = fill(index, files, 25)
    report = Evictor(index, files, batch=4).evict(CacheLimits(max_files=3), {keys[1]}.__contains__)
    assert report.removed_blocks == 22 and report.skipped_in_use == 1
    assert lru_order(index) == [keys[1], keys[23], keys[24]]
    assert_consistent(index, files)


def test_a_block_file_already_gone_is_still_unrecorded(cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    keys = fill(index, files, 3)
    os.unlink(files.path(keys[0]))
    report = Evictor(index, files).evict(CacheLimits(max_files=2))
    assert report.keys == (keys[0],) and report.missing_files == 1
    assert_consistent(index, files)


def test_staged_uploads_and_the_journal_are_never_touched(tmp_path: Path) -> None:
    index, files = CacheIndex(str(tmp_path)), BlockFiles(str(tmp_path))
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "upload-1").write_bytes(b"x" * 50 * KB)
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / "data.mdb").write_bytes(b"j" * KB)
    fill(index, files, 3)
    assert index.totals() == IndexTotals(3, 3 * KB), "staged data is not counted"
    report = Evictor(index, files).evict(CacheLimits(max_size=0, max_files=0))
    assert report.removed_blocks == 3 and index.totals() == IndexTotals(0, 0)
    assert (tmp_path / "staging" / "upload-1").stat().st_size == 50 * KB
    assert (tmp_path / "journal" / "data.mdb").exists()
    index.close()


# --- expiry ------------------------------------------------------------------------------------


def test_expiry_drops_blocks_unused_that_long_whatever_the_size(cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    keys = fill(index, files, 5)  # last used at NOW+0 .. NOW+4
    now = [NOW + 3]
    evictor = Evictor(index, files, clock=lambda: now[0])
    limits = CacheLimits(max_size=100 * KB, expiry=1.5)
    report = evictor.evict(limits)
    assert list(report.keys) == keys[:2] and report.expired == 2
    index.touch([keys[2]], when=NOW + 10)
    now[0] = NOW + 11
    report = evictor.evict(limits, {keys[3]}.__contains__)
    assert list(report.keys) == [keys[4]], "keys[3] in use, keys[2] used recently"
    assert lru_order(index) == [keys[3], keys[2]]
    assert_consistent(index, files)


# --- free space --------------------------------------------------------------------------------


@dataclass
class FakeStatVfs:
    f_frsize: int
    f_blocks: int
    f_bavail: int


def test_min_free_bytes_and_percent(cache: tuple[CacheIndex, BlockFiles]) -> None:
    index, files = cache
    keys = fill(index, files, 10)
    disk = FakeStatVfs(f_frsize=1000, f_blocks=100, f_bavail=10)  # 100 KB disk, 10 KB free
    seen: list[str] = []

    def statvfs(path: str) -> FakeStatVfs:
        seen.append(path)
        return disk

    evictor = Evictor(index, files, statvfs=statvfs)
    report = evictor.evict(CacheLimits(min_free=MinFree(size=12 * KB)))
    assert report.free_deficit == 2 * KB and list(report.keys) == keys[:2]
    assert seen == [files.root]
    disk.f_bavail = 12
    report = evictor.evict(CacheLimits(min_free=MinFree(percent=15.0)))  # 15 KB of 100 KB
    assert report.free_deficit == 3 * KB and list(report.keys) == keys[2:5]
    disk.f_bavail = 50
    assert evictor.evict(CacheLimits(min_free=MinFree(percent=15.0))).removed_blocks == 0
    disk.f_bavail = 0
    report = evictor.evict(CacheLimits(min_free=MinFree(size=99 * KB)), {keys[9]}.__contains__)
    assert report.removed_blocks == 4 and not report.satisfied
    assert lru_order(index) == [keys[9]]


def test_limits_from_the_config() -> None:
    cfg = CacheConfig("/c", max_size=10, max_files=20, expiry=30.0, min_free=MinFree(size=5))
    assert CacheLimits.from_config(cfg, headroom=0.1) == CacheLimits(10, 20, 30.0, MinFree(size=5), 0.1)
    assert CacheConfig().min_free == MinFree(percent=5.0)
    limits = CacheLimits(max_size=10, max_files=2)
    assert not limits.over(IndexTotals(2, 10))
    assert limits.over(IndexTotals(3, 1)) and limits.over(IndexTotals(1, 11))


# --- the daemon's eviction loop ----------------------------------------------------------------

BLOCK = 64 * 1024
OBJ_DATA = os.urandom(8 * BLOCK)


async def fetch(start: int, length: int) -> list[bytes]:
    data = OBJ_DATA[start:start + length]
    return [data[i:i + BLOCK] for i in range(0, len(data), BLOCK)]


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.01)


async def test_a_commit_over_the_limit_wakes_eviction_and_blocks_in_use_survive(tmp_path: Path) -> None:
    block_cache = BlockCache(str(tmp_path), BLOCK, memory_bytes=2 * BLOCK)
    block_cache.enable_eviction(CacheLimits(max_files=4), interval=3600)  # only a commit can wake it
    target = obj("big")
    async with trio.open_nursery() as nursery:
        block_cache.nursery = nursery
        nursery.start_soon(block_cache.run_committer)
        nursery.start_soon(block_cache.run_eviction)
        for index in range(8):
            await block_cache.read(target, len(OBJ_DATA), index * BLOCK, 10, fetch)
        await wait_for(lambda: block_cache.stats.evicted >= 4 and not block_cache._to_commit)
        await wait_for(lambda: block_cache.index.totals().blocks <= 4)
        in_memory = set(block_cache._memory)
        assert in_memory == {block_key(target, BLOCK, 6), block_key(target, BLOCK, 7)}
        records = {key for key, _ in block_cache.index.iter_blocks()}
        assert in_memory <= records, "the most recently used blocks are kept"
        nursery.cancel_scope.cancel()
    assert_consistent(block_cache.index, block_cache.files)
    block_cache.close()


async def test_the_eviction_loop_expires_blocks_on_a_fake_clock(tmp_path: Path) -> None:
    block_cache = BlockCache(str(tmp_path), BLOCK, memory_bytes=0)
    now = [0.0]
    block_cache.enable_eviction(CacheLimits(expiry=60.0), interval=0.01, clock=lambda: now[0])
    target = obj("old")
    await block_cache.read(target, len(OBJ_DATA), 0, len(OBJ_DATA), fetch)  # no nursery: stored at once
    assert block_cache.index.totals().blocks == 8
    await block_cache.read(target, len(OBJ_DATA), 0, 10, fetch)  # block 0 open, but idle: not in use
    block_cache._reading[block_key(target, BLOCK, 1)] = 1  # block 1 being read right now: in use
    now[0] = block_cache.index.access_range()[1] + 61  # type: ignore[index]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(block_cache.run_eviction)
        await wait_for(lambda: block_cache.index.totals().blocks == 1)
        assert [key for key, _ in block_cache.index.iter_blocks()] == [block_key(target, BLOCK, 1)]
        assert block_cache._open_blocks == {}
        del block_cache._reading[block_key(target, BLOCK, 1)]
        await wait_for(lambda: block_cache.index.totals().blocks == 0)
        nursery.cancel_scope.cancel()
    assert block_cache.stats.evicted == 8
    block_cache.close()


async def test_an_evicted_block_open_but_idle_has_its_file_closed(tmp_path: Path) -> None:
    block_cache = BlockCache(str(tmp_path), BLOCK, memory_bytes=0)
    target = obj("x")
    await block_cache.read(target, len(OBJ_DATA), 0, 2 * BLOCK, fetch)
    await block_cache.read(target, len(OBJ_DATA), 0, 10, fetch)
    await block_cache.read(target, len(OBJ_DATA), BLOCK, 10, fetch)
    assert set(block_cache._open_blocks) == {block_key(target, BLOCK, 0), block_key(target, BLOCK, 1)}
    block_cache.enable_eviction(CacheLimits(max_files=0))
    open_block = block_cache._open_blocks[block_key(target, BLOCK, 0)]
    report = await block_cache.evict_now()
    assert report.removed_blocks == 2
    assert block_cache._open_blocks == {} and open_block.fd == -1
    calls: list[tuple[int, int]] = []

    async def counting_fetch(start: int, length: int) -> list[bytes]:
        calls.append((start, length))
        return await fetch(start, length)

    assert await block_cache.read(target, len(OBJ_DATA), 5, 10, counting_fetch) == OBJ_DATA[5:15]
    assert calls == [(0, BLOCK)] and block_cache.stats.corrupt == 0
    block_cache.close()


async def test_without_enable_eviction_the_loop_returns(tmp_path: Path) -> None:
    block_cache = BlockCache(str(tmp_path), BLOCK, memory_bytes=0)
    await block_cache.run_eviction()
    assert (await block_cache.evict_now()).removed_blocks == 0
    block_cache.close()


def test_a_block_evicted_between_lookup_and_read_is_a_miss_not_corruption(tmp_path: Path) -> None:
    block_cache = BlockCache(str(tmp_path), BLOCK, memory_bytes=0)
    key = add_block(block_cache.index, block_cache.files, "x", 0, BLOCK, NOW)
    record = block_cache.index.lookup(key)
    assert record is not None
    Evictor(block_cache.index, block_cache.files).evict(CacheLimits(max_files=0))
    assert block_cache._load(key) is None
    from mountfs.cache.blocks import CorruptBlock

    block_cache._drop_corrupt(key, CorruptBlock("gone"))
    assert block_cache.stats.corrupt == 0
    block_cache.close()


# --- two processes on one cache dir ------------------------------------------------------------

WORKER = Path(__file__).with_name("cache_load_worker.py")


def test_a_block_another_daemon_stores_again_while_a_pass_evicts_it_never_leaves_a_record_without_file(
        cache: tuple[CacheIndex, BlockFiles], monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass removes a block's record; another daemon on the same dir, finding no record, fetches
    the block and stores it under the same name (file, then record). The pass's unlink must not
    take that new file from under the new record, whichever order the two land in."""
    index, files = cache
    [key] = fill(index, files, 1)
    real_remove = files.remove
    other_daemon: list[threading.Thread] = []

    def remove_while_another_daemon_stores_it_again(k: bytes) -> bool:
        if k == key and not other_daemon:
            thread = threading.Thread(target=add_block, args=(index, files, "f0", 0, KB, NOW + 10))
            other_daemon.append(thread)
            thread.start()
            thread.join(timeout=0.5)  # done at once, unless it waits for this pass to commit
        return real_remove(k)

    monkeypatch.setattr(files, "remove", remove_while_another_daemon_stores_it_again)
    Evictor(index, files).evict(CacheLimits(max_files=0))
    other_daemon[0].join()
    assert_consistent(index, files)


def test_two_processes_adding_and_evicting_keep_the_totals_true_and_the_limits(tmp_path: Path) -> None:
    max_size, max_files, rounds = 60 * KB, 40, 600
    CacheIndex(str(tmp_path)).close()  # created before the workers race to create it
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    workers = [
        subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), name, str(rounds), str(max_size),
                          str(max_files)], stdout=subprocess.PIPE, env=env, text=True)
        for name in ("a", "b")
    ]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"ready-{name}").exists() for name in ("a", "b")):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers)
        time.sleep(0.01)
    (tmp_path / "go").touch()
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0
        results.append(json.loads(out))
    assert all(r["evicted"] > 0 and r["evicted_others"] > 0 for r in results), results
    assert max(r["started"] for r in results) < min(r["ended"] for r in results), "they ran together"
    for r in results:  # each pass saw the other's commits and left the limits holding
        assert r["worst_after_eviction"][0] <= max_files and r["worst_after_eviction"][1] <= max_size
    index, files = CacheIndex(str(tmp_path)), BlockFiles(str(tmp_path))
    try:
        Evictor(index, files).evict(CacheLimits(max_size=max_size, max_files=max_files))
        totals = index.totals()
        assert totals.blocks <= max_files and totals.bytes <= max_size
        assert_consistent(index, files)
        assert sum(r["added"] for r in results) == 2 * rounds
    finally:
        index.close()


def test_lmdb_write_transactions_serialize_the_evictors(cache: tuple[CacheIndex, BlockFiles]) -> None:
    """The property the two-process test relies on, in one process: an evictor's choice and
    removal happen inside one write transaction, so a second one sees the first's result."""
    index, files = cache
    fill(index, files, 10)
    first = Evictor(index, files).evict(CacheLimits(max_files=5))
    second = Evictor(index, files).evict(CacheLimits(max_files=5))
    assert (first.removed_blocks, second.removed_blocks) == (5, 0)
    assert isinstance(index.env, lmdb.Environment)
