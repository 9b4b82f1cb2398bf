"""Reading ahead: each open file's access pattern decides how far ahead to fetch, and a shared
scheduler fetches those blocks in parallel, within a concurrency and a memory budget.

A handle that reads sequentially grows its window from one block, doubling up to the maximum; the
small out-of-order offsets that kernel readahead produces count as sequential; a real seek resets
the window to nothing. A read outside a stream (a jump, a footer, a first read not at offset 0)
is a read at random: the block cache then fetches only the chunks around it, not whole blocks.
Prefetched blocks land in the block cache through the same single-flight path as demand reads,
so a reader that gets there first simply joins the fetch in flight.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from mountfs.backends.base import ObjectId
from mountfs.cache.access import AccessMemory, ObjectAccess
from mountfs.cache.block_cache import BlockCache, Fetch

log = logging.getLogger(__name__)

CONFIRMING_READS = 2
# Consecutive blocks fetched ahead go in one request up to this size: per request, botocore costs
# about a millisecond of CPU, which at 4 MiB a request was a third of the daemon's time.
REQUEST_BYTES = 16 << 20
# A read this small that ends this close to the end of its file, and does not continue the one
# before, reads a footer (parquet, zip's central directory, an index at the end).
FOOTER_READ = 1 << 20
FOOTER_ZONE = 1 << 20
# Until reads are confirmed as a stream, one continues the one before only if it starts this close
# to where that ended: small random reads of a big file land within the tolerance of a stream
# (kernel readahead's disorder) often enough to be taken for one, fetching whole blocks.
CONFIRM_GAP = 256 * 1024


@dataclass
class ReadPattern:
    """One open file's reads, reduced to how many bytes past the current read to fetch, and
    whether the current read is part of a sequential stream (else: a read at random).

    `kind` names the last read: "stream" (sequential: whole blocks, a window ahead), "continuing"
    (follows the one before, not confirmed yet), "start" (a first read not at offset 0), "footer"
    or "jump". `objects` (shared by every handle) remembers objects read at random."""

    block_size: int
    max_window: int
    tolerance: int  # how far a read may start from where the last ended and still be sequential
    objects: AccessMemory | None = None
    next_offset: int = -1
    window: int = 0
    run: int = 0  # reads in a row that continued the one before
    run_start: int = 0  # where the reads in a row began
    kind: str = ""
    access: ObjectAccess | None = None

    @property
    def random(self) -> bool:
        """The last read is not part of a sequential stream (with or without a window ahead:
        readahead_max may be 0)."""
        return self.kind != "stream"

    def observe(self, offset: int, size: int, obj: ObjectId | None = None, object_size: int = 0) -> int:
        # A file's first read counts as sequential when it starts at the beginning, unless other
        # handles found the object read at random. Elsewhere it takes two continuations in a row:
        # one big random read reaches us as two or three adjacent requests, and reading blocks
        # ahead for it would waste a fetch per read.
        first = self.next_offset < 0
        if self.access is None and obj is not None and self.objects is not None:
            self.access = self.objects.of(obj)
        if first:
            continues = offset == 0 and not (self.access is not None and self.access.read_at_random)
        else:
            gap = self.tolerance if self.kind == "stream" else min(self.tolerance, CONFIRM_GAP)
            continues = abs(offset - self.next_offset) <= gap
        if continues:
            if first:
                self.run_start = offset
            self.run += 1
            self.next_offset = max(self.next_offset, offset + size)
            if first or self.kind == "stream" or self._confirmed():
                if self.kind != "stream" and self.access is not None:
                    self.access.streams += 1
                self.window = min(max(self.window * 2, self.block_size), self.max_window)
                self.kind = "stream"
            else:
                self.kind = "continuing"
            return self.window
        footer = bool(object_size and size <= FOOTER_READ and offset + size >= object_size - FOOTER_ZONE
                      and offset)
        if self.kind == "stream" and self.next_offset < offset <= self.next_offset + self.max_window \
                and not footer:
            # A stream that skips ahead less than its widest window is still one: another reader
            # of the file (a second `cat`) filled the kernel's pages in between.
            self.next_offset = offset + size
            return self.window
        self.run = 0
        self.run_start = offset
        self.window = 0
        self.next_offset = offset + size
        if footer:
            self.kind = "footer"
        elif first:
            self.kind = "start"
        else:
            self.kind = "jump"
        if self.access is not None and self.kind != "start":
            self.access.random += 1
        return self.window

    def _confirmed(self) -> bool:
        """Reads in a row make a stream; of an object read at random, only a block's worth of
        them: a reader of column chunks or members reads each in two or three adjacent requests,
        and the kernel's readahead may add one past its end, which whole blocks fetched ahead
        would multiply."""
        if self.run < CONFIRMING_READS:
            return False
        return self.access is None or not self.access.read_at_random \
            or self.next_offset - self.run_start >= self.block_size


@dataclass
class DirectoryPattern:
    """One directory's file opens, reduced to: are files being read in listing order?

    A dataset scan (tar, rsync, a DataLoader without shuffling, 8 readers taking files in turn)
    opens files at increasing positions a few apart; after `streak` such opens, the next files are
    worth fetching before they are asked for.
    """

    streak_needed: int = 2
    max_step: int = 16
    last: int = -1
    streak: int = 0
    fetched_through: int = -1  # the files up to this position were handed to the prefetcher

    def observe(self, position: int) -> bool:
        # Concurrent readers open a little out of order: a small step back still counts.
        step = position - self.last
        self.streak = self.streak + 1 if self.last >= 0 and 0 < abs(step) <= self.max_step else 0
        self.last = max(self.last, position) if self.streak else position
        return self.streak >= self.streak_needed


class PrefetchGroup:
    """The fetches one handle started, so that closing it stops them."""

    def __init__(self) -> None:
        self.scopes: set[trio.CancelScope] = set()
        self.closed = False

    def cancel(self) -> None:
        self.closed = True
        for scope in self.scopes:
            scope.cancel()


class PrefetchScheduler:
    """Starts block fetches ahead of readers, never more than `max_concurrency` at once nor more
    than `max_bytes` in flight, whatever the number of handles and the size of the files."""

    def __init__(self, cache: BlockCache, max_concurrency: int, max_bytes: int,
                 request_bytes: int = REQUEST_BYTES) -> None:
        self.cache = cache
        self.run_blocks = max(1, request_bytes // cache.block_size)
        self.max_concurrency = max_concurrency
        self.max_bytes = max_bytes
        self.active = 0
        self.bytes_in_flight = 0
        self.started = 0
        # How far ahead of its readers a fetched block stays cached (in memory or on disk): the
        # daemon sets it from the memory cache, max_size and the cache disk's size.
        self.ahead_bytes = 1 << 62
        self._scheduled: set[tuple[ObjectId, int]] = set()  # started, maybe not yet running
        self.nursery: trio.Nursery | None = None  # set by the daemon; None turns prefetch off

    def schedule(self, group: PrefetchGroup, obj: ObjectId, object_size: int, start: int, end: int,
                 fetch: Fetch) -> bool:
        """Fetch the blocks covering [start, end) that are not in memory or on their way. False
        if the concurrency or memory limit left some of them for later."""
        if self.nursery is None or group.closed or start >= object_size:
            return True
        block_size = self.cache.block_size
        # The window's end rounded up to a whole run: a window sliding one read at a time would
        # otherwise take blocks into it one by one, each a request of its own.
        last = min((object_size - 1) // block_size,
                   ((min(end, object_size) - 1) // block_size // self.run_blocks + 1) * self.run_blocks - 1)
        index = start // block_size
        while index <= last:
            if not self._wanted(obj, index):
                index += 1
                continue
            count = 1
            while count < self.run_blocks and index + count <= last and self._wanted(obj, index + count):
                count += 1
            length = min(count * block_size, object_size - index * block_size)
            if self.active >= self.max_concurrency or self.bytes_in_flight + length > self.max_bytes:
                return False  # the next read schedules the rest
            self.active += 1
            self.bytes_in_flight += length
            run = [(obj, i) for i in range(index, index + count)]
            self._scheduled.update(run)
            self.started += count
            self.nursery.start_soon(self._fetch, group, obj, object_size, index, count, length, fetch)
            index += count
        return True

    def _wanted(self, obj: ObjectId, index: int) -> bool:
        return (obj, index) not in self._scheduled and not self.cache.is_resident(obj, index)

    async def _fetch(self, group: PrefetchGroup, obj: ObjectId, object_size: int, first: int, count: int,
                     length: int, fetch: Fetch) -> None:
        try:
            with trio.CancelScope() as scope:
                group.scopes.add(scope)
                if group.closed:
                    scope.cancel()
                await self.cache.get_run(obj, object_size, first, count, fetch)
        except Exception as exc:  # the reader that needs these blocks will see the error itself
            log.debug("prefetch of %s blocks %d+%d failed: %s", obj.key, first, count, exc)
        finally:
            group.scopes.discard(scope)
            self._scheduled.difference_update((obj, i) for i in range(first, first + count))
            self.active -= 1
            self.bytes_in_flight -= length
