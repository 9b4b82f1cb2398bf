"""Blocks of objects, served from memory, then disk, then the store, each fetched once.

Single-flight: while one task fetches a block, every other reader of that block waits for
the same result instead of fetching it again, whichever file handle or process-local reader
it comes from. Keys carry the ETag and the block size (see `index.block_key`), so a changed
object, or a cache dir shared with mounts of another block size, starts afresh.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import lmdb
import trio

from mountfs.backends.base import ObjectId
from mountfs.buffers import DIRECT_MIN, Buffer, Piece
from mountfs.cache.access import AccessMemory
from mountfs.cache.blocks import BlockFiles, CorruptBlock, OpenBlock
from mountfs.cache.eviction import CacheLimits, EvictionReport, Evictor, StatVfs
from mountfs.cache.index import BlockRecord, CacheIndex, IndexTotals, block_key, identity, stretches
from mountfs.concurrency import BlockingRunner, gather
from mountfs.errors import NoSpace, Offline, Stale, StoreUnavailable

if TYPE_CHECKING:
    from mountfs.cache.shared import SharedCache

log = logging.getLogger(__name__)

Fetch = Callable[[int, int], Awaitable[list[Piece]]]
"""fetch(start, length) -> the object's bytes in that range, from the store, as block-sized pieces."""

TOUCH_FLUSH_INTERVAL = 5.0
PERSIST_BACKLOG = 8
PERSIST_WRITERS = 4  # tasks writing blocks to disk at once, each a batch per worker-thread call
OPEN_BLOCKS = 256  # block files kept open for warm reads (one descriptor each)
GENERATION_CHECK = 0.1  # seconds between two looks at whether records of open block files were dropped
EVICTION_INTERVAL = 30.0  # seconds between eviction passes when no commit crossed a limit
COMMIT_DELAY = 0.05  # records of blocks written are committed together, at most this much later...
COMMIT_BATCH = 64  # ...unless this many are waiting
COMMIT_RETRY = 1.0  # seconds before records the index could not take are tried again
EVICTION_RETRY = 1.0  # seconds before another pass when blocks being read kept the cache over a limit
ROOM_AHEAD = 32 * 1024 * 1024  # freed beyond what a staged write lacked (at most an eighth of the disk)
STAGED_CHECK = 32 * 1024 * 1024  # bytes staged between two checks of min_free
PREFETCH_TRACKED = 65536  # blocks fetched ahead and not read yet that are followed, at most
RANDOM_FETCH = 64 * 1024  # what a read that is not part of a sequential stream fetches, at least

# Where a block fetched ahead and not read yet is (see BlockCache._ahead).
_CLAIMED, _WRITING, _ON_DISK, _IN_MEMORY = range(4)


class PageCachePoll:
    """Whether a small read that missed the page cache waits for it on the loop instead of in a
    worker thread. The RWF_NOWAIT read that missed has already started the disk read; asking again
    between other tasks until the pages are there costs a few microseconds a try, while a thread
    hop cost about 60 us of latency here (warm random 4 KiB reads went from about 4,300 to 6,100
    ops/s, with a third less daemon CPU).

    A poll that runs out of `budget` sends the next reads to threads, few at first: one slow read
    of a fast disk (a virtio disk here, 6 in 10,000) cost 256 reads a thread hop each, about a
    sixth of all warm random reads. Each timeout in a row doubles the pause, up to `max_backoff`,
    so a disk slower than the budget (spinning, a busy network volume) soon stays in the threads;
    a poll that succeeds starts again from `min_backoff`."""

    def __init__(self, budget: float = 300e-6, max_bytes: int = 128 * 1024, min_backoff: int = 8,
                 max_backoff: int = 256) -> None:
        self.budget = budget
        self.max_bytes = max_bytes
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.backoff = min_backoff  # reads that go to a thread after the next poll that times out
        self._skip = 0

    def wanted(self, length: int) -> bool:
        if length > self.max_bytes:
            return False
        if self._skip:
            self._skip -= 1
            return False
        return True

    def succeeded(self) -> None:
        self.backoff = self.min_backoff

    def timed_out(self) -> None:
        self._skip = self.backoff
        self.backoff = min(self.backoff * 2, self.max_backoff)


@dataclass
class CacheStats:
    hits: int = 0  # block requests answered from memory or the cache disk
    misses: int = 0  # block requests that went to the store
    shared: int = 0  # block requests that joined a fetch already in flight
    corrupt: int = 0  # block files dropped for failing their checksum
    evicted: int = 0  # blocks this daemon evicted (limits, expiry, free space)
    prefetched_unread: int = 0  # blocks fetched ahead that left memory and disk before any read
    room_made: int = 0  # blocks evicted at once because a staged write found the cache disk full


def _worth_asking_again(error: BaseException) -> bool:
    """A store that did not answer (retries used up) may answer the next call; one known to be
    offline, or that answered with an error, will not."""
    return isinstance(error, StoreUnavailable) and not isinstance(error, Offline)


class _Lacking:
    """A block's file is there but lacks the chunks a read wants (a partial block)."""


LACKING = _Lacking()


@dataclass
class Traffic:
    """Bytes fetched from a store (or the shared cache) and bytes served to readers of it."""

    fetched: int = 0
    served: int = 0

    @property
    def amplification(self) -> float | None:
        return round(self.fetched / self.served, 2) if self.served else None


class _LackingError(Exception):
    """Raised in a worker thread: the block file (open) lacks the chunks asked for."""

    def __init__(self, block: OpenBlock) -> None:
        super().__init__()
        self.block = block


