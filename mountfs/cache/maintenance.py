"""Cache tooling for `mountfs cache stats|prune|verify`: blocking library calls, safe while daemons
use the same cache dir.

Safe because every change is an LMDB transaction (daemons and this process serialize on LMDB's
writer lock), and a block file is removed only after its record is gone: a daemon either still
finds the record and a whole file, or no record and fetches the block again. Open a cache dir only
once per process (LMDB's rule): in a daemon, use the `*_index` forms with its own CacheIndex.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import lmdb

from mountfs.cache.blocks import CHECKSUM_FILE, TEMP_SUFFIX, BlockFiles, chunk_crcs
from mountfs.cache.eviction import CacheLimits, Evictor
from mountfs.cache.index import KEY_LENGTH, BlockRecord, CacheIndex, IndexTotals, current_identity, lru_key

# A block file written but whose record a daemon has not committed yet looks like an orphan: leave
# files this young alone (records are committed within moments of the rename).
ORPHAN_GRACE = 300.0
_SCAN_BATCH = 1024  # records read per read transaction: a long one would pin old LMDB pages
_REMOVE_BATCH = 1024
VERIFY_READ = 1024 * 1024  # bytes read at a time by check_block


@dataclass(frozen=True)
class CacheStatsReport:
    cache_dir: str
    blocks: int  # block files (one per cached block)
    bytes: int  # their total size
    objects: int  # object versions with at least one cached block
    oldest_access: float | None  # unix time of the least recently used block
    newest_access: float | None
    index_bytes: int  # the LMDB file itself
    staged_files: int  # staged uploads: not blocks, never evicted, not in blocks/bytes
    staged_bytes: int
    disk_size: int  # the file system holding the cache
    disk_free: int  # available to unprivileged users


@dataclass(frozen=True)
class PruneReport:
    removed_blocks: int
    removed_bytes: int
    totals: IndexTotals  # after pruning


@dataclass(frozen=True)
class VerifyReport:
    checked: int  # records whose file was read in full
    corrupt: int  # wrong length or a failed checksum: record and file dropped
    missing: int  # record without a file: record dropped
    outdated: int  # records of an older cache format, or of no known object: record and file dropped
    orphans: int  # block files without a record, removed
    temps: int  # temp files of dead writers, removed
    unknown: int  # files under blocks/ that mountfs did not write: left alone
    lru_rebuilt: bool  # the lru sub-db did not match the records and was rebuilt
    objects_dropped: int  # object entries without any block left
    totals_before: IndexTotals
    totals_after: IndexTotals  # recounted from the records

    @property
    def clean(self) -> bool:
        """Nothing needed repair."""
        return not (self.corrupt or self.missing or self.outdated or self.orphans or self.lru_rebuilt
                    or self.objects_dropped or self.totals_before != self.totals_after)


@contextlib.contextmanager
def open_cache(cache_dir: str) -> Iterator[tuple[CacheIndex, BlockFiles]]:
    """The index and block files of an existing cache dir; FileNotFoundError if there is none
    (a typo in a path must not create an empty cache)."""
    if not os.path.isdir(os.path.join(cache_dir, "index.lmdb")):
        raise FileNotFoundError(f"no mountfs cache in {cache_dir}")
    index = CacheIndex(cache_dir)
    try:
        yield index, BlockFiles(cache_dir)
    finally:
        index.close()


# --- stats ------------------------------------------------------------------------------------


def stats(cache_dir: str) -> CacheStatsReport:
    """Figures for `mountfs cache stats` (hit ratios come from the daemons' status instead)."""
    with open_cache(cache_dir) as (index, files):
        return stats_index(index, files)


def stats_index(index: CacheIndex, files: BlockFiles) -> CacheStatsReport:
    totals = index.totals()
    counts = index.counts()
    access = index.access_range()
    cache_dir = os.path.dirname(files.root)
    staged_files = staged_bytes = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(os.path.join(cache_dir, "staging")):
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False):
                    staged_files += 1
                    staged_bytes += entry.stat(follow_symlinks=False).st_size
    index_bytes = 0
    with contextlib.suppress(FileNotFoundError):
        index_bytes = os.stat(os.path.join(cache_dir, "index.lmdb", "data.mdb")).st_blocks * 512
    st = os.statvfs(files.root)
    return CacheStatsReport(
        cache_dir=cache_dir, blocks=totals.blocks, bytes=totals.bytes, objects=counts["objects"],
        oldest_access=access[0] if access else None, newest_access=access[1] if access else None,
        index_bytes=index_bytes, staged_files=staged_files, staged_bytes=staged_bytes,
        disk_size=st.f_blocks * st.f_frsize, disk_free=st.f_bavail * st.f_frsize)


# --- prune ------------------------------------------------------------------------------------


