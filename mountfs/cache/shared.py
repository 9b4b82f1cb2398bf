"""The second cache level: blocks kept in a bucket a fleet of nodes shares, so the origin sends each
block once to the fleet instead of once to each node.

It sits between the block cache and the origin: the block cache's fetch of a stretch of blocks
(a demand read or a readahead alike) asks the shared bucket for each block first, and the origin
only for those it lacks. Single-flight per block on a node holds across both levels, as both are
behind the one fetch the block cache already makes once per block. A node whose look-ups keep
missing (the first to read a data set) stops waiting for them: it fetches from the origin at once
and looks up in the background, only to learn which blocks to write; its first hit ends that.
It keeps whole blocks only: a read at random takes a whole block from here when it is here (`find`),
else fetches a few chunks of it from the origin; those, and the rest of a block partly cached, are
fetched from the origin and not written here.

Each shared object is one block with a header: the identity of the object version it belongs to
(store endpoint, bucket, key, ETag or generation, block size, cache format), the block index, its
length and a CRC-32C of the data. Its key is the block's local cache key (a digest of the same
fields), so a changed object never meets its old blocks; the header is checked on every read
anyway, so a block corrupted, cut short, or copied over another's key is a miss, counted and never
served. Nodes write a block with one PUT (readers see all of it or nothing) and never delete: the
store's lifecycle rule expires old blocks (see docs/fleet.md).

The shared cache is only ever an optimisation: a call that fails or takes longer than `timeout`
is a miss, and the level that failed (reads or writes) is left alone for a while, doubling up to
MAX_BACKOFF, then tried again, so a node notices when it is back. Blocks fetched from the origin
are written in the background, one PUT each and nothing else (no HEAD after it), from a queue that
holds their bytes up to `queue_bytes`; beyond that it holds only their names, and the writer reads
them back from the node's own disk cache (`reload`), so a node reading faster than the shared store
takes PUTs still writes every block, later. Past that bound too blocks are dropped, never making a
reader wait. Calls run in worker threads that are abandoned when they time out (a hung store must
not hold a reader): look-ups at most `threads` at once, writes on threads of their own, so writes
never hold up a look-up.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import crc32c
import trio

from mountfs.backends.base import ObjectId, ObjectStore
from mountfs.backends.registry import open_store
from mountfs.buffers import Piece
from mountfs.cache.index import block_key, identity, stretches
from mountfs.config import Config
from mountfs.config.model import RetryConfig
from mountfs.errors import MountfsError, NotFound, Stale, without_credentials

log = logging.getLogger(__name__)

T = TypeVar("T")
Origin = Callable[[int, int], Awaitable[list[Piece]]]
"""origin(start, length) -> the object's bytes in that range as block-sized pieces (the block
cache's Fetch)."""
Reload = Callable[[bytes], "Piece | None"]
"""reload(local block key) -> the block from the node's disk cache, checked, or None (in a worker
thread)."""

MAGIC = b"MFSBLK1\n"
_U32 = struct.Struct("<I")
MIN_BACKOFF = 5.0  # seconds a failing level is left alone, doubling...
MAX_BACKOFF = 60.0  # ...up to this
LOG_INTERVAL = 60.0  # at most one log line this often
WRITERS = 4  # PUTs in flight
QUEUE_BYTES = 64 * 1024 * 1024  # bytes of blocks held in memory waiting for a PUT (and for a look-up)
SPILLED = 65536  # blocks waiting for a PUT beyond that, read back from the disk cache; then dropped
THREADS = 16  # worker threads looking blocks up in the shared store, hung ones included
MISSES_IN_A_ROW = 16  # look-ups missing in a row after which fetches stop waiting for them
QUIET = 0.2  # seconds without an origin fetch after which every writer writes; before, one only


_calling = threading.local()  # set in a worker thread while it calls the shared store
QUIETED = ("mountfs.backends.retry", "mountfs.backends.s3", "mountfs.backends.s3_get", "mountfs.backends.gcs",
           "mountfs.backends.azure", "mountfs.backends.http1", "mountfs.backends.deadline",
           "urllib3.connectionpool")
"""Loggers whose lines about a shared-store call are left out: the adapters log every retry and
every call given up, which for a shared store that is down would be lines a second, where the
shared cache logs one a minute itself."""


class _QuietSharedCalls(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_calling, "shared", False)


