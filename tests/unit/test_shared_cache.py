"""The shared cache level: one origin fetch per block for a fleet, headers checked on every read,
and a shared store that fails, hangs or refuses never failing or holding a read."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import mountfs.cache.shared as shared_module
from mountfs.backends.base import ObjectId, ObjectMeta
from mountfs.backends.memory import MemoryStore
from mountfs.buffers import Piece
from mountfs.cache.block_cache import BlockCache
from mountfs.cache.shared import MIN_BACKOFF, SharedCache, decode, encode, header_meta, open_shared_cache
from mountfs.cli import format_cache_stats, format_shared_cache
from mountfs.errors import AccessDenied, NoSpace, StoreUnavailable
from mountfs.mount import load_config_with, parse_options

BLOCK = 64 * 1024
DATA = os.urandom(BLOCK * 5 + 123)  # five blocks and a bit
OTHER = os.urandom(BLOCK * 2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """One daemon's block cache over the origin, with its own shared-level client."""

    def __init__(self, path: Path, origin: MemoryStore, shared_store: MemoryStore,
                 **options: object) -> None:
        self.origin = origin
        self.cache = BlockCache(str(path), BLOCK, 4 * BLOCK)
        self.shared = SharedCache(shared_store, "fleet/cache", BLOCK, **options)  # type: ignore[arg-type]
        self.cache.shared = self.shared

    def obj(self, key: str) -> ObjectId:
        return self.origin.object_id(self.origin.head(key))

    def fetch(self, obj: ObjectId) -> Callable[[int, int], object]:
        async def fetch(start: int, length: int) -> list[Piece]:
            return await trio.to_thread.run_sync(self.origin.get_pieces, obj.key, start, length, BLOCK,
                                                 obj.etag)
        return fetch

    async def read_all(self, key: str) -> bytes:
        obj = self.obj(key)
        size = self.origin.head(key).size
        data = await self.cache.read(obj, size, 0, size, self.fetch(obj))  # type: ignore[arg-type]
        return bytes(data)


@asynccontextmanager
async def writing(*nodes: Node) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(node.shared.run)
        yield
        for node in nodes:
            await node.shared.drain()
        nursery.cancel_scope.cancel()


def stores() -> tuple[MemoryStore, MemoryStore]:
    origin, shared = MemoryStore("origin", "s3://origin:9000"), MemoryStore("cache", "s3://cache:9000")
    origin.put_object("data/a.bin", DATA)
    origin.put_object("data/b.bin", OTHER)
    return origin, shared


async def test_three_nodes_fetch_each_block_from_the_origin_once(tmp_path: Path) -> None:
    origin, shared = stores()
    nodes = [Node(tmp_path / f"n{i}", origin, shared) for i in range(3)]
    async with writing(*nodes):
        assert await nodes[0].read_all("data/a.bin") == DATA
    assert origin.bytes_read == len(DATA)
    assert nodes[0].shared.stats.writes == 6 and nodes[0].shared.stats.bytes_written == len(DATA)
    keys = shared.keys()
    assert len(keys) == 6 and all(k.startswith("fleet/cache/") for k in keys)
    async with writing(*nodes):
        for node in nodes[1:]:
            assert await node.read_all("data/a.bin") == DATA
    assert origin.bytes_read == len(DATA)  # not 3x
    for node in nodes[1:]:
        assert node.shared.stats.hits == 6 and node.shared.stats.bytes_read == len(DATA)
        assert node.shared.stats.writes == 0  # found there: nothing written again
    assert shared.calls["put"] == 6 and shared.calls["delete"] == 0


async def test_readers_of_one_block_on_a_node_ask_both_levels_once(tmp_path: Path) -> None:
    origin, shared = stores()
    node = Node(tmp_path, origin, shared)
    shared.latency = 0.05
    results: list[bytes] = []
    obj = node.obj("data/a.bin")

    async def reader() -> None:
        results.append(bytes(await node.cache.read(obj, len(DATA), 10, 100, node.fetch(obj))))  # type: ignore[arg-type]

    async with writing(node), trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(reader)
    assert results == [DATA[10:110]] * 5
    assert shared.calls["get_range"] == 1 and origin.calls["get_range"] == 1


