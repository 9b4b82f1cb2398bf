"""Cache tooling (verify, prune, stats) and integrity on read: bad blocks are dropped and fetched
again, and the tools are safe while another process uses the same cache dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mountfs.cache import maintenance
from mountfs.cache.block_cache import BlockCache
from mountfs.cache.blocks import TEMP_SUFFIX, BlockFiles
from mountfs.cache.index import BlockRecord, CacheIndex, IndexTotals, lru_key
from mountfs.cache.maintenance import (
    CacheStatsReport,
    PruneReport,
    check_block,
    open_cache,
    prune,
    stats,
    verify,
)
from tests.unit.cache_helpers import add_block, files_on_disk, obj

KB = 1000
NOW = 1_000_000.0
BLOCK = 64 * 1024


def populate(cache_dir: Path, count: int = 6, size: int = 3 * KB) -> list[bytes]:
    index, files = CacheIndex(str(cache_dir)), BlockFiles(str(cache_dir))
    keys = [add_block(index, files, f"f{n}", 0, size, NOW + n) for n in range(count)]
    index.close()
    return keys


def records(cache_dir: Path) -> dict[bytes, BlockRecord]:
    with open_cache(str(cache_dir)) as (index, _):
        return dict(index.iter_blocks())


def path_of(cache_dir: Path, key: bytes) -> Path:
    return Path(BlockFiles(str(cache_dir)).path(key))


def assert_consistent(cache_dir: Path) -> None:
    with open_cache(str(cache_dir)) as (index, files):
        recs = dict(index.iter_blocks())
        assert index.totals() == IndexTotals(len(recs), sum(r.length for r in recs.values()))
        assert {k.hex(): r.length for k, r in recs.items()} == files_on_disk(files)
        assert index.counts()["lru"] == len(recs)


# --- verify ------------------------------------------------------------------------------------


def test_verify_on_a_sound_cache_changes_nothing(tmp_path: Path) -> None:
    populate(tmp_path)
    report = verify(str(tmp_path))
    assert report.clean and report.checked == 6
    assert report.totals_after == report.totals_before == IndexTotals(6, 18 * KB)


@pytest.mark.parametrize("scan_batch", [1, 4, 5, 6, 7])
def test_verify_reads_records_in_batches_without_missing_any(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan_batch: int) -> None:
    monkeypatch.setattr(maintenance, "_SCAN_BATCH", scan_batch)
    monkeypatch.setattr(maintenance, "_REMOVE_BATCH", 2)
    keys = populate(tmp_path, count=10)
    for key in keys[::2]:
        path_of(tmp_path, key).unlink()
    report = verify(str(tmp_path))
    assert (report.checked, report.missing) == (10, 5)
    assert set(records(tmp_path)) == set(keys[1::2])
    assert_consistent(tmp_path)


def test_verify_repairs_corrupt_short_missing_and_orphan_blocks(tmp_path: Path) -> None:
    keys = populate(tmp_path, count=8)
    flipped = path_of(tmp_path, keys[0])
    data = bytearray(flipped.read_bytes())
    data[1234] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with open(path_of(tmp_path, keys[1]), "r+b") as f:
        f.truncate(100)
    path_of(tmp_path, keys[2]).unlink()
    orphan = path_of(tmp_path, keys[3])  # a file whose record is gone (as after a crash mid-eviction)
    with open_cache(str(tmp_path)) as (index, _):
        index.remove(keys[3])
        index.remove(keys[4])
    os.utime(orphan, (NOW, NOW))
    young_orphan = path_of(tmp_path, keys[4])  # maybe a daemon's block whose record is not committed yet
    sub = orphan.parent
    (sub / f"{orphan.name}.999999999.1{TEMP_SUFFIX}").write_bytes(b"half")  # a dead writer's temp file
    (sub / "notes.txt").write_text("not ours")

    report = verify(str(tmp_path))
    assert (report.checked, report.corrupt, report.missing) == (6, 2, 1)
    assert (report.orphans, report.temps, report.unknown) == (1, 1, 1)
    assert not report.clean
    assert set(records(tmp_path)) == set(keys[5:])
    assert not flipped.exists() and not path_of(tmp_path, keys[1]).exists() and not orphan.exists()
    assert young_orphan.exists() and (sub / "notes.txt").exists()
    assert report.totals_after == IndexTotals(3, 9 * KB)
    young_orphan.unlink()
    (sub / "notes.txt").unlink()
    assert_consistent(tmp_path)
    assert verify(str(tmp_path)).clean


def test_verify_with_no_grace_removes_every_orphan(tmp_path: Path) -> None:
    keys = populate(tmp_path, count=2)
    with open_cache(str(tmp_path)) as (index, _):
        index.remove(keys[0])
    assert verify(str(tmp_path), orphan_grace=0.0, clock=lambda: time.time() + 1).orphans == 1
    assert_consistent(tmp_path)


def test_verify_recounts_totals_and_rebuilds_a_broken_lru(tmp_path: Path) -> None:
    keys = populate(tmp_path)
    with open_cache(str(tmp_path)) as (index, _), index.env.begin(write=True) as txn:
        index.set_totals(txn, IndexTotals(99, 12345))
        txn.delete(lru_key(keys[0], NOW), db=index.lru)
        txn.put(b"\x00" * 20, b"{}", db=index.objects)  # an object entry without blocks
    report = verify(str(tmp_path))
    assert report.totals_before == IndexTotals(99, 12345)
    assert report.totals_after == IndexTotals(6, 18 * KB)
    assert report.lru_rebuilt and report.objects_dropped == 1
    assert_consistent(tmp_path)
    with open_cache(str(tmp_path)) as (index, _):
        assert index.access_range() == (NOW, NOW + 5)
        assert index.counts()["objects"] == 6


def test_check_block_reads_every_chunk(tmp_path: Path) -> None:
    index, files = CacheIndex(str(tmp_path)), BlockFiles(str(tmp_path))
    size = 40 * BLOCK + 7  # past one VERIFY_READ: checked in several reads
    key = add_block(index, files, "big", 0, size, NOW)
    record = index.lookup(key)
    assert record is not None and len(record.crcs) == size // files.chunk + 1
    assert check_block(files, key, record) == "ok"
    with open(files.path(key), "r+b") as f:  # the last chunk: a read of the first would miss it
        f.seek(size - 4)
        f.write(b"!")
    assert check_block(files, key, record) == "corrupt"
    assert check_block(files, key, BlockRecord(record.length, record.crcs[:-1], NOW)) == "corrupt"
    os.unlink(files.path(key))
    assert check_block(files, key, record) == "missing"
    index.close()


def test_tools_refuse_a_dir_that_holds_no_cache(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    for call in (lambda: stats(str(missing)), lambda: verify(str(missing)),
                 lambda: prune(str(missing), all=True)):
        with pytest.raises(FileNotFoundError, match="no mountfs cache"):
            call()
    assert not missing.exists()


# --- prune -------------------------------------------------------------------------------------


def test_prune_all(tmp_path: Path) -> None:
    populate(tmp_path)
    assert prune(str(tmp_path), all=True) == PruneReport(6, 18 * KB, IndexTotals(0, 0))
    assert_consistent(tmp_path)
    with open_cache(str(tmp_path)) as (index, _):
        assert index.counts() == {"blocks": 0, "objects": 0, "lru": 0}


def test_prune_older_than_uses_the_clock(tmp_path: Path) -> None:
    keys = populate(tmp_path)
    report = prune(str(tmp_path), older_than=2.5, clock=lambda: NOW + 5)
    assert report.removed_blocks == 3 and set(records(tmp_path)) == set(keys[3:])
    assert_consistent(tmp_path)


def test_prune_to_size_and_to_files_remove_least_recently_used_first(tmp_path: Path) -> None:
    keys = populate(tmp_path)
    assert prune(str(tmp_path), to_size=13 * KB).removed_blocks == 2
    assert set(records(tmp_path)) == set(keys[2:])
    assert prune(str(tmp_path), to_files=1).totals == IndexTotals(1, 3 * KB)
    assert set(records(tmp_path)) == {keys[5]}
    assert_consistent(tmp_path)


def test_prune_needs_something_to_do(tmp_path: Path) -> None:
    populate(tmp_path)
    with pytest.raises(ValueError, match="nothing to prune"):
        prune(str(tmp_path))


# --- stats -------------------------------------------------------------------------------------


def test_stats(tmp_path: Path) -> None:
    index, files = CacheIndex(str(tmp_path)), BlockFiles(str(tmp_path))
    add_block(index, files, "one", 0, 2 * KB, NOW + 7)
    add_block(index, files, "one", 1, 1 * KB, NOW + 3)
    add_block(index, files, "two", 0, 4 * KB, NOW + 9)
    index.close()
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "u1").write_bytes(b"s" * 500)
    report = stats(str(tmp_path))
    assert isinstance(report, CacheStatsReport)
    assert (report.blocks, report.bytes, report.objects) == (3, 7 * KB, 2)
    assert (report.oldest_access, report.newest_access) == (NOW + 3, NOW + 9)
    assert (report.staged_files, report.staged_bytes) == (1, 500)
    assert report.index_bytes > 0 and report.disk_size >= report.disk_free > 0
    assert report.cache_dir == str(tmp_path)


def test_stats_of_an_empty_cache(tmp_path: Path) -> None:
    CacheIndex(str(tmp_path)).close()
    report = stats(str(tmp_path))
    assert (report.blocks, report.bytes, report.objects) == (0, 0, 0)
    assert report.oldest_access is None and report.newest_access is None


# --- safe while a daemon uses the cache dir ----------------------------------------------------

WORKER = Path(__file__).with_name("cache_load_worker.py")
ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))


def test_prune_and_verify_while_another_process_adds_and_evicts(tmp_path: Path) -> None:
    CacheIndex(str(tmp_path)).close()
    worker = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), "w", "800", str(10**9), "100"],
                              stdout=subprocess.PIPE, env=ENV, text=True)
    while not (tmp_path / "ready-w").exists():
        assert worker.poll() is None
        time.sleep(0.01)
    (tmp_path / "go").touch()
    pruned = 0
    while worker.poll() is None:
        pruned += prune(str(tmp_path), to_files=50).removed_blocks
        assert verify(str(tmp_path)).corrupt == 0
    out, _ = worker.communicate()
    assert worker.returncode == 0 and json.loads(out)["added"] == 800
    assert pruned > 0
    assert_consistent(tmp_path)
    assert verify(str(tmp_path), orphan_grace=0.0).clean


async def test_a_daemon_keeps_serving_correct_bytes_after_another_process_prunes_all(
        tmp_path: Path) -> None:
    data = os.urandom(3 * BLOCK)

    async def fetch(start: int, length: int) -> list[bytes]:
        fetched.append(start)
        chunk = data[start:start + length]
        return [chunk[i:i + BLOCK] for i in range(0, len(chunk), BLOCK)]

    fetched: list[int] = []
    cache = BlockCache(str(tmp_path), BLOCK, 0)
    cache.generation_check = 0.0  # the index's generation looked at on every read
    target = obj("served")
    assert await cache.read(target, len(data), 0, len(data), fetch) == data
    assert await cache.read(target, len(data), 10, 100, fetch) == data[10:110]  # block 0 now open
    done = subprocess.run([sys.executable, "-c", "import sys; from mountfs.cache.maintenance import prune; "
                           "print(prune(sys.argv[1], all=True).removed_blocks)", str(tmp_path)],
                          env=ENV, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "3"
    fetched.clear()
    assert await cache.read(target, len(data), 10, 100, fetch) == data[10:110]
    assert await cache.read(target, len(data), BLOCK, BLOCK, fetch) == data[BLOCK:2 * BLOCK]
    assert fetched == [0, BLOCK], "no record, its open file closed: fetched again"
    assert await cache.read(target, len(data), 20, 100, fetch) == data[20:120]
    assert fetched == [0, BLOCK], "the block fetched again is the one on disk now"
    assert cache.stats.corrupt == 0
    cache.close()


# --- integrity on read -------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "short", "long"])
async def test_a_missing_or_wrong_length_block_file_is_dropped_and_fetched_again(
        tmp_path: Path, damage: str) -> None:
    data = os.urandom(2 * BLOCK)
    fetched: list[int] = []

    async def fetch(start: int, length: int) -> list[bytes]:
        fetched.append(start)
        chunk = data[start:start + length]
        return [chunk[i:i + BLOCK] for i in range(0, len(chunk), BLOCK)]

    target = obj("damaged")
    first = BlockCache(str(tmp_path), BLOCK, 0)
    await first.read(target, len(data), 0, len(data), fetch)
    first.close()
    key = next(k for k, _ in records(tmp_path).items() if k.endswith((0).to_bytes(8, "big")))
    path = path_of(tmp_path, key)
    if damage == "missing":
        path.unlink()
    else:
        with open(path, "r+b") as f:
            f.truncate(BLOCK // 2 if damage == "short" else BLOCK + 1)
    fetched.clear()
    second = BlockCache(str(tmp_path), BLOCK, 0)
    assert await second.read(target, len(data), 5, 50, fetch) == data[5:55]
    assert fetched == [0] and second.stats.corrupt == 1
    second.close()
    assert verify(str(tmp_path)).clean
    assert_consistent(tmp_path)