_QUIET = _QuietSharedCalls()


def _quietly(fn: Callable[[], T]) -> T:
    _calling.shared = True
    try:
        return fn()
    finally:
        _calling.shared = False


@dataclass
class SharedStats:
    hits: int = 0  # blocks served from the shared cache
    misses: int = 0  # blocks looked for and not there (or not usable: errors, corrupt)
    bytes_read: int = 0
    bytes_written: int = 0
    writes: int = 0  # blocks written (one PUT each)
    errors: int = 0  # calls that failed or timed out
    corrupt: int = 0  # blocks found but failing their header check: never served
    dropped: int = 0  # blocks not written: the queue was full or writes were failing
    skipped: int = 0  # blocks of objects larger than max_object_size, or while reads were failing

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class _TimedOut(Exception):
    pass


class _Level:
    """Whether reads (or writes) of the shared store are worth trying now: after a failure, not for
    a back-off that doubles while failures go on; the first call after it is the probe."""

    def __init__(self) -> None:
        self.down_until: float | None = None
        self.backoff = MIN_BACKOFF
        self.since = 0.0  # when the failures began

    def usable(self, now: float) -> bool:
        return self.down_until is None or now >= self.down_until

    @property
    def failing(self) -> bool:
        return self.down_until is not None

    def failed(self, now: float) -> None:
        if self.down_until is not None and now < self.down_until:
            return  # calls started before the first failure was known: one back-off for all
        self.down_until = now + self.backoff
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    def answered(self) -> bool:
        """True if this answer ends a failure."""
        was = self.down_until is not None
        self.down_until = None
        self.backoff = MIN_BACKOFF
        return was


def header_meta(obj: ObjectId, block_size: int, index: int, length: int) -> bytes:
    """The header fields of one block, canonical: a block matches only its own."""
    return b'{"identity":%s,"index":%d,"length":%d}' % (identity(obj, block_size), index, length)


def encode(meta: bytes, data: Piece) -> bytes:
    """One shared object: magic, header length, header, CRC-32C of the data, the data."""
    return b"".join((MAGIC, _U32.pack(len(meta)), meta, _U32.pack(crc32c.crc32c(data)), data))


def overhead(meta: bytes) -> int:
    return len(MAGIC) + 2 * _U32.size + len(meta)


def decode(blob: bytes, meta: bytes, length: int) -> memoryview | str:
    """The block's data, or what is wrong with the object found under its key."""
    head = overhead(meta)
    if len(blob) < head + length:
        return f"short ({len(blob)} bytes, expected {head + length})"
    if len(blob) > head + length:
        return f"too long ({len(blob)} bytes, expected {head + length})"
    if blob[:len(MAGIC)] != MAGIC:
        return "not a mountfs block"
    start = len(MAGIC) + _U32.size
    if _U32.unpack_from(blob, len(MAGIC))[0] != len(meta) or blob[start:start + len(meta)] != meta:
        return "the header names another block"
    data = memoryview(blob)[head:]
    if _U32.unpack_from(blob, head - _U32.size)[0] != crc32c.crc32c(data):
        return "checksum mismatch"
    return data


