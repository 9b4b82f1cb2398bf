"""Keeping the block cache within its limits: bytes, files, age, and free space on its disk.

Eviction only ever touches blocks listed in the index. Staged uploads (`<cache_dir>/staging`) and
the upload journal (`<cache_dir>/journal`) are not in it, so they are never evicted, and the byte
and file limits count block files only (their apparent sizes; the index and staged data are extra,
which is what `min_free` is for).

Victims are chosen and their records removed inside one LMDB write transaction, oldest last
access first (from the index's lru sub-db), so several daemons sharing one cache dir, each with
its own evictor, never evict more than needed between them: the second sees the totals the first
left. Their files are unlinked inside that transaction too, before it commits: a daemon that
fetched one of those blocks again meanwhile commits its record only after this one, and only if
its file is still there (`CacheIndex.commit_many`), so a record never outlives its file. A reader
that already has a block file open keeps reading the unlinked file; one that looks the block up
afterwards finds no record and fetches it again. If the commit fails after the unlinks, records
are left without files: readers drop them as missing, and `verify` does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import lmdb

from mountfs.cache.blocks import BlockFiles
from mountfs.cache.index import BlockRecord, CacheIndex, IndexTotals, split_lru_key
from mountfs.config import CacheConfig, MinFree

log = logging.getLogger(__name__)

BATCH = 4096  # records removed per write transaction: bounds how long other daemons wait to commit
HEADROOM = 0.02  # a daemon evicts this far below max_size/max_files, so not every commit evicts


class StatVfs(Protocol):
    """The fields of os.statvfs_result the free-space limit needs (tests pass a fake)."""

    @property
    def f_frsize(self) -> int: ...
    @property
    def f_blocks(self) -> int: ...
    @property
    def f_bavail(self) -> int: ...


@dataclass(frozen=True)
class CacheLimits:
    """What the cache must respect; None means no such limit.

    `headroom` (a fraction): once over max_size or max_files, evict down to that much below it,
    so a cache at its limit evicts in batches rather than after every commit."""

    max_size: int | None = None
    max_files: int | None = None
    expiry: float | None = None
    min_free: MinFree | None = None
    headroom: float = 0.0

    @classmethod
    def from_config(cls, cache: CacheConfig, headroom: float = HEADROOM) -> CacheLimits:
        return cls(cache.max_size, cache.max_files, cache.expiry, cache.min_free, headroom)

    def over(self, totals: IndexTotals) -> bool:
        """Past max_size or max_files (the cheap check made after each commit)."""
        return ((self.max_size is not None and totals.bytes > self.max_size)
                or (self.max_files is not None and totals.blocks > self.max_files))

    def _target(self, limit: int | None) -> int | None:
        return None if limit is None else limit - int(limit * self.headroom)


@dataclass(frozen=True)
class EvictionReport:
    removed_blocks: int = 0
    removed_bytes: int = 0
    expired: int = 0  # of the removed blocks, those unused for longer than the expiry
    skipped_in_use: int = 0  # blocks that would have gone but were in use
    missing_files: int = 0  # removed records whose file was already gone
    free_deficit: int = 0  # bytes min_free asked for when eviction started
    totals: IndexTotals = field(default_factory=lambda: IndexTotals(0, 0))  # after eviction
    satisfied: bool = True  # False: blocks in use kept the cache over a limit
    keys: tuple[bytes, ...] = field(default=(), repr=False)  # removed blocks (if collected)


def _nothing_in_use(key: bytes) -> bool:
    return False


class Evictor:
    """Removes blocks until the limits hold. Blocking: run it in a worker thread.

    `clock` and `statvfs` are injectable so tests drive expiry and free space without waiting
    or filling a disk."""

    def __init__(self, index: CacheIndex, files: BlockFiles, *, clock: Callable[[], float] = time.time,
                 statvfs: Callable[[str], StatVfs] = os.statvfs, batch: int = BATCH) -> None:
        self.index = index
        self.files = files
        self.clock = clock
        self.statvfs = statvfs
        self.batch = batch

    def free_deficit(self, min_free: MinFree | None, extra: int = 0) -> int:
        """Bytes to free so the cache disk keeps `min_free` and `extra` bytes more available
        (0 if it does already)."""
        if min_free is None and extra <= 0:
            return 0
        st = self.statvfs(self.files.root)
        required = (0 if min_free is None else min_free.required(st.f_blocks * st.f_frsize)) + extra
        return max(0, required - st.f_bavail * st.f_frsize)

    def disk_size(self) -> int:
        st = self.statvfs(self.files.root)
        return st.f_blocks * st.f_frsize

    def evict(self, limits: CacheLimits, in_use: Callable[[bytes], bool] = _nothing_in_use,
              now: float | None = None, collect_keys: bool = True, extra_free: int = 0,
              incoming: int = 0) -> EvictionReport:
        """Remove blocks, least recently used first, until every limit holds and the disk has
        `extra_free` bytes available beyond `min_free` (room a staged write is waiting for); blocks
        for which `in_use(key)` is true are kept. Expired blocks go whatever the totals.
        `incoming`: bytes of blocks about to be recorded (being written): max_size makes room
        for them too.

        `in_use` is called inside the LMDB write transaction (other daemons wait to commit
        meanwhile): make it a set lookup, not a call back into the event loop or the index."""
        now = self.clock() if now is None else now
        cutoff = None if limits.expiry is None else now - limits.expiry
        deficit = self.free_deficit(limits.min_free, extra_free)
        before = self.index.totals()
        over = limits.over(IndexTotals(before.blocks, before.bytes + incoming))
        max_size = limits._target(limits.max_size) if over else limits.max_size
        max_files = limits._target(limits.max_files) if over else limits.max_files
        removed_blocks = removed_bytes = expired = missing = 0
        skipped: set[bytes] = set()
        keys: list[bytes] = []
        gone: set[bytes] = set()  # files unlinked for a transaction that then failed
        while True:
            victims: list[tuple[bytes, BlockRecord]] = []
            unlinked = False
            batch_expired = 0
            try:
                with self.index.env.begin(write=True) as txn:
                    totals = self.index.totals_in(txn)
                    need_bytes = max(0 if max_size is None else totals.bytes + incoming - max_size,
                                     deficit - removed_bytes)
                    need_files = 0 if max_files is None else totals.blocks - max_files
                    stale: list[bytes] = []
                    cursor = txn.cursor(db=self.index.lru)
                    positioned = cursor.first()
                    full = False
                    while positioned:
                        when, key = split_lru_key(cursor.key())
                        is_expired = cutoff is not None and when < cutoff
                        if not is_expired and need_bytes <= 0 and need_files <= 0:
                            break
                        if len(victims) >= self.batch:
                            full = True
                            break
                        raw = txn.get(key, db=self.index.blocks)
                        if raw is None:
                            stale.append(cursor.key())  # an lru entry without its record: drop it
                        elif in_use(key):
                            skipped.add(key)
                        else:
                            record = BlockRecord.unpack(raw)
                            victims.append((key, record))
                            need_bytes -= record.stored
                            need_files -= 1
                            batch_expired += is_expired
                        positioned = cursor.next()
                    for lru_entry in stale:
                        txn.delete(lru_entry, db=self.index.lru)
                    for key, _ in victims:
                        self.index.remove_in(txn, key)
                    batch_bytes = sum(record.stored for _, record in victims)
                    self.index.add_totals(txn, -len(victims), -batch_bytes)
                    totals = self.index.totals_in(txn)
                    for key, _ in victims:  # inside the transaction: see the module's docstring
                        if key not in gone:
                            missing += not self.files.remove(key)
                    unlinked = True
            except lmdb.DiskError:
                if gone or not victims:
                    raise
                # The index could not take even the removal of records on a disk this full: with
                # their files unlinked (by the transaction that failed, or now) there is room for
                # the same removal, tried once more.
                log.warning("cache disk full to the last byte: %d block files removed before their "
                            "records", len(victims))
                for key, _ in victims:
                    if not unlinked:
                        self.files.remove(key)
                    gone.add(key)
                continue
            gone.clear()
            removed_blocks += len(victims)
            removed_bytes += batch_bytes
            expired += batch_expired
            if collect_keys:
                keys.extend(key for key, _ in victims)
            if not full:
                break
        satisfied = need_bytes <= 0 and need_files <= 0
        if not satisfied and (skipped or deficit <= removed_bytes):  # in use, or being written
            log.debug("cache over its limits after eviction: %d blocks in use kept", len(skipped))
        elif not satisfied:
            log.warning("cache disk short of free space (min_free, room for staged writes) "
                        "with no cached block left to evict")
        return EvictionReport(removed_blocks, removed_bytes, expired, len(skipped), missing, deficit,
                              totals, satisfied, tuple(keys))
