"""Partial blocks: a read at random fetches about what it reads, not a whole block."""

from __future__ import annotations

import itertools
import os
import random

import pytest
import trio

from mountfs.backends.base import ObjectId
from mountfs.backends.memory import MemoryStore
from mountfs.buffers import Piece
from mountfs.cache.block_cache import BlockCache
from mountfs.cache.blocks import CHUNK
from mountfs.cache.eviction import CacheLimits
from mountfs.cache.index import BlockRecord, IndexTotals, block_key
from mountfs.cache.maintenance import check_block, verify
from mountfs.cache.shared import SharedCache
from mountfs.errors import NoSpace, StoreUnavailable

BLOCK = 1 << 20
SIZE = 8 * BLOCK + 12345
DATA = random.Random(7).randbytes(SIZE)
SPAN = 64 * 1024


class Counting:
    """The object in a MemoryStore, fetched through a counter of requests and bytes."""

    def __init__(self, data: bytes = DATA, delay: float = 0.0) -> None:
        self.store = MemoryStore()
        meta = self.store.put_object("big.bin", data)
        self.obj = ObjectId(self.store.store_id, self.store.bucket, "big.bin", meta.etag)
        self.delay = delay
        self.requests: list[tuple[int, int]] = []

    @property
    def fetched(self) -> int:
        return sum(length for _, length in self.requests)

    async def fetch(self, start: int, length: int) -> list[Piece]:
        self.requests.append((start, length))
        if self.delay:
            await trio.sleep(self.delay)
        return self.store.get_pieces("big.bin", start, length, BLOCK, self.obj.etag)


class AtOnce:
    """A Counting source's fetch that also counts the most fetches running at once."""

    def __init__(self, source: Counting) -> None:
        self.source = source
        self.running = self.most = 0

    async def __call__(self, start: int, length: int) -> list[Piece]:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            return await self.source.fetch(start, length)
        finally:
            self.running -= 1


async def read_at_once(cache: BlockCache, fetch: AtOnce, parts: list[tuple[int, int]],
                       stagger: float = 0.0) -> dict[int, bytes]:
    """Read each (offset, length) at random in a task of its own, `stagger` seconds apart."""
    results: dict[int, bytes] = {}

    async def reader(offset: int, length: int) -> None:
        got = await cache.read(fetch.source.obj, SIZE, offset, length, fetch, random=True)
        results[offset] = bytes(got)

    async with trio.open_nursery() as nursery:
        for offset, length in parts:
            nursery.start_soon(reader, offset, length)
            await trio.sleep(stagger)
    return results


def offsets(count: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(0, SIZE - 4096) for _ in range(count)]


async def test_random_4k_reads_fetch_about_the_random_span_each(tmp_path: os.PathLike[str]) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting()
    assert cache.random_fetch == SPAN
    for offset in offsets(40):
        got = await cache.read(source.obj, SIZE, offset, 4096, source.fetch, random=True)
        assert bytes(got) == DATA[offset:offset + 4096]
    assert all(length <= 2 * SPAN for _, length in source.requests)  # a read across a span edge: two
    assert source.fetched <= 40 * 2 * SPAN < 8 * BLOCK
    traffic = (await cache.traffic())[f"{source.store.store_id}/{source.store.bucket}"]
    assert traffic.served == 40 * 4096
    assert traffic.fetched == source.fetched
    # Read again: all from the partial block files, nothing fetched.
    before = len(source.requests)
    for offset in offsets(40):
        assert bytes(await cache.read(source.obj, SIZE, offset, 4096, source.fetch, random=True)) == \
            DATA[offset:offset + 4096]
    assert len(source.requests) == before
    cache.close()


