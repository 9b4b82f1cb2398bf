"""Access patterns per handle and per object: streams, jumps, footers; what each read fetches."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pyfuse3
import pytest

from mountfs.backends.base import ObjectId
from mountfs.backends.memory import MemoryStore
from mountfs.cache.access import AccessMemory
from mountfs.cache.block_cache import BlockCache
from mountfs.cache.prefetch import ReadPattern
from mountfs.fs.operations import Operations, Ownership
from mountfs.namespace.inodes import ROOT_INODE
from tests.unit.conftest import FakeClock, single_mount

BLOCK = 1 << 20
MAX = 8 * BLOCK
OBJ = ObjectId("memory", "mem", "data.parquet", "etag-1")
SIZE = 64 * BLOCK
CTX: Any = None


def pattern(objects: AccessMemory | None = None) -> ReadPattern:
    return ReadPattern(BLOCK, MAX, tolerance=BLOCK, objects=objects)


def test_a_first_read_not_at_offset_0_is_not_a_stream_until_it_continues() -> None:
    p = pattern()
    assert p.observe(10 * BLOCK, 4096, OBJ, SIZE) == 0 and p.random and p.kind == "start"
    assert p.observe(10 * BLOCK + 4096, 128 * 1024, OBJ, SIZE) == 0 and p.kind == "continuing"
    assert p.observe(10 * BLOCK + 4096 + 128 * 1024, 128 * 1024, OBJ, SIZE) == BLOCK
    assert not p.random and p.kind == "stream"


def test_footers_jumps_and_streams_are_told_apart() -> None:
    p = pattern()
    assert p.observe(0, 128 * 1024, OBJ, SIZE) == BLOCK and p.kind == "stream"
    p.observe(SIZE - 8, 8, OBJ, SIZE)
    assert p.kind == "footer" and p.random
    p.observe(SIZE - 70_000, 65_536, OBJ, SIZE)  # the footer's metadata, just before: continues
    assert p.kind == "continuing" and p.random
    p.observe(20 * BLOCK, 4096, OBJ, SIZE)
    assert p.kind == "jump" and p.random


def test_an_object_read_at_random_is_not_taken_for_a_stream_by_its_next_handle() -> None:
    objects = AccessMemory()
    first = pattern(objects)
    first.observe(SIZE - 65536, 65536, OBJ, SIZE)  # footer
    first.observe(3 * BLOCK, 4096, OBJ, SIZE)  # a column chunk
    second = pattern(objects)
    assert second.observe(0, 4096, OBJ, SIZE) == 0 and second.random  # a header probe, not a stream
    # Another object, never read at random, still streams from its first read at 0.
    other = pattern(objects)
    assert other.observe(0, 128 * 1024, ObjectId("memory", "mem", "other", "e"), SIZE) == BLOCK
    # Reads that do turn sequential still become a stream (after a block's worth of them), and the
    # object is read as one again.
    for n in range(7):
        second.observe(4096 + n * 128 * 1024, 128 * 1024, OBJ, SIZE)
    assert second.random and second.window == 0
    second.observe(4096 + 7 * 128 * 1024, 128 * 1024, OBJ, SIZE)
    assert not second.random
    objects.of(OBJ).streams += 5
    assert pattern(objects).observe(0, 4096, OBJ, SIZE) == BLOCK


def test_column_chunks_of_an_object_read_at_random_fetch_no_blocks_ahead() -> None:
    """pyarrow asks the kernel for each column chunk (fadvise), which reads it in 1 MiB requests,
    sometimes with a readahead request past its end: three reads in a row that are no stream."""
    block = 4 << 20
    objects = AccessMemory()
    p = ReadPattern(block, 64 << 20, tolerance=1 << 20, objects=objects)
    p.observe(SIZE - 65536, 65536, OBJ, SIZE)  # the footer
    chunk = 1_949_203
    for start in (5_847_613, 33_136_455, 44_831_673, 72_120_515):
        for offset, size in ((start, 1 << 20), (start + (1 << 20), chunk - (1 << 20)),
                             (start + chunk, 1 << 20)):
            assert p.observe(offset, size, OBJ, SIZE) == 0 and p.random
    # A long sequential read of the same object is still a stream once it covers a block.
    for n in range(5):
        window = p.observe(200 * block + n * (1 << 20), 1 << 20, OBJ, SIZE)
    assert window >= block and not p.random


@pytest.fixture
def ops(clock: FakeClock, tmp_path: Path) -> tuple[Operations, MemoryStore, bytes]:
    store = MemoryStore()
    data = random.Random(3).randbytes(16 * BLOCK + 100)
    store.put_object("big.bin", data)
    return (Operations(single_mount(store, clock), BlockCache(str(tmp_path), BLOCK, 4 << 20),
                       Ownership(uid=1234, gid=2345, umask=0o027)), store, data)


def fetched(store: MemoryStore, before: int) -> int:
    return store.bytes_read - before


async def test_random_reads_through_the_handlers_fetch_about_what_they_read(
        ops: tuple[Operations, MemoryStore, bytes]) -> None:
    operations, store, data = ops
    attr = await operations.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"big.bin"), CTX)
    info = await operations.open(attr.st_ino, os.O_RDONLY, CTX)
    rng = random.Random(5)
    before = store.bytes_read
    reads = 50
    for _ in range(reads):
        offset = rng.randrange(1, len(data) - 4096)
        assert await operations.read(info.fh, offset, 4096) == data[offset:offset + 4096]
    # About 64 KiB each (two spans for a read across a span's edge), never whole 1 MiB blocks.
    assert fetched(store, before) <= reads * 2 * 64 * 1024
    # A sequential read of the whole file then fetches only the rest, in whole blocks.
    whole = b"".join([await operations.read(info.fh, offset, 128 * 1024)
                      for offset in range(0, len(data), 128 * 1024)])
    assert whole == data
    assert fetched(store, before) == len(data)
    await operations.release(info.fh)


def test_reads_within_the_tolerance_but_not_adjacent_are_not_taken_for_a_stream() -> None:
    p = pattern()  # tolerance: a block, which a stream's reads may be out of order by
    for offset in (5 * BLOCK, 5 * BLOCK + 600_000, 5 * BLOCK + 100_000, 5 * BLOCK + 900_000):
        p.observe(offset, 4096, OBJ, SIZE)
        assert p.random and p.window == 0
    p.observe(5 * BLOCK + 904_096, 4096, OBJ, SIZE)
    p.observe(5 * BLOCK + 908_192, 4096, OBJ, SIZE)
    assert not p.random  # adjacent: a stream, which then tolerates disorder within a block
    p.observe(5 * BLOCK + 1_500_000, 4096, OBJ, SIZE)
    assert not p.random