def prune(cache_dir: str, *, all: bool = False, older_than: float | None = None,
          to_size: int | None = None, to_files: int | None = None,
          clock: Callable[[], float] = time.time) -> PruneReport:
    """Remove cached blocks: every one (`all`), those unused for `older_than` seconds, and least
    recently used ones until at most `to_size` bytes and `to_files` blocks remain."""
    with open_cache(cache_dir) as (index, files):
        return prune_index(index, files, all=all, older_than=older_than, to_size=to_size,
                           to_files=to_files, clock=clock)


def prune_index(index: CacheIndex, files: BlockFiles, *, all: bool = False,
                older_than: float | None = None, to_size: int | None = None,
                to_files: int | None = None, clock: Callable[[], float] = time.time) -> PruneReport:
    if all:
        limits = CacheLimits(max_size=0, max_files=0)
    elif older_than is None and to_size is None and to_files is None:
        raise ValueError("nothing to prune: give all, older_than, to_size or to_files")
    else:
        limits = CacheLimits(max_size=to_size, max_files=to_files, expiry=older_than)
    report = Evictor(index, files, clock=clock).evict(limits, collect_keys=False)
    return PruneReport(report.removed_blocks, report.removed_bytes, report.totals)


# --- verify -----------------------------------------------------------------------------------


def verify(cache_dir: str, *, orphan_grace: float = ORPHAN_GRACE,
           clock: Callable[[], float] = time.time) -> VerifyReport:
    """Check every block (length and every chunk's checksum) and repair what is wrong: records of
    bad or missing blocks dropped, records of an older cache format (whose key lacks part of what
    decides a block's bytes, such as the block size) dropped, orphan block files and dead writers'
    temp files removed, the lru sub-db checked, the totals recounted."""
    with open_cache(cache_dir) as (index, files):
        return verify_index(index, files, orphan_grace=orphan_grace, clock=clock)


def verify_index(index: CacheIndex, files: BlockFiles, *, orphan_grace: float = ORPHAN_GRACE,
                 clock: Callable[[], float] = time.time) -> VerifyReport:
    totals_before = index.totals()
    checked = 0
    bad: list[tuple[bytes, BlockRecord]] = []
    current = _CurrentObjects(index)
    for key, record in _records(index):
        if not current(key):
            bad.append((key, record))  # never served: not worth reading
            continue
        checked += 1
        if check_block(files, key, record) != "ok":
            bad.append((key, record))
    corrupt, missing, outdated = _drop_bad(index, files, bad)
    orphans, unknown = _remove_orphans(index, files, clock() - orphan_grace)
    temps = files.remove_orphan_temps()
    lru_rebuilt, objects_dropped, totals_after = _recount(index)
    return VerifyReport(checked, corrupt, missing, outdated, orphans, temps, unknown, lru_rebuilt,
                        objects_dropped, totals_before, totals_after)