def _corrupt(blob: bytes) -> bytes:
    middle = len(blob) - BLOCK // 2
    return blob[:middle] + bytes([blob[middle] ^ 1]) + blob[middle + 1:]


async def test_a_bad_shared_block_is_a_miss_counted_and_never_served(tmp_path: Path) -> None:
    origin, shared = stores()
    first, second = Node(tmp_path / "1", origin, shared), Node(tmp_path / "2", origin, shared)
    async with writing(first):
        assert await first.read_all("data/a.bin") == DATA
        assert await first.read_all("data/b.bin") == OTHER
    a, b = first.obj("data/a.bin"), first.obj("data/b.bin")
    key = first.shared.key
    shared.put_object(key(a, 0), _corrupt(shared.get_range(key(a, 0), 0, 1 << 30)))  # a byte flipped
    shared.put_object(key(a, 1), shared.get_range(key(a, 1), 0, 1000))  # truncated
    shared.put_object(key(a, 2), shared.get_range(key(b, 0), 0, 1 << 30))  # another object's block
    shared.put_object(key(a, 3), shared.get_range(key(a, 4), 0, 1 << 30))  # another block of its own
    shared.put_object(key(a, 4), shared.get_range(key(a, 4), 0, 1 << 30) + b"x")  # too long
    before = origin.bytes_read
    async with writing(second):
        assert await second.read_all("data/a.bin") == DATA
    stats = second.shared.stats
    assert stats.corrupt == 5 and stats.hits == 1 and stats.misses == 5
    assert origin.bytes_read - before == 5 * BLOCK
    # re-fetched blocks are written again, whole: the next node finds them sound
    third = Node(tmp_path / "3", origin, shared)
    async with writing(third):
        assert await third.read_all("data/a.bin") == DATA
    assert third.shared.stats.hits == 6 and third.shared.stats.corrupt == 0


def test_header_names_everything_that_decides_the_bytes() -> None:
    obj = ObjectId("s3://origin:9000", "origin", "k", "etag-1")
    meta = header_meta(obj, BLOCK, 3, 10)
    blob = encode(meta, b"0123456789")
    assert bytes(decode(blob, meta, 10)) == b"0123456789"
    for other in (header_meta(ObjectId("s3://elsewhere:9000", "origin", "k", "etag-1"), BLOCK, 3, 10),
                  header_meta(ObjectId("s3://origin:9000", "origin", "k", "etag-2"), BLOCK, 3, 10),
                  header_meta(ObjectId("s3://origin:9000", "other", "k", "etag-1"), BLOCK, 3, 10),
                  header_meta(obj, 2 * BLOCK, 3, 10), header_meta(obj, BLOCK, 4, 10)):
        assert isinstance(decode(encode(other, b"0123456789"), meta, 10), str)
    same_length = encode(header_meta(obj, BLOCK, 4, 10), b"0123456789")
    assert decode(same_length, meta, 10) == "the header names another block"
    assert decode(blob[:-1] + b"x", meta, 10) == "checksum mismatch"
    assert decode(b"X" + blob[1:], meta, 10) == "not a mountfs block"
    assert decode(blob + b"x", meta, 10).startswith("too long")  # type: ignore[union-attr]
    assert isinstance(decode(b"", meta, 10), str)


async def test_a_failing_shared_store_sends_reads_to_the_origin_then_is_noticed_back(tmp_path: Path) -> None:
    origin, shared = stores()
    clock = Clock()
    writer = Node(tmp_path / "w", origin, shared)
    async with writing(writer):
        await writer.read_all("data/a.bin")
    node = Node(tmp_path / "n", origin, shared, clock=clock)
    shared.inject("get_range", StoreUnavailable("connection refused"), times=100)
    before = origin.bytes_read
    assert await node.read_all("data/a.bin") == DATA
    assert origin.bytes_read - before == len(DATA)
    stats = node.shared.stats
    assert stats.errors >= 1 and node.shared.reads.failing
    gets = shared.calls["get_range"]
    # while failing, the shared store is left alone: reads go straight to the origin
    node.cache = BlockCache(str(tmp_path / "n2"), BLOCK, 4 * BLOCK)
    node.cache.shared = node.shared
    assert await node.read_all("data/a.bin") == DATA
    assert shared.calls["get_range"] == gets and stats.skipped > 0
    # once the back-off is over, the next read tries it again, and it is back
    shared._faults.clear()
    clock.now += MIN_BACKOFF + 0.1
    node.cache = BlockCache(str(tmp_path / "n3"), BLOCK, 4 * BLOCK)
    node.cache.shared = node.shared
    before = origin.bytes_read
    assert await node.read_all("data/a.bin") == DATA
    assert origin.bytes_read == before and not node.shared.reads.failing and stats.hits == 6