class _InFlight:
    def __init__(self, ahead: bool = False) -> None:
        self.ahead = ahead  # fetched ahead of any reader (prefetch), not for the one waiting on it
        self.done = trio.Event()
        self.data: Piece | None = None
        self.error: BaseException | None = None
        # A fetch of part of a block: the spans of it being fetched, its own and those of the
        # fetches of other parts it was started beside (one list for all of them). None: a
        # whole block, or a part that others may not be fetched beside yet.
        self.spans: list[tuple[int, int]] | None = None
        self.span: tuple[int, int] | None = None  # a part's own: its error is not another part's

    def fetches(self, first: int, last: int, before: _InFlight | None) -> None:
        """From now on: a fetch of [first, last) of a block, beside those of `before`'s chain."""
        self.spans = before.spans if before is not None and before.spans is not None else []
        self.spans.append((first, last))
        self.span = (first, last)

    def failed_for(self, start: int, stop: int) -> bool:
        """Whether the error of this fetch is that of a read of [start, stop) waiting for it."""
        span = self.span
        return self.error is not None and (span is None or (span[0] < stop and start < span[1]))

    def rest(self, first: int, last: int, start: int, stop: int) -> tuple[int, int] | None:
        """What of [first, last) is not being fetched beside this, for a read of [start, stop);
        None if it must wait for this fetch: a whole block, or every byte it reads. Its ends are
        cut where other fetches cover them (a span of chunks rounded out to a chunk another
        request also touches), and a fetch within it is fetched again (seldom)."""
        if self.spans is None:
            return None
        for a, b in sorted(self.spans):
            if a <= first < b:
                first = b
        for a, b in sorted(self.spans, reverse=True):
            if a < last <= b:
                last = a
        return (first, last) if max(first, start) < min(last, stop) else None