async def test_a_long_read_at_random_fetches_its_own_chunks_not_spans(tmp_path: os.PathLike[str]) -> None:
    """A column chunk read in kernel-sized requests: each fetches the chunks it touches, not the
    spans around them (a span's rounding at both ends of every request adds up)."""
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting()
    start, length = BLOCK + 5 * CHUNK + 100, 3 * SPAN + 7
    got = await cache.read(source.obj, SIZE, start, length, source.fetch, random=True)
    assert bytes(got) == DATA[start:start + length]
    assert source.requests == [(BLOCK + 5 * CHUNK, -(-(length + 100) // CHUNK) * CHUNK)]
    cache.close()


async def test_a_later_full_read_fetches_only_what_is_missing(tmp_path: os.PathLike[str]) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting()
    for offset in offsets(30):
        await cache.read(source.obj, SIZE, offset, 4096, source.fetch, random=True)
    partly = source.fetched
    assert 0 < partly < SIZE
    assert (await cache.totals()).bytes == partly  # the cache counts the bytes its files hold
    whole = b"".join([bytes(await cache.read(source.obj, SIZE, offset, 128 * 1024, source.fetch))
                      for offset in range(0, SIZE, 128 * 1024)])
    assert whole == DATA
    assert source.fetched == SIZE  # no byte fetched twice
    cache.close()
    cache = BlockCache(str(tmp_path), BLOCK, 1 << 20)
    for index in range(-(-SIZE // BLOCK)):  # every block is now a normal whole block
        record = cache.index.lookup(block_key(source.obj, BLOCK, index))
        assert record is not None and record.whole
    assert cache.index.totals().bytes == SIZE
    cache.close()
    assert verify(str(tmp_path)).clean


async def test_sequential_reads_still_fetch_whole_blocks(tmp_path: os.PathLike[str]) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting()
    for offset in range(0, 3 * BLOCK, 128 * 1024):
        await cache.read(source.obj, SIZE, offset, 128 * 1024, source.fetch)
    assert source.requests == [(0, BLOCK), (BLOCK, BLOCK), (2 * BLOCK, BLOCK)]
    cache.close()


async def test_two_readers_of_the_same_missing_chunks_cause_one_fetch(tmp_path: os.PathLike[str]) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting(delay=0.05)
    results: list[bytes] = []

    async def reader(offset: int) -> None:
        results.append(bytes(await cache.read(source.obj, SIZE, offset, 4096, source.fetch, random=True)))

    async with trio.open_nursery() as nursery:
        for offset in (BLOCK + 100, BLOCK + 5000, BLOCK + 9000):
            nursery.start_soon(reader, offset)
    assert sorted(results) == sorted(DATA[o:o + 4096] for o in (BLOCK + 100, BLOCK + 5000, BLOCK + 9000))
    assert source.requests == [(BLOCK, SPAN)]
    cache.close()


async def test_other_parts_of_a_block_are_fetched_beside_each_other_and_all_kept(
        tmp_path: os.PathLike[str]) -> None:
    """A column chunk's requests arrive together: each fetches its own part at once (not after the
    others' round trips), a read of a part being fetched waits for it, and every part is written
    and recorded: read again, nothing is fetched."""
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting(delay=0.05)
    parts = [(BLOCK + 100, 200_000), (BLOCK + 300_000, 200_000), (BLOCK + 600_000, 4096),
             (BLOCK + 601_000, 4096), (BLOCK + 800_000, 100_000)]
    fetch = AtOnce(source)
    results = await read_at_once(cache, fetch, parts)
    assert fetch.most == 4  # side by side, not one after another
    assert results == {offset: DATA[offset:offset + length] for offset, length in parts}
    assert len(source.requests) == 4  # the two reads in one span: one fetch
    before = len(source.requests)
    for offset, length in parts:
        assert bytes(await cache.read(source.obj, SIZE, offset, length, source.fetch, random=True)) == \
            DATA[offset:offset + length]
    assert len(source.requests) == before
    cache.close()
    assert verify(str(tmp_path)).clean


async def test_a_part_sharing_a_chunk_with_one_being_fetched_fetches_the_rest_beside_it(
        tmp_path: os.PathLike[str]) -> None:
    """The kernel's requests for one range end and start inside the same chunk: the second
    fetches what the first does not, at once, and reads the shared chunk once the first is in."""
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting(delay=0.05)
    parts = [(BLOCK + 1000, 300_000), (BLOCK + 301_000, 300_000)]
    fetch = AtOnce(source)
    results = await read_at_once(cache, fetch, parts, stagger=0.01)
    assert results == {offset: DATA[offset:offset + length] for offset, length in parts}
    assert fetch.most == 2
    first_end, second_end = (BLOCK + -(-end // CHUNK) * CHUNK for end in (301_000, 601_000))
    assert source.requests == [(BLOCK, first_end - BLOCK), (first_end, second_end - first_end)]
    cache.close()
    assert verify(str(tmp_path)).clean


async def test_a_part_fetched_beside_another_skips_the_chunks_cached(tmp_path: os.PathLike[str]) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting(delay=0.05)
    await cache.read(source.obj, SIZE, BLOCK + 200_000, 4096, source.fetch, random=True)  # one span
    fetch = AtOnce(source)
    parts = [(BLOCK, 100_000), (BLOCK + 150_000, 200_000)]
    results = await read_at_once(cache, fetch, parts)
    assert results == {offset: DATA[offset:offset + length] for offset, length in parts}
    assert fetch.most == 2
    spans = sorted((start, start + length) for start, length in source.requests)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans  # none fetched twice
    cache.close()


async def test_a_reader_waiting_on_its_part_gets_no_error_of_a_part_fetched_beside_it(
        tmp_path: os.PathLike[str]) -> None:
    """Parts fetched side by side end one after the other; a reader of the first waits for the
    last, whose failure is its own, not the reader's."""
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting(delay=0.05)
    failing = BLOCK + 512 * 1024

    async def fetch(start: int, length: int) -> list[Piece]:
        if start == failing:
            await trio.sleep(0.01)
            raise StoreUnavailable("503 for that part only")
        return await source.fetch(start, length)

    results: dict[int, bytes | Exception] = {}

    async def reader(offset: int, length: int) -> None:
        try:
            results[offset] = bytes(await cache.read(source.obj, SIZE, offset, length, fetch, random=True))
        except StoreUnavailable as exc:
            results[offset] = exc

    async with trio.open_nursery() as nursery:
        for offset, length in ((BLOCK, SPAN), (failing, SPAN), (BLOCK + 100, 4096)):
            nursery.start_soon(reader, offset, length)
            await trio.sleep(0.005)
    assert results[BLOCK] == DATA[BLOCK:BLOCK + SPAN]
    assert results[BLOCK + 100] == DATA[BLOCK + 100:BLOCK + 4196]
    assert isinstance(results[failing], StoreUnavailable)
    cache.close()


async def test_a_read_across_blocks_fetches_from_both_at_once(tmp_path: os.PathLike[str]) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting(delay=0.05)
    fetch = AtOnce(source)

    offset = 3 * BLOCK - 200_000
    got = await cache.read(source.obj, SIZE, offset, 500_000, fetch, random=True)
    assert bytes(got) == DATA[offset:offset + 500_000]
    assert fetch.most == 2 and len(source.requests) == 2
    cache.close()


async def test_a_partial_record_matches_its_file_and_survives_a_restart(tmp_path: os.PathLike[str]) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting()
    for offset in offsets(20, seed=3):
        await cache.read(source.obj, SIZE, offset, 4096, source.fetch, random=True)
    cache.close()
    cache = BlockCache(str(tmp_path), BLOCK, 1 << 20)
    records = list(cache.index.iter_blocks())
    assert records and any(not record.whole for _, record in records)
    for key, record in records:
        assert check_block(cache.files, key, record) == "ok"
        assert os.stat(cache.files.path(key)).st_size == record.length
    assert cache.index.totals().bytes == sum(record.stored for _, record in records)
    # Chunks written but never recorded (a daemon killed before the commit) are not served: the
    # record says what the file holds, and a read of them fetches again.
    key = block_key(source.obj, BLOCK, 7)
    record = cache.index.lookup(key)
    lacking = next(n for n in range(BLOCK // CHUNK)
                   if record is None or not record.has(n * CHUNK, n * CHUNK + 1))
    cache.files.write_chunks(key, BLOCK, lacking * CHUNK, b"\0" * CHUNK)
    before = source.fetched
    offset = 7 * BLOCK + lacking * CHUNK
    assert bytes(await cache.read(source.obj, SIZE, offset, 100, source.fetch, random=True)) == \
        DATA[offset:offset + 100]
    assert source.fetched > before
    cache.close()
    report = verify(str(tmp_path))
    assert not report.corrupt and not report.missing


async def test_a_corrupt_chunk_of_a_partial_block_is_dropped_and_fetched_again(
        tmp_path: os.PathLike[str]) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting()
    await cache.read(source.obj, SIZE, 2 * BLOCK + 10, 100, source.fetch, random=True)
    cache.close()
    key = block_key(source.obj, BLOCK, 2)
    with open(BlockCache(str(tmp_path), BLOCK, 1 << 20).files.path(key), "r+b") as f:
        f.seek(20)
        f.write(b"XXXX")
    cache = BlockCache(str(tmp_path), BLOCK, 1 << 20)
    assert bytes(await cache.read(source.obj, SIZE, 2 * BLOCK + 10, 100, source.fetch, random=True)) == \
        DATA[2 * BLOCK + 10:2 * BLOCK + 110]
    assert cache.stats.corrupt == 1
    cache.close()


def test_a_record_without_the_presence_field_is_a_whole_block() -> None:
    whole = BlockRecord(100, (1, 2), 5.0)
    assert BlockRecord.unpack(whole.pack()) == whole and whole.whole and whole.stored == 100
    partial = BlockRecord(3 * CHUNK + 10, (1, 0, 3, 4), 5.0, 0b1101, CHUNK)
    back = BlockRecord.unpack(partial.pack())
    assert back == partial and not back.whole
    assert back.stored == 2 * CHUNK + 10
    assert back.missing() == [(CHUNK, 2 * CHUNK)]
    assert back.has(0, CHUNK) and not back.has(CHUNK - 1, CHUNK + 1)
    merged = back.merged(BlockRecord(3 * CHUNK + 10, (0, 2, 0, 0), 6.0, 0b0010, CHUNK))
    assert merged.whole and merged.crcs == (1, 2, 3, 4) and merged.last_access == 6.0


async def test_traffic_figures_are_kept_for_the_cache_s_life(tmp_path: os.PathLike[str]) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting()
    await cache.read(source.obj, SIZE, 3 * BLOCK, 4096, source.fetch, random=True)
    cache.close()
    cache = BlockCache(str(tmp_path), BLOCK, 1 << 20)
    await cache.read(source.obj, SIZE, 5 * BLOCK, 4096, source.fetch, random=True)
    traffic = (await cache.traffic())[f"{source.store.store_id}/{source.store.bucket}"]
    assert (traffic.fetched, traffic.served) == (2 * SPAN, 2 * 4096)
    assert traffic.amplification == 16.0
    cache.close()


async def test_partial_then_whole_with_the_daemon_s_background_writers(tmp_path: os.PathLike[str]) -> None:
    """As the daemon runs it: blocks written and records committed in the background."""
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting()
    async with trio.open_nursery() as nursery:
        cache.nursery = nursery
        nursery.start_soon(cache.run_committer)
        for offset in offsets(30, seed=5):
            assert bytes(await cache.read(source.obj, SIZE, offset, 4096, source.fetch, random=True)) == \
                DATA[offset:offset + 4096]
        partly = source.fetched
        assert partly < SIZE
        whole = b"".join([bytes(await cache.read(source.obj, SIZE, offset, 128 * 1024, source.fetch))
                          for offset in range(0, SIZE, 128 * 1024)])
        assert whole == DATA and source.fetched == SIZE
        for _ in range(200):  # the last blocks are being written
            if (await cache.totals()).bytes == SIZE:
                break
            await trio.sleep(0.01)
        assert (await cache.totals()).bytes == SIZE
        nursery.cancel_scope.cancel()
    cache.close()
    assert verify(str(tmp_path)).clean


async def test_the_shared_cache_gets_whole_blocks_only(tmp_path: os.PathLike[str]) -> None:
    shared_store = MemoryStore("cache", "s3://cache:9000")
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting()
    cache.shared = SharedCache(shared_store, "fleet", BLOCK)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.shared.run)
        for offset in offsets(10):
            await cache.read(source.obj, SIZE, offset, 4096, source.fetch, random=True)
        await cache.shared.drain()
        assert shared_store.keys() == []  # a partial block is never written there
        whole = bytes(await cache.read(source.obj, SIZE, 0, 2 * BLOCK, source.fetch))
        assert whole == DATA[:2 * BLOCK]
        await cache.shared.drain()
        nursery.cancel_scope.cancel()
    cache.close()


async def test_eviction_counts_the_bytes_partial_blocks_hold(tmp_path: os.PathLike[str]) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting()
    # One 64 KiB span in each of 8 blocks: 512 KiB held, far below 8 blocks' 8 MiB.
    for index in range(8):
        await cache.read(source.obj, SIZE, index * BLOCK + 10, 100, source.fetch, random=True)
    assert (await cache.totals()) == IndexTotals(8, 8 * SPAN)
    cache.enable_eviction(CacheLimits(max_size=4 * SPAN + 100))
    report = await cache.evict_now()
    assert report.removed_blocks == 4 and report.removed_bytes == 4 * SPAN
    assert cache.index.totals() == IndexTotals(4, 4 * SPAN)
    assert sum(1 for _ in cache.index.iter_blocks()) == 4
    on_disk = [name for sub in os.scandir(cache.files.root) if sub.is_dir() for name in os.listdir(sub.path)]
    assert len(on_disk) == 4  # each file went with its record
    cache.close()


async def test_a_stream_waiting_for_a_random_read_of_its_block_fetches_only_the_rest(
        tmp_path: os.PathLike[str]) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting(delay=0.05)
    got: dict[str, bytes] = {}

    async def random_read() -> None:
        read = await cache.read(source.obj, SIZE, BLOCK + 100, 4096, source.fetch, random=True)
        got["random"] = bytes(read)

    async def stream() -> None:
        # Found the block missing on disk just before the random read claimed it, then waits.
        await trio.sleep(0.01)
        block = await cache.get_block(source.obj, SIZE, 1, source.fetch, on_disk_checked=True)
        got["stream"] = bytes(block)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(random_read)
        nursery.start_soon(stream)
    assert got == {"random": DATA[BLOCK + 100:BLOCK + 4196], "stream": DATA[BLOCK:2 * BLOCK]}
    assert source.requests == [(BLOCK, SPAN), (BLOCK + SPAN, BLOCK - SPAN)]
    cache.close()


async def test_a_read_across_chunks_present_and_chunks_that_could_not_be_written(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cache, source = BlockCache(str(tmp_path), BLOCK, 1 << 20), Counting()
    await cache.read(source.obj, SIZE, 10, 100, source.fetch, random=True)  # [0, SPAN) cached

    def full(*args: object) -> None:
        raise NoSpace("cache disk full")

    monkeypatch.setattr(cache.files, "write_chunks", full)
    for offset in (SPAN - 100, SPAN - 20_000):  # across the edge of what is cached
        got = await cache.read(source.obj, SIZE, offset, 200 + 16_384, source.fetch, random=True)
        assert bytes(got) == DATA[offset:offset + 200 + 16_384]
    cache.close()


async def test_a_span_with_chunks_cached_in_its_middle_fetches_only_what_it_lacks(
        tmp_path: os.PathLike[str]) -> None:
    small = BlockCache(str(tmp_path), BLOCK, 1 << 20, random_fetch=CHUNK)
    source = Counting()
    await small.read(source.obj, SIZE, CHUNK + 10, 100, source.fetch, random=True)
    assert source.requests == [(CHUNK, CHUNK)]
    small.close()
    cache = BlockCache(str(tmp_path), BLOCK, 1 << 20)  # 64 KiB spans now
    assert bytes(await cache.read(source.obj, SIZE, 10, 3 * CHUNK, source.fetch, random=True)) == \
        DATA[10:10 + 3 * CHUNK]
    assert source.requests == [(CHUNK, CHUNK), (0, CHUNK), (2 * CHUNK, 2 * CHUNK)]  # none twice
    cache.close()


async def test_only_a_whole_block_is_loaded_for_the_shared_cache(tmp_path: os.PathLike[str]) -> None:
    """The shared cache reads blocks back from the disk cache to write them: a partial one is not one."""
    cache, source = BlockCache(str(tmp_path), BLOCK, 0), Counting()
    await cache.read(source.obj, SIZE, 10, 100, source.fetch)  # block 0 whole (no nursery: stored at once)
    await cache.read(source.obj, SIZE, 3 * BLOCK + 10, 100, source.fetch, random=True)  # block 3 in part
    whole = cache.load_whole(block_key(source.obj, BLOCK, 0))
    assert whole is not None and bytes(whole) == DATA[:BLOCK]
    assert cache.load_whole(block_key(source.obj, BLOCK, 3)) is None
    cache.close()


async def test_chunks_written_to_a_new_file_are_not_merged_with_a_record_of_an_old_one(
        tmp_path: os.PathLike[str]) -> None:
    """A partial block's record whose file went away meanwhile (dropped while pending, a full disk):
    chunks written next make a new file, whose record holds those chunks only. Merged with the old
    record, it claimed chunks the new file lacks, and a read of them failed its checksum."""
    cache, source = BlockCache(str(tmp_path), BLOCK, 0), Counting()
    key = block_key(source.obj, BLOCK, 0)
    await cache.read(source.obj, SIZE, 10, 100, source.fetch, random=True)  # chunks of [0, 64 KiB)
    old = cache.index.lookup(key)
    assert old is not None and old.present is not None
    os.unlink(cache.files.path(key))  # the record stays, its file is gone
    at = BLOCK // 2
    record, _ = cache._write_chunks(key, BLOCK, at, DATA[at:at + SPAN])
    assert record.present is not None and record.missing()[0] == (0, at), "only the new file's chunks"
    cache.close()