async def test_a_hung_shared_store_costs_a_reader_the_timeout_only(tmp_path: Path) -> None:
    origin, shared = stores()
    node = Node(tmp_path, origin, shared, timeout=0.2)
    shared.latency = 3.0  # every call hangs far longer than the timeout
    with trio.fail_after(2.5):  # not 3 s a block: given up, then left alone
        async with writing(node):
            assert await node.read_all("data/a.bin") == DATA
    assert node.shared.stats.errors >= 1 and node.shared.reads.failing
    assert node.shared.stats.hits == 0


async def test_a_read_only_shared_store_still_serves_and_writes_stop_quietly(tmp_path: Path) -> None:
    origin, shared = stores()
    writer = Node(tmp_path / "w", origin, shared)
    async with writing(writer):
        await writer.read_all("data/a.bin")
    node = Node(tmp_path / "n", origin, shared)
    shared.inject("put", AccessDenied("read-only bucket"), times=100)
    async with writing(node):
        assert await node.read_all("data/a.bin") == DATA  # hits
        assert await node.read_all("data/b.bin") == OTHER  # from the origin; its PUT refused
    stats = node.shared.stats
    assert stats.hits == 6 and stats.writes == 0 and stats.errors == 1 and stats.dropped == 2
    assert node.shared.writes.failing and not node.shared.reads.failing
    assert shared.calls["put"] == 7  # 6 by the writer, 1 refused: the rest dropped without asking


async def test_a_full_queue_drops_blocks_and_never_waits(tmp_path: Path) -> None:
    origin, shared = stores()
    node = Node(tmp_path, origin, shared, queue_bytes=2 * BLOCK)
    # no writer runs: the queue fills, and reads go on
    assert await node.read_all("data/a.bin") == DATA
    assert node.shared.stats.dropped == 4 and shared.calls["put"] == 0


async def test_write_false_and_max_object_size(tmp_path: Path) -> None:
    origin, shared = stores()
    reader = Node(tmp_path / "r", origin, shared, write=False)
    async with writing(reader):
        assert await reader.read_all("data/a.bin") == DATA
    assert shared.calls["put"] == 0 and reader.shared.stats.misses == 6
    small = Node(tmp_path / "s", origin, shared, max_object_size=len(OTHER))
    async with writing(small):
        assert await small.read_all("data/a.bin") == DATA  # larger: not even looked for
        assert await small.read_all("data/b.bin") == OTHER
    assert shared.calls["get_range"] == 6 + 2 and small.shared.stats.writes == 2