class BlockCache:
    def __init__(self, cache_dir: str, block_size: int, memory_bytes: int, io_threads: int = 8,
                 random_fetch: int = RANDOM_FETCH) -> None:
        self.cache_dir = cache_dir
        self.block_size = block_size
        self.index = CacheIndex(cache_dir)
        if self.index.older_format:
            log.warning("%s holds blocks cached by an older mountfs: they are never served (each is "
                        "fetched again) and age out; `mountfs cache verify` drops them now", cache_dir)
        self.files = BlockFiles(cache_dir)
        # A read at random fetches the chunks it touches rounded up to this (whole chunks, at
        # most a block; a cache dir of 64 KiB chunks, or a smaller block, changes it).
        self.random_fetch = min(block_size, max(random_fetch, self.files.chunk))
        self.stats = CacheStats()
        # Bytes fetched and served by store ("store/bucket"), since the last flush to the index.
        self._traffic: dict[str, Traffic] = {}
        # Inodes of partial block files this daemon wrote chunks into and has not recorded yet:
        # their record is committed only if the file is still that one (see _is_written).
        self._written_inodes: dict[bytes, int] = {}
        # How each object has been read, by all its handles (see prefetch.ReadPattern).
        self.access = AccessMemory()
        self._io = BlockingRunner(io_threads)
        self.poll = PageCachePoll()
        self._memory: OrderedDict[bytes, Piece] = OrderedDict()
        self._memory_bytes = 0
        self._memory_limit = memory_bytes
        self._in_flight: dict[bytes, _InFlight] = {}
        # Owned by the event loop; a worker thread gets a block only after it is taken out.
        self._open_blocks: OrderedDict[bytes, OpenBlock] = OrderedDict()
        # The index's generation as last seen: when another process (or `cache verify`, `cache
        # prune`) drops records, open files of blocks no longer recorded are closed, so their
        # bytes stop being served (see _check_open_blocks).
        self._generation = self.index.generation()
        self._generation_due = 0.0
        self._generation_checking = False
        self.generation_check = GENERATION_CHECK
        self._touched: set[bytes] = set()
        # With a nursery (set by the daemon) fetched blocks are written to disk in the background
        # and their records committed in batches, so a reader never waits for the cache disk.
        self.nursery: trio.Nursery | None = None
        # Blocks fetched but not yet on disk: past this many, readers wait for the disk to catch up
        # (a fast store must not pile up blocks in memory behind a slower cache disk).
        self._persist_slots = trio.Semaphore(PERSIST_BACKLOG)
        self._to_persist: list[tuple[ObjectId, bytes, Piece]] = []
        self._writers = 0  # tasks writing the blocks in _to_persist
        self._landing = 0  # bytes of blocks queued for the disk or being written
        self._known_bytes = 0  # the index's byte total as of the last commit or eviction
        self._to_commit: list[tuple[ObjectId, bytes, BlockRecord]] = []
        # The same records by key until committed: a block on disk is found before its commit.
        self._pending: dict[bytes, BlockRecord] = {}
        self._commit_lock = threading.Lock()
        # Written, then unlinked by an eviction pass (of any daemon) before their commit: not
        # recorded, and taken off the disk's books on the event loop (see run_committer).
        self._unrecorded: list[bytes] = []
        self._commit_wanted = trio.Event()
        # Eviction, off until the daemon calls enable_eviction().
        self._evictor: Evictor | None = None
        self._limits = CacheLimits()
        self._eviction_interval = EVICTION_INTERVAL
        self._eviction_wanted = trio.Event()
        self._eviction_epoch = 0  # changes when a pass starts and ends: a read across it drops its file
        self._room_lock = trio.Lock()
        self._staged = 0  # bytes staged since min_free was last checked
        # Blocks being read from their files right now (the only blocks eviction keeps besides
        # those being fetched or committed: a copy in memory, or an idle open file, is no reason
        # to keep a block file).
        self._reading: dict[bytes, int] = {}
        # Blocks fetched ahead (get_run) that no reader has asked for yet, and where they are: the
        # last copy going unread is a fetch wasted, counted in stats.prefetched_unread.
        self._ahead: OrderedDict[bytes, int] = OrderedDict()
        # A fleet's shared cache, asked before the store: set by the daemon when configured.
        self.shared: SharedCache | None = None

    def close(self) -> None:
        for block in self._open_blocks.values():
            block.close()
        self._open_blocks.clear()
        self.flush_touches()
        self._commit_pending()
        self.index.close()

    # --- reading ------------------------------------------------------------------------

    async def read(self, obj: ObjectId, object_size: int, offset: int, length: int,
                   fetch: Fetch, random: bool = False) -> Buffer:
        """Exactly `length` bytes from `offset`, fewer only at the end of the object. A read within
        one block in memory is a view of it, not a copy (pyfuse3 sends any buffer). `random`: the
        read is not part of a sequential stream, so what is missing of the chunks it touches is
        fetched (rounded up to `random_fetch`), not whole blocks."""
        end = min(offset + length, object_size)
        if offset >= end:
            return b""
        first, last = offset // self.block_size, (end - 1) // self.block_size
        parts = []
        for index in range(first, last + 1):
            block_start = index * self.block_size
            start, stop = max(offset, block_start) - block_start, min(end - block_start, self.block_size)
            parts.append(partial(self._read_in_block, obj, object_size, index, start, stop, fetch, random))
        # A read at random across blocks fetches what each lacks at the same time (a stream's
        # blocks are fetched ahead of it, in order).
        pieces = await gather(*parts) if random and len(parts) > 1 else [await part() for part in parts]
        self.traffic_of(obj).served += end - offset
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def traffic_of(self, obj: ObjectId) -> Traffic:
        name = f"{obj.store}/{obj.bucket}"
        traffic = self._traffic.get(name)
        if traffic is None:
            traffic = self._traffic[name] = Traffic()
        return traffic

    async def _read_in_block(self, obj: ObjectId, object_size: int, index: int, start: int, stop: int,
                             fetch: Fetch, random: bool = False) -> Buffer:
        """Bytes [start, stop) of one block: from memory, else straight from its file on disk (only
        the chunks needed, so a small random read stays small), else fetched from the store: whole,
        or for a read at random only the chunks around it."""
        key = block_key(obj, self.block_size, index)
        if self._ahead:
            self._ahead.pop(key, None)
        on_disk_checked = False
        if key not in self._memory and key not in self._in_flight:
            part = await self._read_from_disk(key, start, stop)
            if isinstance(part, _Lacking):
                part = None  # partly on disk: what is there is used, the rest fetched
            elif part is not None:
                self.stats.hits += 1
                self._touched.add(key)
                return part
            else:
                on_disk_checked = True
        if random and key not in self._memory:
            return await self.get_range(obj, object_size, index, start, stop, fetch, on_disk_checked)
        block = await self.get_block(obj, object_size, index, fetch, on_disk_checked)
        return memoryview(block)[start:stop]

    async def _read_from_disk(self, key: bytes, start: int, stop: int) -> Buffer | _Lacking | None:
        """Bytes [start, stop) from the block's file, None when it is not cached, LACKING when its
        file lacks some of them. A block read recently stays open, and its pages are read on the
        loop when the page cache has them (no worker thread, no disk wait); anything else goes to
        a worker thread."""
        if self._open_blocks and not self._generation_checking:
            now = time.monotonic()
            if now >= self._generation_due:
                self._generation_due = now + self.generation_check
                # One read of a page of the index's memory map, on the loop: a worker thread
                # for it would cost more and take warm reads off the loop.
                if self.index.generation() != self._generation:
                    await self._check_open_blocks()
        block = self._open_blocks.pop(key, None)
        if block is not None and not block.holds(start, stop):
            block.close()  # opened by an older record: the index may know of more chunks now
            block = None
        if block is None and self._record(key) is None:
            return None  # a miss told by one read of the index's memory map, on the loop: no thread
        epoch = self._eviction_epoch
        self._reading[key] = self._reading.get(key, 0) + 1
        try:
            part = block.read_nowait(start, stop) if block is not None else None
            if part is None and block is not None and self.poll.wanted(stop - start):
                part = await self._poll_page_cache(block, start, stop)
            if part is None:
                block, part = await self._io(self._open_and_read, key, block, start, stop)
        except CorruptBlock as exc:
            if block is not None:
                block.close()
            await self._io(self._drop_corrupt, key, exc)
            return None
        except _LackingError as exc:
            self._keep_open(key, exc.block, epoch)
            return LACKING
        except BaseException:  # cancelled while it was taken out: put it back
            if block is not None and not block.closed:
                self._keep_open(key, block, epoch)
            raise
        finally:
            left = self._reading.pop(key) - 1
            if left:
                self._reading[key] = left
        if block is not None:
            self._keep_open(key, block, epoch)
        return part

    async def _check_open_blocks(self) -> None:
        """Close the open block files whose record was dropped or rewritten since the index's
        generation was last seen (any process may drop records and unlink their files, whose bytes
        an open descriptor would go on serving). One worker-thread call."""
        opened = [(key, block.inode, block.length, block.crcs, block.present)
                  for key, block in self._open_blocks.items()]
        self._generation_checking = True
        try:
            generation, stale = await self._io(self._stale_open_blocks, self._generation, opened)
        finally:
            self._generation_checking = False
        if stale is None:
            return
        self._generation = generation
        self._eviction_epoch += 1  # a read in progress drops the file it opened: it was not checked
        checked = {key: inode for key, inode, *_ in opened}
        for key, block in list(self._open_blocks.items()):
            if key in stale or checked.get(key) != block.inode:  # or opened during the check
                del self._open_blocks[key]
                block.close()

    def _stale_open_blocks(self, seen: int, opened: list[tuple[bytes, int, int, tuple[int, ...], int | None]]
                           ) -> tuple[int, set[bytes] | None]:
        """The generation, and if it is not `seen` the open blocks whose record is gone or differs,
        or whose path names another file now."""
        generation, records = self.index.records_if_changed(seen, [key for key, *_ in opened])
        if records is None:
            return generation, None
        stale: set[bytes] = set()
        for key, inode, length, crcs, present in opened:
            record = records.get(key)
            if record is None or (record.length, record.crcs, record.present) != (length, crcs, present):
                stale.add(key)
                continue
            try:
                if os.stat(self.files.path(key)).st_ino != inode:
                    stale.add(key)
            except OSError:
                stale.add(key)
        return generation, stale

    async def _poll_page_cache(self, block: OpenBlock, start: int, stop: int) -> Buffer | None:
        """Ask the page cache again, letting other tasks run between tries, until the disk read
        the first miss started has landed or the budget is spent (None: read in a thread)."""
        deadline = time.perf_counter() + self.poll.budget
        while True:
            await trio.lowlevel.checkpoint()
            part = block.read_nowait(start, stop)
            if part is not None:
                self.poll.succeeded()
                return part
            if time.perf_counter() > deadline:
                self.poll.timed_out()
                return None

    def _open_and_read(self, key: bytes, block: OpenBlock | None, start: int,
                       stop: int) -> tuple[OpenBlock | None, Buffer | None]:
        if block is None:
            record = self._record(key)
            if record is None:
                return None, None
            try:
                block = self.files.open(key, record.length, record.crcs, record.present)
            except CorruptBlock as exc:
                exc.record = record
                raise
            if not block.holds(start, stop):
                raise _LackingError(block)
        try:
            return block, block.read(start, stop)
        except BaseException:
            block.close()
            raise

    def _keep_open(self, key: bytes, block: OpenBlock, epoch: int) -> None:
        """Keep a block file open for the next read, unless an eviction pass ran meanwhile: it may
        have unlinked the file, whose space an open descriptor would hold."""
        if key in self._open_blocks or epoch != self._eviction_epoch:  # or another reader opened it
            block.close()
            return
        self._open_blocks[key] = block
        if len(self._open_blocks) > OPEN_BLOCKS:
            _, oldest = self._open_blocks.popitem(last=False)
            oldest.close()

    def is_resident(self, obj: ObjectId, index: int) -> bool:
        """In memory, or being fetched or loaded right now."""
        key = block_key(obj, self.block_size, index)
        return key in self._memory or key in self._in_flight

    def _remembered(self, key: bytes) -> Piece | None:
        """The block from memory, counted as a hit, if it is there."""
        data = self._memory.get(key)
        if data is not None:
            self._memory.move_to_end(key)
            self._touched.add(key)  # its file too is recently used (eviction goes by the index)
            self.stats.hits += 1
        return data

    async def get_block(self, obj: ObjectId, object_size: int, index: int, fetch: Fetch,
                        on_disk_checked: bool = False) -> Piece:
        """The whole block, fetched at most once however many readers ask at the same time.
        `on_disk_checked`: the caller just found it missing on disk, so go straight to the store."""
        key = block_key(obj, self.block_size, index)
        asked_itself = False
        while True:
            data = self._remembered(key)
            if data is not None:
                return data
            flight = self._in_flight.get(key)
            if flight is None:
                break
            self.stats.shared += 1
            await flight.done.wait()
            if flight.data is not None:
                return flight.data
            if flight.error is not None:
                if flight.ahead and not asked_itself and _worth_asking_again(flight.error):
                    # A fetch ahead ran out of retries on a flaky store: this read gets its own.
                    asked_itself = True
                    continue
                raise flight.error
            # The fetching task was cancelled, or fetched part of the block only (now on disk):
            # its readers try again on their own.
            on_disk_checked = False
        flight = self._in_flight[key] = _InFlight()
        filled = await self._fill(obj, object_size, {index: (key, flight)}, fetch, on_disk_checked)
        return filled[index]

    async def get_range(self, obj: ObjectId, object_size: int, index: int, start: int, stop: int,
                        fetch: Fetch, on_disk_checked: bool = False) -> Buffer:
        """Bytes [start, stop) of a block read at random: the chunks around them that its file
        lacks are fetched (a span of `random_fetch` bytes, aligned; of a read as long, its own
        chunks), written into its sparse file in place and recorded; the rest of the block is
        fetched only when read. A reader of bytes being fetched waits for that fetch, then looks
        at the disk again; other parts of the block are fetched beside it (the requests a reader
        of a column chunk makes at once would otherwise wait for each other, a round trip each,
        and the later ones for every fetch started meanwhile), and what each brings is written in
        turn. `on_disk_checked`: the caller just found no record of it (not looked up again: the
        record of the chunks fetched is merged with any other when they are written)."""
        key = block_key(obj, self.block_size, index)
        length = min(self.block_size, object_size - index * self.block_size)
        chunk = self.files.chunk
        # A read as long as a span is its own best guess of what is wanted: only its chunks.
        span = chunk if stop - start >= self.random_fetch else self.random_fetch
        first, last = start // span * span, min(length, -(-stop // span) * span)
        asked_itself = False
        before: _InFlight | None = None  # the fetch of another part of the block, written first
        looked = on_disk_checked  # at the disk, before fetching beside another part
        while True:
            data = self._remembered(key)
            if data is not None:
                return memoryview(data)[start:stop]
            flight = self._in_flight.get(key)
            if flight is None:
                break
            rest = flight.rest(first, last, start, stop)
            if rest is not None and looked:
                before, (first, last) = flight, rest
                break
            if rest is None:
                self.stats.shared += 1
                await flight.done.wait()
                if flight.data is not None:
                    return memoryview(flight.data)[start:stop]
                if flight.failed_for(start, stop):
                    assert flight.error is not None
                    if flight.ahead and not asked_itself and _worth_asking_again(flight.error):
                        asked_itself = True
                        continue
                    raise flight.error
                on_disk_checked = False
            # Another range of it was fetched, or was before the fetches beside this one began.
            looked = True
            part = await self._read_from_disk(key, start, stop)
            if part is not None and not isinstance(part, _Lacking):
                self.stats.hits += 1
                self._touched.add(key)
                return part
        flight = self._in_flight[key] = _InFlight()
        asks_shared = before is None and self.shared is not None
        if not asks_shared:  # other parts may be fetched beside this one from now on
            flight.fetches(first, last, before)
        try:
            # On the loop, as _read_from_disk tells a miss: the cache disk's threads may be busy
            # writing the parts fetched beside this one.
            record = None if on_disk_checked else self._record(key)
            if record is None and asks_shared:  # a fleet's whole block beats a few chunks
                assert self.shared is not None
                whole = await self.shared.find(obj, object_size, index)
                if whole is not None:
                    self.traffic_of(obj).fetched += len(whole)
                    self._moved(key, _WRITING)
                    self._settle(key, flight, whole)
                    with trio.CancelScope(shield=True):
                        await self._keep(obj, key, whole)
                    return memoryview(whole)[start:stop]
            if asks_shared:
                flight.fetches(first, last, before)
            stretches = [(first, last)]
            if record is not None and record.length == length:
                # Only what is missing: no chunk is fetched twice (a span seldom lacks more than
                # one stretch, so this is seldom more than one request).
                stretches = [(max(a, first), min(b, last)) for a, b in record.missing()
                             if a < last and b > first]
            direct: Buffer | None = None
            for a, b in stretches:
                got = await self._fetch_chunks(obj, key, index, length, a, b, fetch, after=before)
                if a <= start and stop <= b:
                    direct = memoryview(got)[start - a:stop - a]
            if direct is not None:
                return direct
        except BaseException as exc:
            if isinstance(exc, Exception):
                flight.error = exc
            raise
        finally:
            if flight.spans is not None:
                flight.spans.remove((first, last))
            if before is not None:  # done only after the fetches it was started beside
                with trio.CancelScope(shield=True):
                    await before.done.wait()
            if self._in_flight.get(key) is flight:  # not settled by a block from the shared cache,
                del self._in_flight[key]  # nor followed by the fetch of another part
            flight.done.set()
        # Partly fetched now, partly on disk before.
        part = await self._read_from_disk(key, start, stop)
        if part is not None and not isinstance(part, _Lacking):
            return part
        # Not on disk after all (the write failed, or the file was evicted meanwhile): fetched as is.
        first = start // chunk * chunk
        got = await self._fetch_chunks(obj, None, index, length, first, stop, fetch)
        return memoryview(got)[start - first:]

    async def _fetch_chunks(self, obj: ObjectId, key: bytes | None, index: int, length: int, first: int,
                            last: int, fetch: Fetch, after: _InFlight | None = None) -> Buffer:
        """Bytes [first, last) of a block from the store; kept in its file unless `key` is None,
        once the fetch `after` is done (one writer of a block's file at a time)."""
        self.stats.misses += 1
        pieces = await fetch(index * self.block_size + first, last - first)
        got: Buffer = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if len(got) != last - first:
            raise Stale(f"{obj.key}: expected {last - first} bytes at {index * self.block_size + first}, "
                        f"store returned {len(got)}")
        self.traffic_of(obj).fetched += len(got)
        if key is not None:
            with trio.CancelScope(shield=True):  # what was fetched is recorded with its file
                if after is not None:
                    await after.done.wait()
                await self._keep_chunks(obj, key, length, first, got)
        return got

    async def _keep_chunks(self, obj: ObjectId, key: bytes, length: int, offset: int, data: Buffer) -> None:
        """Write chunks of a partial block into its file and stage their record: readers waiting
        for them find them on disk (the record pending) as soon as this returns."""
        try:
            record, inode = await self._io(self._write_chunks, key, length, offset, data)
        except Exception as exc:  # the reader still gets its bytes; the next read fetches them again
            log.warning("part of a block of %s not cached: %s", obj.key, exc)
            if isinstance(exc, NoSpace):
                self._eviction_wanted.set()
            return
        stale = self._open_blocks.pop(key, None)  # opened with fewer chunks
        if stale is not None:
            stale.close()
        if record.whole:
            self._written_inodes.pop(key, None)
        else:
            self._written_inodes[key] = inode
        self._pending[key] = record
        self._to_commit.append((obj, key, record))
        if self.nursery is None:
            await self._io(self._commit_pending)
        else:
            self._commit_wanted.set()

    def _write_chunks(self, key: bytes, length: int, offset: int, data: Buffer) -> tuple[BlockRecord, int]:
        """Chunks into a partial block's file; its record with them, merged with what it holds."""
        crcs, inode, made = self.files.write_chunks(key, length, offset, data)
        chunk = self.files.chunk
        count = -(-length // chunk)
        first = offset // chunk
        present = ((1 << len(crcs)) - 1) << first
        all_crcs = [0] * count
        all_crcs[first:first + len(crcs)] = crcs
        record = BlockRecord(length, tuple(all_crcs), time.time(), present, chunk)
        if present == (1 << count) - 1:
            record = BlockRecord(length, record.crcs, record.last_access)
        # Merged with what the key's record holds only if that record can be of this file: one
        # this write made (the path had no file) holds these chunks alone, whatever a record says.
        previous = None if made else self._record(key)
        if previous is not None and self.files.inode(key) == inode:
            record = previous.merged(record)
        return record, inode

    def _is_written(self, key: bytes) -> bool:
        """Whether a block's file is (still) there to be recorded: for a partial block, the very
        file its chunks went into (a file unlinked and made again by another reader lacks them)."""
        inode = self._written_inodes.get(key)
        return self.files.exists(key) if inode is None else self.files.inode(key) == inode

    async def get_run(self, obj: ObjectId, object_size: int, first: int, count: int, fetch: Fetch) -> None:
        """Bring blocks [first, first + count) into memory: those on disk loaded, the rest fetched
        with one store request per contiguous stretch. Fewer, larger requests cost a fraction of
        the CPU per byte (botocore spends about a millisecond on each request)."""
        claimed: dict[int, tuple[bytes, _InFlight]] = {}
        for index in range(first, first + count):
            key = block_key(obj, self.block_size, index)
            if key not in self._memory and key not in self._in_flight:
                claimed[index] = (key, _InFlight(ahead=True))
                self._in_flight[key] = claimed[index][1]
                self._ahead[key] = _CLAIMED
                if len(self._ahead) > PREFETCH_TRACKED:
                    self._ahead.popitem(last=False)
        if claimed:
            await self._fill(obj, object_size, claimed, fetch, on_disk_checked=False)

    async def _fill(self, obj: ObjectId, object_size: int, claimed: dict[int, tuple[bytes, _InFlight]],
                    fetch: Fetch, on_disk_checked: bool) -> dict[int, Piece]:
        """Settle every claimed flight: with its block from disk or from the store, or with the
        error that stopped it (a cancelled fill leaves no error: its waiters try on their own)."""
        filled: dict[int, Piece] = {}
        pending = dict(claimed)
        try:
            partial: dict[int, tuple[BlockRecord, bytearray]] = {}
            if not on_disk_checked:
                loaded = await self._io(self._load_many, {i: key for i, (key, _) in pending.items()})
                for index, data in loaded.items():
                    if isinstance(data, tuple):
                        partial[index] = data
                        continue
                    key, flight = pending.pop(index)
                    self._ahead.pop(key, None)  # not fetched: no fetch to waste
                    self.stats.hits += 1
                    self._touched.add(key)
                    filled[index] = self._settle(key, flight, data)
            for index, (record, buffer) in partial.items():
                await self._complete(obj, index, record, buffer, fetch)
                key, flight = pending.pop(index)
                stale = self._open_blocks.pop(key, None)  # the partial file, about to be replaced
                if stale is not None:
                    stale.close()
                self._ahead.pop(key, None)
                self._moved(key, _WRITING)
                filled[index] = self._settle(key, flight, memoryview(buffer))
                with trio.CancelScope(shield=True):
                    await self._keep(obj, key, filled[index])
            for run in stretches(sorted(pending)):
                start = run[0] * self.block_size
                length = min(self.block_size * len(run), object_size - start)
                self.stats.misses += len(run)
                if self.shared is None:
                    pieces = await fetch(start, length)
                else:
                    pieces = await self.shared.fetch(obj, object_size, start, length, fetch)
                got = sum(map(len, pieces))
                self.traffic_of(obj).fetched += got
                if got != length or any(len(piece) != self.block_size for piece in pieces[:-1]):
                    # The object is shorter than its metadata said: it changed under us.
                    raise Stale(f"{obj.key}: expected {length} bytes at {start}, store returned {got}")
                for index, piece in zip(run, pieces, strict=True):
                    key, flight = pending.pop(index)
                    self._moved(key, _WRITING)
                    filled[index] = self._settle(key, flight, piece)  # readers first, then the disk
                with trio.CancelScope(shield=True):  # a closed file must not leave blocks unwritten
                    for index in run:
                        await self._keep(obj, block_key(obj, self.block_size, index), filled[index])
        except BaseException as exc:
            for key, flight in pending.values():
                self._ahead.pop(key, None)
                if isinstance(exc, Exception):
                    flight.error = exc
                del self._in_flight[key]
                flight.done.set()
            raise
        return filled

    async def _complete(self, obj: ObjectId, index: int, record: BlockRecord, buffer: bytearray,
                        fetch: Fetch) -> None:
        """Fill in what a partial block lacks, one store request per missing stretch (from the
        origin: the shared cache keeps whole blocks only)."""
        base = index * self.block_size
        self.stats.misses += 1
        for start, stop in record.missing():
            pieces = await fetch(base + start, stop - start)
            got = sum(map(len, pieces))
            self.traffic_of(obj).fetched += got
            if got != stop - start:
                raise Stale(f"{obj.key}: expected {stop - start} bytes at {base + start}, "
                            f"store returned {got}")
            at = start
            for piece in pieces:
                buffer[at:at + len(piece)] = piece
                at += len(piece)

    def _settle(self, key: bytes, flight: _InFlight, data: Piece) -> Piece:
        flight.data = data
        self._remember(key, data)
        del self._in_flight[key]
        flight.done.set()
        return data

    async def _keep(self, obj: ObjectId, key: bytes, data: Piece) -> None:
        """Write a fetched block to disk: in the background when the daemon gave us a nursery."""
        self._written_inodes.pop(key, None)  # a whole block replaces a partial one's file
        if self.nursery is None:
            await self._io(self._store, obj, key, data)
            self._moved(key, _ON_DISK)
            return
        await self._persist_slots.acquire()
        self._to_persist.append((obj, key, data))
        self._landing += len(data)
        if self._limits.max_size is not None and self._known_bytes + self._landing > self._limits.max_size:
            self._eviction_wanted.set()  # older blocks give way before these land, not after
        # Small blocks wait for the writer already running and go in its next batch; large ones
        # get writers of their own: one writer of 4 MiB O_DIRECT blocks held cold reads back
        # (620-636 -> 548-603 MB/s here).
        if self._writers == 0 or (self._writers < PERSIST_WRITERS and len(data) >= DIRECT_MIN):
            self._writers += 1
            self.nursery.start_soon(self._persist_queued)

    async def _persist_queued(self) -> None:
        """Write the blocks waiting, all of them in one worker-thread call, until none are left.
        A thread hop per block was most of what persisting cost: with 8 readers of 128 KiB files,
        skipping the writes altogether took the daemon from about 1.75 to 1.3 ms of CPU per file,
        while the writes themselves cost about 50 us each (one native call instead of five
        syscalls saved nothing)."""
        # Shielded: blocks being written when the daemon stops are finished and committed.
        with trio.CancelScope(shield=True):
            try:
                while self._to_persist:
                    batch, self._to_persist = self._to_persist, []
                    try:
                        results = await self._io(self._write_many, [(key, data) for _, key, data in batch])
                    finally:
                        for _, _, data in batch:
                            self._persist_slots.release()
                            self._landing -= len(data)
                    for (obj, key, data), result in zip(batch, results, strict=True):
                        if isinstance(result, Exception):
                            log.warning("block of %s not cached: %s", obj.key, result)
                            if isinstance(result, NoSpace):
                                self._eviction_wanted.set()
                            self._off_disk(key)
                            continue
                        self._moved(key, _ON_DISK)
                        record = BlockRecord(len(data), result, time.time())
                        self._pending[key] = record
                        self._to_commit.append((obj, key, record))
                    self._commit_wanted.set()
            finally:
                self._writers -= 1

    def _write_many(self, blocks: list[tuple[bytes, Piece]]) -> list[tuple[int, ...] | Exception]:
        """Each block's chunk checksums, or the error that kept it off the disk."""
        results: list[tuple[int, ...] | Exception] = []
        for key, data in blocks:
            try:
                results.append(self.files.write(key, data))
            except Exception as exc:
                results.append(exc)
        return results

    async def run_committer(self) -> None:
        """Forever: commit the records of blocks written to disk, all pending ones in one go."""
        while True:
            await self._commit_wanted.wait()
            if len(self._to_commit) < COMMIT_BATCH:
                await trio.sleep(COMMIT_DELAY)  # gather more: each commit is one fdatasync
            self._commit_wanted = trio.Event()
            try:
                with trio.CancelScope(shield=True):
                    wanted = await self._io(self._commit_and_check)
            except lmdb.Error as exc:  # the index's disk is full: its blocks are kept for the next try
                log.warning("cache index: cannot record blocks written: %s", exc)
                self._eviction_wanted.set()
                await trio.sleep(COMMIT_RETRY)
                self._commit_wanted.set()
                continue
            unrecorded, self._unrecorded = self._unrecorded, []
            for key in unrecorded:
                self._off_disk(key)
            if wanted:
                self._eviction_wanted.set()

    def _commit_and_check(self) -> bool:
        """Commit what is pending; True if the cache is now past a limit: max_size, max_files, or
        min_free (one statvfs per committed batch)."""
        totals = self._commit_pending()
        if totals is None or self._evictor is None:
            return False
        self._known_bytes = totals.bytes
        return self._limits.over(totals) or self._evictor.free_deficit(self._limits.min_free) > 0

    def _commit_pending(self) -> IndexTotals | None:
        with self._commit_lock:  # the committer and `totals` may both be here
            batch, self._to_commit = self._to_commit, []
            if not batch:
                return None
            try:
                committed = self.index.commit_many(
                    ((identity(obj, self.block_size), key, record) for obj, key, record in batch),
                    present=self._is_written)
            except BaseException:
                self._to_commit[:0] = batch  # still on disk, still pending: committed next time
                raise
            for _, key, record in batch:
                if self._pending.get(key) is record:
                    del self._pending[key]
                    self._written_inodes.pop(key, None)
            self._unrecorded.extend(committed.missing)
            return committed.totals

    def _record(self, key: bytes) -> BlockRecord | None:
        """The block's record: written and waiting for its commit, or in the index."""
        return self._pending.get(key) or self.index.lookup(key)

    def _load_many(self, keys: dict[int, bytes]) -> dict[int, Piece | tuple[BlockRecord, bytearray]]:
        """Of the blocks `keys` names (by index), those found sound on disk: whole, or partial
        (their record, and the block with what it lacks zero)."""
        found = {}
        for index, key in keys.items():
            data = self._load(key)
            if data is not None:
                found[index] = data
        return found

    def load_whole(self, key: bytes) -> Piece | None:
        """The block from disk, checked, if it is there whole (blocking): what the shared cache
        writes back, which keeps whole blocks only."""
        found = self._load(key)
        return None if found is None or isinstance(found, tuple) else found

    def _load(self, key: bytes) -> Piece | tuple[BlockRecord, bytearray] | None:
        record = self._record(key)
        if record is None:
            return None
        try:
            if record.present is not None:
                return record, self.files.read_present(key, record.length, record.crcs, record.present)
            return self.files.read_whole(key, record.length, record.crcs)
        except CorruptBlock as exc:
            exc.record = record
            self._drop_corrupt(key, exc)
            return None

    def _drop_corrupt(self, key: bytes, exc: CorruptBlock) -> None:
        """Drop a bad block, unless what went wrong was only a race: the record the file was opened
        by was evicted (here or by another daemon) before the open, and maybe the block stored
        again since, whose new file and record are sound."""
        current = self._record(key)
        if current is None or (exc.record is not None and current != exc.record):
            return
        pending = self._pending.pop(key, None)
        # The file goes inside the transaction that drops the record (see CacheIndex), and only if
        # the record is still the one the file was opened by.
        if pending is not None:
            if not self.files.exists(key):
                # An eviction pass that dropped an older record of the key unlinked this copy's file
                # after its write: not cached (its commit leaves it out), nothing corrupt.
                log.debug("cached block %s was evicted before its record was committed", key.hex())
                return
            # Its file goes, and any older record of the key with it (in one transaction): a record
            # left without its file would be merged with the chunks of the next file made there.
            if not self.index.remove(key, unlink=self.files.remove):
                self.files.remove(key)
        elif not self.index.remove(key, unlink=self.files.remove, only=current):
            return
        log.warning("dropping cached block: %s", exc)
        self.stats.corrupt += 1

    def _store(self, obj: ObjectId, key: bytes, data: Piece) -> None:
        crcs = self.files.write(key, data)
        self.index.commit(identity(obj, self.block_size), key, BlockRecord(len(data), crcs, time.time()),
                          present=self.files.exists)

    def _remember(self, key: bytes, data: Piece) -> None:
        if len(data) > self._memory_limit:
            return
        self._memory[key] = data
        self._memory_bytes += len(data)
        while self._memory_bytes > self._memory_limit:
            old_key, old = self._memory.popitem(last=False)
            self._memory_bytes -= len(old)
            if self._ahead.get(old_key) == _IN_MEMORY:
                self._unread_lost(old_key)

    # --- blocks fetched ahead -----------------------------------------------------------

    def _moved(self, key: bytes, where: int) -> None:
        """A block fetched ahead, if still unread, is now `where`."""
        if key in self._ahead:
            self._ahead[key] = where

    def _off_disk(self, key: bytes) -> None:
        """A block's file is gone (evicted) or was never written: if it was fetched ahead and not
        read yet, its copy in memory is the last one, or there is none left."""
        if self._ahead.get(key, _IN_MEMORY) == _IN_MEMORY:
            return
        if key in self._memory:
            self._ahead[key] = _IN_MEMORY
        else:
            self._unread_lost(key)

    def _unread_lost(self, key: bytes) -> None:
        del self._ahead[key]
        self.stats.prefetched_unread += 1

    # --- housekeeping -------------------------------------------------------------------

    def flush_touches(self) -> None:
        """Write the batched last-access times and traffic figures (blocking)."""
        touched, self._touched = self._touched, set()
        if touched:
            self.index.touch(touched)
        taken = self._take_traffic()
        if not self._flush_traffic(taken):
            self._restore_traffic(taken)

    def _take_traffic(self) -> dict[str, tuple[int, int]]:
        """The traffic counted since the last flush (on the loop, which owns the counters)."""
        traffic, self._traffic = self._traffic, {}
        return {name: (t.fetched, t.served) for name, t in traffic.items() if t.fetched or t.served}

    def _flush_traffic(self, traffic: dict[str, tuple[int, int]]) -> bool:
        """Add the figures to the index (blocking); False if it could not take them."""
        if not traffic:
            return True
        try:
            self.index.add_traffic(traffic)
        except lmdb.Error as exc:  # a full cache disk: figures only, kept for the next try
            log.warning("cache index: traffic figures not recorded: %s", exc)
            return False
        return True

    def _restore_traffic(self, traffic: dict[str, tuple[int, int]]) -> None:
        for name, (fetched, served) in traffic.items():
            kept = self._traffic.setdefault(name, Traffic())
            kept.fetched += fetched
            kept.served += served

    async def traffic(self) -> dict[str, Traffic]:
        """Bytes fetched and served by store ("store/bucket") for the cache's whole life, by every
        daemon that used this cache dir, this one's latest included."""
        recorded = await self._io(self.index.traffic)
        found = {name: Traffic(fetched, served) for name, (fetched, served) in recorded.items()}
        for name, t in self._traffic.items():
            total = found.setdefault(name, Traffic())
            total.fetched += t.fetched
            total.served += t.served
        return found

    async def run_housekeeping(self) -> None:
        """Forever: flush access times now and then, so a hit costs no LMDB write."""
        while True:
            await trio.sleep(TOUCH_FLUSH_INTERVAL)
            touched, self._touched = self._touched, set()
            if touched:
                try:
                    await self._io(self.index.touch, touched)
                except lmdb.Error as exc:  # a full cache disk: access times are only a hint
                    log.warning("cache index: access times not recorded: %s", exc)
            taken = self._take_traffic()
            if not await self._io(self._flush_traffic, taken):
                self._restore_traffic(taken)

    def enable_eviction(self, limits: CacheLimits, interval: float = EVICTION_INTERVAL, *,
                        clock: Callable[[], float] = time.time,
                        statvfs: Callable[[str], StatVfs] = os.statvfs) -> None:
        """Keep the cache within `limits` once `run_eviction` runs (the daemon calls this before)."""
        self._evictor = Evictor(self.index, self.files, clock=clock, statvfs=statvfs)
        self._limits = limits
        self._eviction_interval = interval

    def capacity(self) -> int:
        """About how many bytes of blocks stay cached: in memory, or on disk within max_size and
        the cache disk's size less min_free (blocking: a statvfs)."""
        disk = self._limits.max_size if self._limits.max_size is not None else 1 << 62
        if self._evictor is not None:
            size = self._evictor.disk_size()
            reserved = self._limits.min_free.required(size) if self._limits.min_free is not None else 0
            disk = min(disk, max(0, size - reserved))
        return max(self._memory_limit, disk)

    async def run_eviction(self) -> None:
        """Forever: evict at start, every `interval`, and at once when a commit crosses a limit or
        the cache disk fills up; again a moment later when blocks being read kept the cache over
        a limit, so the limits hold at rest. Returns at once if eviction is not enabled."""
        if self._evictor is None:
            return
        while True:
            wait = self._eviction_interval
            try:
                report = await self.evict_now()
                if not report.satisfied and report.skipped_in_use:
                    wait = min(wait, EVICTION_RETRY)
            except Exception as exc:  # a failed pass must not take the mount down; the next one retries
                log.warning("cache eviction failed: %s", exc)
            with trio.move_on_after(wait):
                await self._eviction_wanted.wait()
            self._eviction_wanted = trio.Event()

    async def evict_now(self, extra_free: int = 0) -> EvictionReport:
        """One eviction pass (`extra_free`: bytes the disk must have available beyond min_free).
        Blocks being fetched, read from their files, or written but not committed are in use and
        kept. A block held in memory is not: its copy in memory stays and is served; an idle open
        file of an evicted block is closed, as its descriptor would hold the disk space."""
        if self._evictor is None:
            return EvictionReport()
        in_use = self.in_use()
        incoming = self._landing + sum(record.stored for _, _, record in self._to_commit)
        self._eviction_epoch += 1
        try:
            with trio.CancelScope(shield=True):  # records removed must have their files removed too
                report = await self._io(partial(self._evictor.evict, self._limits, in_use.__contains__,
                                                extra_free=extra_free, incoming=incoming))
        finally:
            self._eviction_epoch += 1
        self._known_bytes = report.totals.bytes
        self._forget(report.keys)
        self.stats.evicted += report.removed_blocks
        if report.removed_blocks:
            log.info("evicted %d cached blocks (%d bytes, %d expired)", report.removed_blocks,
                     report.removed_bytes, report.expired)
        return report

    async def make_room(self, needed: int) -> bool:
        """Evict clean blocks at once for a staged write that found the cache disk full: until it
        has `needed` bytes available beyond min_free, and some more, so the writes that follow do
        not each wait for a pass. False if there is no more to gain (nothing left to evict, and
        no room either): the write's NoSpace stands."""
        if self._evictor is None:
            return False
        async with self._room_lock:  # writers that failed together: the second sees the room made
            evictor = self._evictor
            spare = min(ROOM_AHEAD, await self._io(evictor.disk_size) // 8)
            report = await self.evict_now(needed + spare)
        self.stats.room_made += report.removed_blocks
        if report.removed_blocks:
            log.info("made room for staged writes: %d cached blocks evicted", report.removed_blocks)
        return report.removed_blocks > 0 or report.free_deficit == 0

    def staged(self, nbytes: int) -> None:
        """`nbytes` were staged on the cache disk: now and then, have min_free checked at once
        (blocks give way to staged data without waiting for the periodic pass)."""
        self._staged += nbytes
        if self._staged >= STAGED_CHECK:
            self._staged = 0
            self._eviction_wanted.set()

    def in_use(self) -> frozenset[bytes]:
        """The keys eviction must keep, as of now (taken on the event loop, which owns these maps)."""
        keys = set(self._in_flight)
        keys.update(self._reading)
        keys.update(key for _, key, _ in self._to_commit)
        return frozenset(keys)

    def _forget(self, keys: tuple[bytes, ...]) -> None:
        for key in keys:
            block = self._open_blocks.pop(key, None)
            if block is not None:
                block.close()
            self._off_disk(key)

    async def totals(self) -> IndexTotals:
        """What the index holds, the blocks written but not yet committed included."""
        return await self._io(self._committed_totals)

    def _committed_totals(self) -> IndexTotals:
        self._commit_pending()
        return self.index.totals()

    async def startup(self) -> int:
        """Clear what a killed predecessor left half-written."""
        return await self._io(self.files.remove_orphan_temps)