def check_block(files: BlockFiles, key: bytes, record: BlockRecord) -> str:
    """"ok", "missing" or "corrupt": the whole file against its record, a chunk at a time (of a
    partial block, the chunks its record says it holds)."""
    try:
        fd = os.open(files.path(key), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return "missing"
    try:
        chunk = files.chunk
        if os.fstat(fd).st_size != record.length or len(record.crcs) != -(-record.length // chunk):
            return "corrupt"
        if record.present is not None and record.chunk != chunk:
            return "corrupt"
        per_read = max(1, VERIFY_READ // chunk)  # a pread per 16 KiB chunk would crawl
        for first in range(0, len(record.crcs), per_read):
            data = os.pread(fd, per_read * chunk, first * chunk)
            got = chunk_crcs(data, files.checksum, chunk)
            if record.present is not None:  # a partial block: only the chunks it holds are checked
                got = tuple(crc if record.present >> (first + n) & 1 else 0 for n, crc in enumerate(got))
            if record.crcs[first:first + per_read] != got:
                return "corrupt"
        return "ok"
    except OSError:  # an unreadable sector is as bad as a wrong checksum
        return "corrupt"
    finally:
        os.close(fd)


def _records(index: CacheIndex) -> Iterator[tuple[bytes, BlockRecord]]:
    """Every record, a batch per read transaction, in key order; records added meanwhile after
    the current position are included, removed ones may be."""
    after = b""
    while True:
        with index.env.begin(db=index.blocks) as txn:
            cursor = txn.cursor()
            positioned = cursor.set_range(after) if after else cursor.first()
            if positioned and after and cursor.key() == after:
                positioned = cursor.next()
            batch: list[tuple[bytes, BlockRecord]] = []
            while positioned and len(batch) < _SCAN_BATCH:
                batch.append((bytes(cursor.key()), BlockRecord.unpack(cursor.value())))
                positioned = cursor.next()
        if not batch:
            return
        yield from batch
        after = batch[-1][0]
        if not positioned:
            return


class _CurrentObjects:
    """Whether a block key's object entry is one this cache format writes (remembered per object:
    records come in key order, so an object's blocks come together)."""

    def __init__(self, index: CacheIndex) -> None:
        self.index = index
        self._digest = b""
        self._current = False

    def __call__(self, key: bytes, txn: lmdb.Transaction[bytes] | None = None) -> bool:
        digest = key[:20]
        if txn is not None:
            return current_identity(digest, txn.get(digest, db=self.index.objects))
        if digest != self._digest:
            with self.index.env.begin(db=self.index.objects) as read:
                raw = read.get(digest)
                self._current = current_identity(digest, None if raw is None else bytes(raw))
            self._digest = digest
        return self._current


def _drop_bad(index: CacheIndex, files: BlockFiles,
              bad: list[tuple[bytes, BlockRecord]]) -> tuple[int, int, int]:
    """Drop bad blocks, record and file in one transaction. A daemon may have replaced a block
    since it was read (a refetch writes a new file and record), so each is checked again against
    its current record.
    Returns (corrupt, missing, outdated)."""
    current = _CurrentObjects(index)
    corrupt = missing = outdated = 0
    for start in range(0, len(bad), _REMOVE_BATCH):
        dropped: list[bytes] = []
        with index.env.begin(write=True) as txn:
            removed_bytes = 0
            for key, _ in bad[start:start + _REMOVE_BATCH]:
                raw = txn.get(key, db=index.blocks)
                if raw is None:
                    continue
                if current(key, txn):
                    verdict = check_block(files, key, BlockRecord.unpack(raw))
                else:
                    verdict = "outdated"
                if verdict == "ok":
                    continue
                record = index.remove_in(txn, key)
                assert record is not None
                files.remove(key)  # before the commit, as everywhere: see CacheIndex
                removed_bytes += record.stored
                dropped.append(key)
                corrupt += verdict == "corrupt"
                missing += verdict == "missing"
                outdated += verdict == "outdated"
            index.add_totals(txn, -len(dropped), -removed_bytes)
    return corrupt, missing, outdated


def _remove_orphans(index: CacheIndex, files: BlockFiles, older_than: float) -> tuple[int, int]:
    """Remove block files without a record (last modified before `older_than`). Returns
    (removed, unknown files left alone)."""
    removed = unknown = 0
    with os.scandir(files.root) as subdirs:
        for sub in subdirs:
            if not sub.is_dir(follow_symlinks=False):
                unknown += sub.name != CHECKSUM_FILE
                continue
            candidates: list[tuple[bytes, str]] = []
            with os.scandir(sub.path) as entries:
                for entry in entries:
                    if entry.name.endswith(TEMP_SUFFIX):
                        continue  # remove_orphan_temps knows whose they are
                    key = _key_of(sub.name, entry.name)
                    if key is None or not entry.is_file(follow_symlinks=False):
                        unknown += 1
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat(follow_symlinks=False).st_mtime < older_than:
                            candidates.append((key, entry.path))
            # A write transaction, though it writes nothing: a daemon recording one of these
            # blocks meanwhile waits for it, then finds the file gone (see CacheIndex).
            with index.env.begin(write=True, db=index.blocks) as txn:
                for key, path in candidates:
                    if txn.get(key) is None:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)
                            removed += 1
    return removed, unknown


def _key_of(subdir: str, name: str) -> bytes | None:
    if len(name) != 2 * KEY_LENGTH or not name.startswith(subdir) or len(subdir) != 2:
        return None
    try:
        key = bytes.fromhex(name)
    except ValueError:
        return None
    return key if key.hex() == name else None  # only the lowercase form BlockFiles writes


def _recount(index: CacheIndex) -> tuple[bool, int, IndexTotals]:
    """In one write transaction: the totals recounted from the records, the lru sub-db checked
    (one entry per record, at its last access) and rebuilt if not, object entries without any
    block dropped. Returns (lru rebuilt, objects dropped, totals)."""
    with index.env.begin(write=True) as txn:
        blocks = nbytes = 0
        lru_ok = True
        for key, raw in txn.cursor(db=index.blocks):
            record = BlockRecord.unpack(raw)
            blocks += 1
            nbytes += record.stored
            if lru_ok and txn.get(lru_key(bytes(key), record.last_access), db=index.lru) is None:
                lru_ok = False
        lru_ok = lru_ok and int(txn.stat(index.lru)["entries"]) == blocks
        if not lru_ok:
            index.rebuild_lru(txn)
        dangling: list[bytes] = []
        blocks_cursor = txn.cursor(db=index.blocks)
        for digest, _ in txn.cursor(db=index.objects):
            if not blocks_cursor.set_range(digest) or not blocks_cursor.key().startswith(digest):
                dangling.append(bytes(digest))
        for digest in dangling:
            txn.delete(digest, db=index.objects)
        totals = IndexTotals(blocks, nbytes)
        index.set_totals(txn, totals)
    return not lru_ok, len(dangling), totals