async def test_a_shared_store_down_for_minutes_logs_a_line_a_minute(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    origin, shared = stores()
    clock = Clock()
    node = Node(tmp_path / "0", origin, shared, clock=clock)
    shared.inject("get_range", StoreUnavailable("connection refused"), times=1000)
    shared.inject("put", StoreUnavailable("connection refused"), times=1000)
    caplog.set_level(logging.INFO, logger="mountfs.cache.shared")
    for minute in range(3):
        for step in range(12):  # every 5 s: each back-off over, the shared store is asked again
            clock.now += 5.1
            node.cache = BlockCache(str(tmp_path / f"{minute}-{step}"), BLOCK, 4 * BLOCK)
            node.cache.shared = node.shared
            async with writing(node):
                assert await node.read_all("data/b.bin") == OTHER
    assert shared.calls["get_range"] > 3
    assert 3 <= len(caplog.records) <= 4, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("error", [AccessDenied("credentials refused"), NoSpace("the bucket is full"),
                                   StoreUnavailable("503 Slow Down")])
async def test_refused_or_full_shared_store_reads_go_to_the_origin(tmp_path: Path, error: Exception) -> None:
    origin, shared = stores()
    node = Node(tmp_path, origin, shared)
    shared.inject("get_range", error, times=100)
    shared.inject("put", error, times=100)
    async with writing(node):
        assert await node.read_all("data/a.bin") == DATA
    stats = node.shared.stats
    assert origin.bytes_read == len(DATA) and stats.hits == 0 and stats.writes == 0
    assert stats.errors == 1 and node.shared.reads.failing  # one call, then left alone
    assert shared.calls["put"] == 0  # what it could not be asked about is not written: it may have it


def test_status_and_cache_stats_show_the_shared_cache(tmp_path: Path) -> None:
    origin, shared = stores()
    node = Node(tmp_path, origin, shared, write=False)
    node.shared.stats.hits, node.shared.stats.corrupt, node.shared.stats.bytes_read = 7, 1, 3 * 1024**2
    line = format_shared_cache(node.shared.status())
    assert line.startswith("shared: s3://cache:9000/cache/fleet/cache: 7 hits, 0 misses, 3.0 MiB read, "
                           "0 B written")
    assert "1 corrupt" in line and line.endswith("; read only")
    node.shared.reads.failed(0.0)
    assert "reads failing (going to the origin)" in format_shared_cache(node.shared.status())
    mount = {"mountpoint": "/mnt/a", "pid": 7, "hits": 1, "misses": 1, "hit_ratio": 0.5, "evicted": 0,
             "shared_cache": node.shared.status()}
    stats = {"dir": "/c", "bytes": 0, "files": 0, "objects": 0, "oldest_access": None, "newest_access": None,
             "index_bytes": 0, "staged_files": 0, "staged_bytes": 0, "disk_free": 0, "disk_size": 0,
             "mounts": [mount]}
    assert "shared: s3://cache:9000/cache/fleet/cache: 7 hits" in format_cache_stats(stats)


async def test_a_folder_shared_over_nfs_serves_as_the_shared_cache(tmp_path: Path) -> None:
    """`url = "file:///mnt/nfs/cache"`: opened from the config as a mount's URL would be."""
    (tmp_path / "shared").mkdir()
    origin, _ = stores()
    configs = [load_config_with("s3://127.0.0.1:9/data", parse_options(
        [f"cache_dir={tmp_path}/c{i},block_size=64KiB,shared_cache=file://{tmp_path}/shared"]))
        for i in range(2)]
    nodes = []
    for i, config in enumerate(configs):
        shared = open_shared_cache(config)
        assert shared is not None and shared.block_size == BLOCK
        assert shared.status()["url"] == f"file://{tmp_path}/shared"
        cache = BlockCache(str(tmp_path / f"c{i}"), BLOCK, 4 * BLOCK)
        cache.shared = shared
        node = Node(tmp_path / f"n{i}", origin, MemoryStore())
        node.cache, node.shared = cache, shared
        nodes.append(node)
    async with writing(nodes[0]):
        assert await nodes[0].read_all("data/a.bin") == DATA
    assert len(list((tmp_path / "shared").iterdir())) == 6
    async with writing(nodes[1]):
        assert await nodes[1].read_all("data/a.bin") == DATA
    assert origin.bytes_read == len(DATA) and nodes[1].shared.stats.hits == 6


async def test_readahead_takes_what_the_shared_cache_has_and_one_origin_request_per_stretch(
        tmp_path: Path) -> None:
    origin, shared = stores()
    writer = Node(tmp_path / "w", origin, shared)
    obj = writer.obj("data/a.bin")
    async with writing(writer):  # blocks 0, 1 and 4 in the shared cache
        for index in (0, 1, 4):
            await writer.cache.read(obj, len(DATA), index * BLOCK, 1, writer.fetch(obj))  # type: ignore[arg-type]
    node = Node(tmp_path / "n", origin, shared)
    asked: list[tuple[int, int]] = []
    fetch = node.fetch(obj)

    async def counted(start: int, length: int) -> list[Piece]:
        asked.append((start, length))
        return await fetch(start, length)  # type: ignore[no-any-return, misc, operator]

    async with writing(node):
        await node.cache.get_run(obj, len(DATA), 0, 6, counted)
    assert asked == [(2 * BLOCK, 2 * BLOCK), (5 * BLOCK, 123)]
    assert node.shared.stats.hits == 3 and node.shared.stats.writes == 3
    assert await node.read_all("data/a.bin") == DATA and len(asked) == 2  # all in memory or on disk now


class GatedStore(MemoryStore):
    """A shared store whose look-ups (or PUTs) wait until the test opens their gate."""

    def __init__(self, bucket: str, store_id: str) -> None:
        super().__init__(bucket, store_id)
        self.lookups_open = threading.Event()
        self.lookups_open.set()
        self.puts_open = threading.Event()
        self.puts_open.set()

    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        self.lookups_open.wait(10)
        return super().get_range(key, start, length, etag)

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
        self.puts_open.wait(10)
        return super().put(key, data, mtime_ns)


def gated_stores() -> tuple[MemoryStore, GatedStore]:
    origin, _ = stores()
    return origin, GatedStore("cache", "s3://cache:9000")


async def test_blocks_past_the_memory_bound_are_read_back_from_disk_and_all_written(tmp_path: Path) -> None:
    origin, shared = stores()
    node = Node(tmp_path, origin, shared, queue_bytes=2 * BLOCK)
    node.shared.reload = node.cache._load
    # no writer runs while it reads: two blocks wait in memory, the other four by name only
    assert await node.read_all("data/a.bin") == DATA
    assert node.shared.stats.dropped == 0 and node.shared.status()["queued"] == 6
    async with writing(node):
        pass
    assert node.shared.stats.writes == 6 and node.shared.stats.dropped == 0
    second = Node(tmp_path / "2", origin, shared)
    async with writing(second):
        assert await second.read_all("data/a.bin") == DATA
    assert second.shared.stats.hits == 6 and origin.bytes_read == len(DATA)


async def test_a_block_gone_from_disk_before_its_turn_is_dropped_never_written_wrong(tmp_path: Path) -> None:
    origin, shared = stores()
    node = Node(tmp_path, origin, shared, queue_bytes=BLOCK)
    node.shared.reload = lambda key: b"x" * 10  # not the block's length: a wrong read back
    assert await node.read_all("data/a.bin") == DATA
    async with writing(node):
        pass
    assert node.shared.stats.writes == 1 and node.shared.stats.dropped == 5 and len(shared.keys()) == 1


async def test_a_node_that_keeps_missing_reads_from_the_origin_without_waiting_for_lookups(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_module, "MISSES_IN_A_ROW", 2)
    origin, shared = gated_stores()
    first = Node(tmp_path / "1", origin, shared)
    async with writing(first):
        assert await first.read_all("data/b.bin") == OTHER  # two misses in a row
        shared.lookups_open.clear()  # look-ups hang from now on
        with trio.fail_after(5):  # ends long before the look-ups' timeout: they are not waited for
            assert await first.read_all("data/a.bin") == DATA
        assert first.shared.status()["queued"] >= 6  # a.bin's blocks wait for their look-ups
        shared.lookups_open.set()  # now they answer "missing", and the blocks are written
    stats = first.shared.stats
    assert stats.writes == 8 and stats.errors == 0 and stats.hits == 0 and stats.misses == 8
    second = Node(tmp_path / "2", origin, shared)
    async with writing(second):
        assert await second.read_all("data/a.bin") == DATA
    assert second.shared.stats.hits == 6 and origin.bytes_read == len(DATA) + len(OTHER)


async def test_a_background_lookup_that_finds_the_block_writes_nothing_and_ends_the_streak(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_module, "MISSES_IN_A_ROW", 2)
    origin, shared = stores()
    writer = Node(tmp_path / "w", origin, shared)
    async with writing(writer):
        await writer.read_all("data/a.bin")
    node = Node(tmp_path / "n", origin, shared)
    async with writing(node):
        assert await node.read_all("data/b.bin") == OTHER  # two misses: the origin first from now on
        obj = node.obj("data/a.bin")
        assert bytes(await node.cache.read(obj, len(DATA), 0, 1, node.fetch(obj))) == DATA[:1]  # type: ignore[arg-type]
    assert shared.calls["put"] == 6 + 2  # block 0 of a.bin was there: not written again
    assert node.shared._misses_in_row == 0
    async with writing(node):
        assert await node.read_all("data/a.bin") == DATA  # looked up first again: hits
    assert node.shared.stats.hits == 5


async def test_writes_hung_on_their_threads_never_hold_a_lookup(tmp_path: Path) -> None:
    origin, shared = gated_stores()
    node = Node(tmp_path, origin, shared, threads=1, writers=1, timeout=3.0)
    shared.puts_open.clear()  # every PUT hangs
    async with writing(node):
        assert await node.read_all("data/a.bin") == DATA
        await trio.sleep(0.1)  # a writer is in its PUT now
        assert await node.read_all("data/b.bin") == OTHER
        assert node.shared.stats.errors == 0 and node.shared.stats.misses == 8  # both answered
        shared.puts_open.set()
    assert node.shared.stats.writes == 8


async def test_a_shared_write_is_one_lean_put(tmp_path: Path) -> None:
    """put_etag, not put: an S3 put would HEAD the object after it, doubling the write requests."""
    origin, _ = stores()
    lean: list[str] = []

    class Lean(MemoryStore):
        def put_etag(self, key: str, data: bytes) -> str:
            lean.append(key)
            return super().put_etag(key, data)

    shared = Lean("cache", "s3://cache:9000")
    node = Node(tmp_path, origin, shared)
    async with writing(node):
        assert await node.read_all("data/b.bin") == OTHER
    assert len(lean) == 2 and shared.calls["put"] == 2 and shared.calls["head"] == 0


async def test_while_the_node_fetches_from_the_origin_one_writer_writes(tmp_path: Path) -> None:
    origin, _ = stores()
    entered: list[str] = []

    class Counted(GatedStore):
        def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
            entered.append(key)
            return super().put(key, data, mtime_ns)

    shared = Counted("cache", "s3://cache:9000")
    shared.puts_open.clear()
    clock = Clock()  # stands still: the node's last origin fetch stays recent
    node = Node(tmp_path, origin, shared, clock=clock)
    async with writing(node):
        assert await node.read_all("data/a.bin") == DATA
        await trio.sleep(3 * shared_module.QUIET)
        assert len(entered) == 1  # the other writers wait for the reads to calm down
        clock.now += shared_module.QUIET
        with trio.fail_after(5):
            while len(entered) < 4:
                await trio.sleep(0.01)
        shared.puts_open.set()
    assert node.shared.stats.writes == 6 and node.shared.stats.dropped == 0


async def test_background_lookups_past_the_memory_bound_hold_names_and_write_every_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_module, "MISSES_IN_A_ROW", 2)
    origin, shared = gated_stores()
    node = Node(tmp_path, origin, shared, queue_bytes=BLOCK)
    node.shared.reload = node.cache._load
    async with writing(node):
        assert await node.read_all("data/b.bin") == OTHER
        shared.lookups_open.clear()
        assert await node.read_all("data/a.bin") == DATA
        assert node.shared._checking_bytes <= BLOCK
        shared.lookups_open.set()
    assert node.shared.stats.writes == 8 and node.shared.stats.dropped == 0