class SharedCache:
    """The shared level of one mount daemon. `run` (in the daemon's nursery) writes blocks."""

    def __init__(self, store: ObjectStore, prefix: str, block_size: int, *, write: bool = True,
                 max_object_size: int | None = None, timeout: float = 5.0, threads: int = THREADS,
                 queue_bytes: int = QUEUE_BYTES, spilled: int = SPILLED, writers: int = WRITERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.block_size = block_size
        self.write = write
        self.max_object_size = max_object_size
        self.timeout = timeout
        self.stats = SharedStats()
        self.reads = _Level()
        self.writes = _Level()
        self._clock = clock
        self.reload: Reload | None = None  # set by the daemon: its block cache's disk
        self._limiter = trio.CapacityLimiter(threads)
        self._writers = writers
        self._write_limiter = trio.CapacityLimiter(writers)
        self._queue: deque[tuple[ObjectId, int, int, Piece | None]] = deque()  # no bytes: reload them
        self._queued: set[str] = set()
        self._queued_bytes = 0
        self._queue_bytes = queue_bytes
        self._spilled = 0
        self._max_spilled = spilled
        self._misses_in_row = 0
        self._checking: set[str] = set()  # looked up in the background, the block held meanwhile
        self._checking_bytes = 0
        self._nursery: trio.Nursery | None = None
        self._fetching = 0  # origin fetches in flight
        self._fetched_at = float("-inf")  # when the last one ended
        self._wake = trio.Event()
        self._last_log = float("-inf")
        self._unlogged = 0
        for name in QUIETED:
            if _QUIET not in logging.getLogger(name).filters:
                logging.getLogger(name).addFilter(_QUIET)

    def describe(self) -> str:
        store = self.store.store_id
        where = f"file://{self.store.bucket}" if store == "file" else f"{store}/{self.store.bucket}"
        return without_credentials(f"{where}/{self.prefix}" if self.prefix else where)

    def key(self, obj: ObjectId, index: int) -> str:
        name = block_key(obj, self.block_size, index).hex()
        return f"{self.prefix}/{name}" if self.prefix else name

    def status(self) -> dict[str, object]:
        return {"url": self.describe(), "write": self.write, **self.stats.as_dict(),
                "reads_failing": self.reads.failing, "writes_failing": self.writes.failing,
                "queued": len(self._queued) + len(self._checking)}  # waiting or being written

    # --- reading ------------------------------------------------------------------------------

    async def fetch(self, obj: ObjectId, object_size: int, start: int, length: int,
                    origin: Origin) -> list[Piece]:
        """Blocks [start, start + length) of `obj` (start on a block boundary, as the block cache
        asks): those the shared cache has, the rest from the origin. Those it was asked for and does
        not have (or has spoiled) are queued for writing; those it could not be asked for are not
        (it may have them: one PUT per block)."""
        if self.max_object_size is not None and object_size > self.max_object_size:
            return await origin(start, length)
        size = self.block_size
        indices = range(start // size, (start + length + size - 1) // size)
        found: dict[int, Piece] = {}
        absent: set[int] = set()
        if not self.reads.usable(self._clock()):
            self.stats.skipped += len(indices)
        elif self._nursery is not None and self.write and self._misses_in_row >= MISSES_IN_A_ROW:
            # Nothing found for a while: the origin at once, the look-ups only decide the writes.
            pieces = await self._from_origin(obj, object_size, list(indices), start + length, origin)
            for index, piece in zip(indices, pieces, strict=True):
                self._check_later(obj, index, piece)
            return pieces
        else:
            found, absent = await self._lookup_many(obj, object_size, indices)
        out: dict[int, Piece] = dict(found)
        for run in stretches([i for i in indices if i not in found]):
            pieces = await self._from_origin(obj, object_size, run, start + length, origin)
            for index, piece in zip(run, pieces, strict=True):
                out[index] = piece
                if index in absent:
                    self._enqueue(obj, index, len(piece), piece)
        return [out[i] for i in indices]

    async def find(self, obj: ObjectId, object_size: int, index: int) -> Piece | None:
        """One whole block, if the shared cache has it sound (a read at random asks before it
        fetches a few chunks from the origin); None otherwise, and nothing is queued."""
        if (self.max_object_size is not None and object_size > self.max_object_size) or \
                not self.reads.usable(self._clock()):
            return None
        found = await self._lookup(obj, index, min(self.block_size, object_size - index * self.block_size))
        return None if isinstance(found, bool) else found

    def _quiet(self) -> bool:
        return not self._fetching and self._clock() - self._fetched_at >= QUIET

    async def _from_origin(self, obj: ObjectId, object_size: int, run: list[int], stop: int,
                           origin: Origin) -> list[Piece]:
        size = self.block_size
        run_start = run[0] * size
        run_length = min(size * len(run), stop - run_start)
        self._fetching += 1
        try:
            pieces = await origin(run_start, run_length)
        finally:
            self._fetching -= 1
            self._fetched_at = self._clock()
        expected = [min(size, object_size - i * size) for i in run]
        if [len(p) for p in pieces] != expected:
            got = sum(map(len, pieces))
            raise Stale(f"{obj.key}: expected {run_length} bytes at {run_start}, store returned {got}")
        return pieces

    def _check_later(self, obj: ObjectId, index: int, data: Piece) -> None:
        """Look a block already fetched from the origin up in the background, and queue it for
        writing if the shared cache lacks it; its bytes are held meanwhile within the queue's bound,
        past it only its name (the writer reads it back from disk)."""
        key = self.key(obj, index)
        if key in self._queued or key in self._checking:
            return
        held: Piece | None = data
        if self._checking_bytes + len(data) > self._queue_bytes:
            held = None
        if self._nursery is None or (held is None and (self.reload is None
                                                       or len(self._checking) >= self._max_spilled)):
            self.stats.dropped += 1  # stopping, or past every bound
            return
        self._checking.add(key)
        self._checking_bytes += len(held) if held is not None else 0
        self._nursery.start_soon(self._check, obj, index, len(data), held, key)

    async def _check(self, obj: ObjectId, index: int, length: int, held: Piece | None, key: str) -> None:
        try:
            if not self.reads.usable(self._clock()):
                self.stats.skipped += 1
                return
            if await self._lookup(obj, index, length, serve=False) is True:
                self._enqueue(obj, index, length, held)
        finally:
            self._checking.discard(key)
            self._checking_bytes -= len(held) if held is not None else 0

    async def _lookup_many(self, obj: ObjectId, object_size: int,
                           indices: range) -> tuple[dict[int, Piece], set[int]]:
        """The blocks found, and the indices of those known to be missing or spoiled there."""
        found: dict[int, Piece] = {}
        absent: set[int] = set()

        async def one(index: int) -> None:
            data = await self._lookup(obj, index, min(self.block_size, object_size - index * self.block_size))
            if isinstance(data, bool):
                if data:
                    absent.add(index)
            else:
                found[index] = data

        if len(indices) == 1:
            await one(indices[0])
        else:
            async with trio.open_nursery() as nursery:
                for index in indices:
                    nursery.start_soon(one, index)
        return found, absent

    async def _lookup(self, obj: ObjectId, index: int, length: int, serve: bool = True) -> Piece | bool:
        """The block's data; else True if it is missing or spoiled, False if the store did not say.
        `serve=False`: only whether it is there is wanted (its block came from the origin)."""
        meta = header_meta(obj, self.block_size, index, length)
        key = self.key(obj, index)
        try:
            # one byte more than expected: a longer object is caught, not cut to size
            blob = await self._call(self.store.get_range, key, 0, overhead(meta) + length + 1)
        except NotFound:
            self._answered(self.reads, "reads")
            self.stats.misses += 1
            self._misses_in_row += 1
            return True
        except Exception as exc:
            self._failed(self.reads, "reads", exc)
            self.stats.misses += 1
            return False
        self._answered(self.reads, "reads")
        data = decode(blob, meta, length)
        if isinstance(data, str):
            self.stats.corrupt += 1
            self.stats.misses += 1
            self._log(f"shared cache {self.describe()}: block {key} of {obj.key} not used: {data}")
            return True
        self._misses_in_row = 0
        if serve:
            self.stats.hits += 1
            self.stats.bytes_read += length
        return data

    # --- writing ------------------------------------------------------------------------------

    def _enqueue(self, obj: ObjectId, index: int, length: int, data: Piece | None) -> None:
        """Queue a block for its PUT: with its bytes within the queue's bound, else by name only
        (None: the writer reads it back from disk), else not at all."""
        if not self.write:
            return
        key = self.key(obj, index)
        if key in self._queued:
            return
        if not self.writes.usable(self._clock()):
            self.stats.dropped += 1
            return
        if data is not None and self._queued_bytes + length <= self._queue_bytes:
            self._queue.append((obj, index, length, data))
            self._queued_bytes += length
        elif self.reload is not None and self._spilled < self._max_spilled:
            self._queue.append((obj, index, length, None))  # on this node's disk: read back then
            self._spilled += 1
        else:
            self.stats.dropped += 1
            return
        self._queued.add(key)
        self._wake.set()

    async def run(self) -> None:
        """Forever: write queued blocks to the shared store (and look up in the background)."""
        if not self.write:
            return
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for n in range(self._writers):
                    nursery.start_soon(self._writer, n == 0)
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def _writer(self, always: bool) -> None:
        """One writer writes at all times; the others only while the node fetches nothing from
        the origin, so a reader's fetches do not share the node with a burst of PUTs (the queue
        keeps the blocks meanwhile, and they are written once it reads no more)."""
        while True:
            while not self._queue or not (always or self._quiet()):
                if self._queue:
                    await trio.sleep(QUIET / 2)
                    continue
                if self._wake.is_set():  # one event for all idle writers: each enqueue wakes them all
                    self._wake = trio.Event()
                await self._wake.wait()
            obj, index, length, held = self._queue.popleft()
            key = self.key(obj, index)
            try:
                if not self.writes.usable(self._clock()):
                    self.stats.dropped += 1
                    continue
                data = held if held is not None else await self._reload(obj, index, length)
                if data is None:  # evicted, or not yet on disk
                    self.stats.dropped += 1
                    continue
                meta = header_meta(obj, self.block_size, index, length)
                try:
                    await self._call(self._put, key, meta, data, limiter=self._write_limiter)
                except Exception as exc:
                    self._failed(self.writes, "writes", exc)
                    self.stats.dropped += 1
                    continue
                self._answered(self.writes, "writes")
                self.stats.writes += 1
                self.stats.bytes_written += length
            finally:
                self._queued.discard(key)
                if held is not None:
                    self._queued_bytes -= length
                else:
                    self._spilled -= 1

    async def _reload(self, obj: ObjectId, index: int, length: int) -> Piece | None:
        """A queued block's bytes, read back from this node's disk cache (checked there)."""
        if self.reload is None:
            return None
        try:
            data = await trio.to_thread.run_sync(self.reload, block_key(obj, self.block_size, index),
                                                 limiter=self._write_limiter)
        except Exception:  # the local cache's own trouble: the block is just not written
            return None
        return data if data is not None and len(data) == length else None

    def _put(self, key: str, meta: bytes, data: Piece) -> None:
        self.store.put_etag(key, encode(meta, data))  # its answer is all a cache needs: no HEAD

    async def drain(self) -> None:
        """Wait until the queue is empty and no write is in flight (for tests and benchmarks)."""
        while self._queued or self._checking:
            await trio.sleep(0.01)

    # --- calls and failures ---------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: object,
                    limiter: trio.CapacityLimiter | None = None) -> T:
        """`fn(*args)` in a worker thread, given up after `timeout` (the thread is left to finish)."""
        with trio.move_on_after(self.timeout):
            return await trio.to_thread.run_sync(_quietly, partial(fn, *args), abandon_on_cancel=True,
                                                 limiter=limiter or self._limiter)
        self.stats.errors += 1
        raise _TimedOut(f"no answer within {self.timeout:g} s")

    def _failed(self, level: _Level, what: str, exc: Exception) -> None:
        if not isinstance(exc, _TimedOut):
            self.stats.errors += 1
        was_failing = level.failing
        now = self._clock()
        level.failed(now)
        if not was_failing:
            level.since = now
            wait = (level.down_until or now) - now
            self._log(f"shared cache {self.describe()}: {what} failing, going to the origin "
                      f"(tried again in {wait:.0f} s): {exc}")
        else:
            self._log(f"shared cache {self.describe()}: {what} still failing after "
                      f"{now - level.since:.0f} s, going to the origin: {exc}")

    def _answered(self, level: _Level, what: str) -> None:
        if level.answered():
            self._log(f"shared cache {self.describe()}: {what} work again")

    def _log(self, message: str) -> None:
        """At most one line a LOG_INTERVAL: a fleet's shared cache going away must not flood logs."""
        now = self._clock()
        if now - self._last_log < LOG_INTERVAL:
            self._unlogged += 1
            return
        if self._unlogged:
            message += f" ({self._unlogged} more such events not logged)"
        self._last_log, self._unlogged = now, 0
        log.warning("%s", without_credentials(message))


def open_shared_cache(config: Config) -> SharedCache | None:
    """The shared level `config` names, or None. Opening does no I/O: a shared store that is down
    at mount time is found so at the first read, and the mount goes on without it meanwhile."""
    shared = config.shared_cache
    if shared is None:
        return None
    # Few, short retries: the origin is the fallback, not a long wait.
    retry = RetryConfig(attempts=2, base_delay=0.05, max_delay=0.5, budget=shared.timeout,
                        request_timeout=shared.timeout)
    try:
        store = open_store(shared.url, dataclasses.replace(config, retry=retry))
    except MountfsError as exc:
        log.warning("shared cache %s not used: %s", without_credentials(shared.url.raw), exc)
        return None
    return SharedCache(store, shared.url.prefix, config.cache.block_size, write=shared.write,
                       max_object_size=shared.max_object_size, timeout=shared.timeout)
