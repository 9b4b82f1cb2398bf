"""Files opened in their directory's listing order: the next ones are fetched before they are
asked for, each handed to the prefetcher once, and those a full prefetcher turned away later."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from mountfs.backends.memory import MemoryStore
from mountfs.cache.block_cache import BlockCache
from mountfs.cache.prefetch import PrefetchScheduler
from mountfs.fs.operations import Operations, Ownership
from mountfs.namespace.inodes import ROOT_INODE
from tests.unit.conftest import FakeClock, single_mount

BLOCK = 64 * 1024
CTX: Any = None
FILES = 80


def scan_setup(tmp_path: Path, concurrency: int) -> tuple[MemoryStore, Operations, PrefetchScheduler]:
    store = MemoryStore()
    for i in range(FILES):
        store.put_object(f"d/f{i:03d}", os.urandom(1000))
    cache = BlockCache(str(tmp_path), BLOCK, 256 * BLOCK)
    scheduler = PrefetchScheduler(cache, concurrency, 1 << 30, BLOCK)
    ops = Operations(single_mount(store, FakeClock()), cache, Ownership(0, 0, 0o022), scheduler)
    return store, ops, scheduler


async def read_in_order(ops: Operations, names: range, pause: float = 0.0) -> None:
    directory = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), b"d", CTX)
    fh = await ops.opendir(directory.st_ino, CTX)
    await ops.namespace.open_dir(directory.st_ino).entry(FILES)  # the whole listing, as readdir would
    await ops.releasedir(fh)
    for i in names:
        attr = await ops.lookup(directory.st_ino, f"f{i:03d}".encode(), CTX)
        info = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
        assert len(await ops.read(info.fh, 0, 4096)) == 1000
        await ops.release(info.fh)
        await trio.sleep(pause)  # let the prefetches run


async def test_a_scan_in_listing_order_fetches_each_file_once_ahead_of_the_reader(tmp_path: Path) -> None:
    store, ops, scheduler = scan_setup(tmp_path, concurrency=64)
    async with trio.open_nursery() as nursery:
        scheduler.nursery = nursery
        await read_in_order(ops, range(FILES))
    assert store.calls["get_range"] == FILES, "every file fetched exactly once"
    assert scheduler.started >= FILES - 3, "all but the first few came from the prefetcher"
    pattern = next(iter(ops._directories.values()))
    assert pattern.fetched_through >= FILES - 1


async def test_files_a_full_prefetcher_turned_away_are_fetched_by_later_opens(tmp_path: Path) -> None:
    store, ops, scheduler = scan_setup(tmp_path, concurrency=2)
    store.latency = 0.001
    async with trio.open_nursery() as nursery:
        scheduler.nursery = nursery
        await read_in_order(ops, range(FILES), pause=0.005)
    assert store.calls["get_range"] == FILES
    assert scheduler.started >= FILES - 3, "two at a time, but all but the first few were prefetched"


async def test_siblings_are_fetched_no_further_ahead_than_the_cache_keeps_them(tmp_path: Path) -> None:
    store, ops, scheduler = scan_setup(tmp_path, concurrency=64)
    scheduler.ahead_bytes = 5 * 1000  # five files of 1000 bytes
    directory = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), b"d", CTX)
    fh = await ops.opendir(directory.st_ino, CTX)
    await ops.namespace.open_dir(directory.st_ino).entry(FILES)
    await ops.releasedir(fh)
    async with trio.open_nursery() as nursery:
        scheduler.nursery = nursery
        for i in range(20):
            attr = await ops.lookup(directory.st_ino, f"f{i:03d}".encode(), CTX)
            info = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
            pattern = next(iter(ops._directories.values()))
            assert pattern.fetched_through <= i + 5, "fetched further ahead than the cache keeps"
            assert len(await ops.read(info.fh, 0, 4096)) == 1000
            await ops.release(info.fh)
            await trio.sleep(0)
    assert pattern.fetched_through == 19 + 5
    assert store.calls["get_range"] == 20 + 5, "every file fetched once, the next five ahead"
    assert scheduler.started >= 20 + 5 - 3