async def test_a_read_at_random_takes_a_whole_block_the_fleet_has_else_a_few_chunks_of_the_origin(
        tmp_path: Path) -> None:
    origin, shared = stores()
    first, second = Node(tmp_path / "n1", origin, shared), Node(tmp_path / "n2", origin, shared)
    second.cache.random_fetch = 16 * 1024  # a quarter of a block
    async with writing(first):
        assert await first.read_all("data/a.bin") == DATA  # the fleet's first node: whole blocks shared
    sent = origin.bytes_read
    obj = second.obj("data/a.bin")
    async with writing(second):
        got = await second.cache.read(obj, len(DATA), BLOCK + 100, 4096, second.fetch(obj),  # type: ignore[arg-type]
                                      random=True)
        assert bytes(got) == DATA[BLOCK + 100:BLOCK + 4196]
        assert origin.bytes_read == sent and second.shared.stats.hits == 1  # the block, from the fleet
        again = await second.cache.read(obj, len(DATA), BLOCK + 30000, 100, second.fetch(obj),  # type: ignore[arg-type]
                                        random=True)
        assert bytes(again) == DATA[BLOCK + 30000:BLOCK + 30100]  # the whole block is kept here now
        assert origin.bytes_read == sent and second.shared.stats.hits == 1
        other = second.obj("data/b.bin")  # a block the fleet does not have: a few chunks, nothing queued
        got = await second.cache.read(other, len(OTHER), 100, 4096, second.fetch(other),  # type: ignore[arg-type]
                                      random=True)
        assert bytes(got) == OTHER[100:4196]
        assert origin.bytes_read == sent + 16 * 1024
    assert second.shared.stats.writes == 0
