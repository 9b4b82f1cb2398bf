"""The LMDB index of the block cache: which blocks exist, their checksums and last use.

A block is served only if its record is here, and the record is committed only after the
block file has been renamed into place: a kill -9 mid-write leaves an orphan temp file that
nobody reads, never a record pointing at half a block. LMDB is safe across processes, so
several daemons may share one cache dir. A record and its file go together across daemons too:
a block file is unlinked only inside the write transaction that drops its record, and a record
is committed only if its file is there, checked inside the transaction. Every method blocks:
call them from worker threads.

Besides the records, an "lru" sub-db holds one empty entry per block keyed by (last access, block
key), kept in step by every method that writes a record: eviction and expiry read blocks oldest
first from its front, without scanning a million records, and `stats` reads the oldest and newest
access from its two ends. A cache written before this sub-db existed gets it built once, on open.

The totals (`meta` db) count block files only: staged uploads (`<cache_dir>/staging`), the upload
journal and this index are not blocks, are never evicted, and are not counted.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import lmdb

from mountfs.backends.base import ObjectId

# LMDB reserves address space, not disk: the file grows only as records are written.
MAP_SIZE = 1 << 36
_RECORD = struct.Struct("<QdI")  # length, last access (unix seconds), number of chunk checksums
_TOTALS = struct.Struct("<QQ")  # blocks, bytes
_TOTALS_KEY = b"totals"
_TRAFFIC_PREFIX = b"traffic:"  # in meta, + "store/bucket": bytes fetched and bytes served, for good
_LRU_READY_KEY = b"lru-v1"  # in meta: the lru sub-db holds every record
_FORMAT_KEY = b"format"  # in meta: the newest CACHE_FORMAT that wrote to this cache dir
_GENERATION_KEY = b"generation"  # in meta: bumped by every transaction that drops a record
_GENERATION = struct.Struct("<Q")
_LRU_TIME = struct.Struct(">d")  # big-endian: non-negative doubles sort as their bytes
KEY_LENGTH = 28  # object digest (20) + block index (8)


def lru_key(key: bytes, last_access: float) -> bytes:
    """Where a block sits in the lru sub-db: by last access, then by key."""
    return _LRU_TIME.pack(max(0.0, last_access)) + key


def split_lru_key(raw: bytes) -> tuple[float, bytes]:
    return _LRU_TIME.unpack_from(raw)[0], bytes(raw[_LRU_TIME.size:])


CACHE_FORMAT = 2
"""What a block key covers and how a block file is laid out. Format 1 keyed blocks by store,
bucket, key and ETag only, so a cache dir reused with another block size served the bytes of
another block; its records are never looked up and `cache verify` drops them."""


@functools.lru_cache(maxsize=1024)
def identity(obj: ObjectId, block_size: int) -> bytes:
    """Everything that decides the bytes of an object's blocks, as canonical JSON: the store
    (its endpoint), bucket, key and version (ETag, generation; a local file's size, mtime_ns and
    inode), the block size and the cache format. Stored in the "objects" sub-db, so `verify`
    can tell a record of this format from an older one by hashing it again."""
    return json.dumps({"format": CACHE_FORMAT, "store": obj.store, "bucket": obj.bucket, "key": obj.key,
                       "etag": obj.etag, "block_size": block_size}, sort_keys=True).encode("ascii")


def digest_of(ident: bytes) -> bytes:
    return hashlib.blake2b(ident, digest_size=20).digest()


@functools.lru_cache(maxsize=16384)
def object_digest(obj: ObjectId, block_size: int) -> bytes:
    """20 bytes naming one layout of one version of one object: a changed object, or the same
    one cut into blocks of another size, never shares blocks with the other. Hashed because
    store keys can be longer than LMDB's 511. Remembered: every block lookup asks again."""
    return digest_of(identity(obj, block_size))


def block_key(obj: ObjectId, block_size: int, index: int) -> bytes:
    return object_digest(obj, block_size) + index.to_bytes(8, "big")


def stretches(indices: Iterable[int]) -> list[list[int]]:
    """Sorted block indices cut into runs of consecutive ones."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


def current_identity(digest: bytes, ident: bytes | None) -> bool:
    """Whether `ident` (an "objects" entry) is what this format writes for `digest`. Records of an
    older format, or without an entry, fail: they are never served, and `verify` drops them."""
    if ident is None or digest_of(ident) != digest:
        return False
    try:
        fields = json.loads(ident)
    except ValueError:
        return False
    return isinstance(fields, dict) and fields.get("format") == CACHE_FORMAT


def _format_of(raw: bytes | None) -> int:
    """The format a meta entry names; 1 (the first, which wrote none) when absent or unreadable."""
    try:
        return int(raw) if raw is not None else 1
    except ValueError:
        return 1


_PARTIAL = struct.Struct("<I")  # after the checksums of a partial block: its chunk size, then the bitmap


@dataclass(frozen=True)
class BlockRecord:
    """A block on disk: its length, a crc32 per checksum chunk (so a small read verifies only
    what it reads), and when it was last used.

    A block read at random may be partly present: `present` is then a bitmap of the chunks of
    `chunk` bytes its (sparse) file holds, and the checksums of the others are 0. None (what a
    record written before partial blocks existed reads as) is a whole block. A record packs the
    bitmap after the checksums, which a mountfs of the previous release ignores: it would read a
    partial block as whole, fail the checksum of a missing chunk and fetch the block again."""

    length: int
    crcs: tuple[int, ...]
    last_access: float
    present: int | None = None
    chunk: int = 0

    @property
    def whole(self) -> bool:
        return self.present is None

    @property
    def stored(self) -> int:
        """Bytes of the block its file holds (what the cache's size limits count)."""
        if self.present is None:
            return self.length
        total = self.present.bit_count() * self.chunk
        last = len(self.crcs) - 1
        if last >= 0 and self.present >> last & 1:
            total -= last * self.chunk + self.chunk - self.length
        return total

    def has(self, start: int, stop: int) -> bool:
        """Whether bytes [start, stop) of the block are in its file."""
        if self.present is None:
            return True
        if stop <= start:
            return True
        first, last = start // self.chunk, (stop - 1) // self.chunk
        wanted = ((1 << (last - first + 1)) - 1) << first
        return self.present & wanted == wanted

    def missing(self) -> list[tuple[int, int]]:
        """The stretches [start, stop) of the block its file lacks."""
        if self.present is None:
            return []
        stretches: list[tuple[int, int]] = []
        for number in range(len(self.crcs)):
            if self.present >> number & 1:
                continue
            start, stop = number * self.chunk, min(self.length, (number + 1) * self.chunk)
            if stretches and stretches[-1][1] == start:
                stretches[-1] = (stretches[-1][0], stop)
            else:
                stretches.append((start, stop))
        return stretches

    def merged(self, other: BlockRecord) -> BlockRecord:
        """This record with the chunks `other` (of the same block and file) holds too; whole when
        every chunk is then present."""
        if other.present is None or other.length != self.length:
            return other
        if self.present is None:
            return self
        present = self.present | other.present
        crcs = tuple(mine if present_mine else theirs for mine, theirs, present_mine in
                     zip(self.crcs, other.crcs, (self.present >> n & 1 for n in range(len(self.crcs))),
                         strict=True))
        when = max(self.last_access, other.last_access)
        if present == (1 << len(crcs)) - 1:
            return BlockRecord(self.length, crcs, when)
        return BlockRecord(self.length, crcs, when, present, self.chunk)

    def pack(self) -> bytes:
        raw = _RECORD.pack(self.length, self.last_access, len(self.crcs)) + struct.pack(
            f"<{len(self.crcs)}I", *self.crcs)
        if self.present is not None:
            raw += _PARTIAL.pack(self.chunk) + self.present.to_bytes(-(-len(self.crcs) // 8), "little")
        return raw

    @classmethod
    def unpack(cls, raw: bytes) -> BlockRecord:
        length, last_access, count = _RECORD.unpack_from(raw)
        crcs = struct.unpack_from(f"<{count}I", raw, _RECORD.size)
        tail = _RECORD.size + 4 * count
        if len(raw) <= tail:
            return cls(length, crcs, last_access)
        (chunk,) = _PARTIAL.unpack_from(raw, tail)
        present = int.from_bytes(raw[tail + _PARTIAL.size:], "little")
        return cls(length, crcs, last_access, present, chunk)

    def touched(self, when: float) -> BlockRecord:
        return dataclasses.replace(self, last_access=when)


@dataclass(frozen=True)
class IndexTotals:
    blocks: int
    bytes: int


@dataclass(frozen=True)
class Committed:
    """What commit_many did: the totals after it, and the blocks left out for their file was gone."""

    totals: IndexTotals
    missing: list[bytes]


class CacheIndex:
    def __init__(self, cache_dir: str) -> None:
        path = os.path.join(cache_dir, "index.lmdb")
        os.makedirs(path, exist_ok=True)
        # metasync=False keeps integrity on power loss (only the last commit may be undone);
        # a block whose file did not reach the disk then fails its checksum and is refetched.
        self.env = lmdb.open(path, map_size=MAP_SIZE, max_dbs=4, max_readers=512,
                             metasync=False, readahead=False)
        self.blocks = self.env.open_db(b"blocks")
        self.objects = self.env.open_db(b"objects")
        self.meta = self.env.open_db(b"meta")
        self.lru = self.env.open_db(b"lru")
        self._ensure_lru()
        # Records of an older format were here: blocks this mountfs never serves.
        self.older_format = self._mark_format()

    def _ensure_lru(self) -> None:
        """Build the lru sub-db of a cache written before it existed (once: the check and the
        build share one write transaction, so two daemons starting together build it once)."""
        with self.env.begin(db=self.meta) as txn:
            if txn.get(_LRU_READY_KEY) is not None:
                return
        with self.env.begin(write=True) as txn:
            if txn.get(_LRU_READY_KEY, db=self.meta) is not None:
                return
            self.rebuild_lru(txn)
            txn.put(_LRU_READY_KEY, b"1", db=self.meta)

    def _mark_format(self) -> bool:
        """Record CACHE_FORMAT in meta; True if records were there before it was recorded."""
        with self.env.begin(db=self.meta) as txn:
            if _format_of(txn.get(_FORMAT_KEY)) >= CACHE_FORMAT:
                return False
        with self.env.begin(write=True) as txn:
            if _format_of(txn.get(_FORMAT_KEY, db=self.meta)) >= CACHE_FORMAT:
                return False
            txn.put(_FORMAT_KEY, str(CACHE_FORMAT).encode(), db=self.meta)
            return int(txn.stat(self.blocks)["entries"]) > 0

    def rebuild_lru(self, txn: lmdb.Transaction[bytes]) -> None:
        """Refill the lru sub-db from the records, inside the caller's write transaction."""
        txn.drop(self.lru, delete=False)
        for key, raw in txn.cursor(db=self.blocks):
            txn.put(lru_key(bytes(key), BlockRecord.unpack(raw).last_access), b"", db=self.lru)

    def close(self) -> None:
        self.env.close()

    def lookup(self, key: bytes) -> BlockRecord | None:
        with self.env.begin(db=self.blocks) as txn:
            raw = txn.get(key)
        return None if raw is None else BlockRecord.unpack(raw)

    def commit(self, ident: bytes, key: bytes, record: BlockRecord,
               present: Callable[[bytes], bool] | None = None) -> bool:
        """Record a block whose file is already in place; `ident` is `identity()` of its object.
        False if `present` found its file gone (see commit_many)."""
        return not self.commit_many([(ident, key, record)], present).missing

    def commit_many(self, blocks: Iterable[tuple[bytes, bytes, BlockRecord]],
                    present: Callable[[bytes], bool] | None = None) -> Committed:
        """Record blocks whose files are already in place, in one transaction (one sync), with the
        totals after it, so the caller can tell whether a limit was crossed.

        `present(key)`, asked inside the write transaction, says whether the block's file is still
        there: block files are unlinked only inside a write transaction too (by any daemon sharing
        this dir), so a block whose file a pass unlinked between its write and this commit is left
        unrecorded (in `missing`) instead of becoming a record without its file."""
        missing: list[bytes] = []
        with self.env.begin(write=True) as txn:
            for ident, key, record in blocks:
                if present is not None and not present(key):
                    missing.append(key)
                    continue
                raw = txn.get(key, db=self.blocks)
                previous = None if raw is None else BlockRecord.unpack(raw)
                if previous is not None:
                    txn.delete(lru_key(key, previous.last_access), db=self.lru)
                    if not record.whole:  # chunks written by another reader of the same file stay
                        record = previous.merged(record)
                txn.put(key, record.pack(), db=self.blocks)
                txn.put(lru_key(key, record.last_access), b"", db=self.lru)
                digest = key[:20]
                if txn.get(digest, db=self.objects) is None:
                    txn.put(digest, ident, db=self.objects)
                added_blocks, added_bytes = 1, record.stored
                if previous is not None:
                    added_blocks, added_bytes = 0, record.stored - previous.stored
                self.add_totals(txn, added_blocks, added_bytes)
            return Committed(self.totals_in(txn), missing)

    def remove(self, key: bytes, unlink: Callable[[bytes], object] | None = None,
               only: BlockRecord | None = None) -> bool:
        """Drop one block's record (only if it is still `only`, when given); see remove_many."""
        with self.env.begin(write=True) as txn:
            if only is not None:
                raw = txn.get(key, db=self.blocks)
                if raw is None or BlockRecord.unpack(raw) != only:
                    return False
            record = self.remove_in(txn, key)
            if record is None:
                return False
            if unlink is not None:
                unlink(key)
            self.add_totals(txn, -1, -record.stored)
        return True

    def remove_many(self, keys: Iterable[bytes],
                    unlink: Callable[[bytes], object] | None = None) -> list[tuple[bytes, BlockRecord]]:
        """Drop the records of these blocks in one transaction; returns those that were there.
        `unlink(key)` removes each one's file inside the transaction, before the commit: a daemon
        committing the same block again waits for it, and finds the file it wrote gone or not."""
        removed: list[tuple[bytes, BlockRecord]] = []
        with self.env.begin(write=True) as txn:
            for key in keys:
                record = self.remove_in(txn, key)
                if record is not None:
                    removed.append((key, record))
                    if unlink is not None:
                        unlink(key)
            self.add_totals(txn, -len(removed), -sum(r.stored for _, r in removed))
        return removed

    def remove_in(self, txn: lmdb.Transaction[bytes], key: bytes) -> BlockRecord | None:
        """Drop one record (and its lru entry, and its object's entry if it was the object's last
        block) inside the caller's write transaction. The caller adjusts the totals."""
        raw = txn.get(key, db=self.blocks)
        if raw is None:
            return None
        record = BlockRecord.unpack(raw)
        txn.delete(key, db=self.blocks)
        txn.delete(lru_key(key, record.last_access), db=self.lru)
        self._bump_generation(txn)
        digest = key[:20]
        cursor = txn.cursor(db=self.blocks)
        if not cursor.set_range(digest) or not bytes(cursor.key()).startswith(digest):
            txn.delete(digest, db=self.objects)
        return record

    def _bump_generation(self, txn: lmdb.Transaction[bytes]) -> None:
        txn.put(_GENERATION_KEY, _GENERATION.pack(self.generation_in(txn) + 1), db=self.meta)

    def generation(self) -> int:
        """Changes whenever a record is dropped (by any process sharing the cache dir): a daemon
        holding block files open compares it to know when one of them may have lost its record."""
        with self.env.begin(db=self.meta) as txn:
            return self.generation_in(txn)

    def generation_in(self, txn: lmdb.Transaction[bytes]) -> int:
        raw = txn.get(_GENERATION_KEY, db=self.meta)
        return _GENERATION.unpack(raw)[0] if raw else 0

    def records_if_changed(self, seen: int,
                           keys: Iterable[bytes]) -> tuple[int, dict[bytes, BlockRecord] | None]:
        """The generation, and if it is not `seen` the records of these blocks (those there), as
        one snapshot."""
        with self.env.begin() as txn:
            generation = self.generation_in(txn)
            if generation == seen:
                return generation, None
            found: dict[bytes, BlockRecord] = {}
            for key in keys:
                raw = txn.get(key, db=self.blocks)
                if raw is not None:
                    found[key] = BlockRecord.unpack(raw)
        return generation, found

    def touch(self, keys: Iterable[bytes], when: float | None = None) -> None:
        """Move blocks to the young end of the LRU clock (batched by the caller). A block is
        never moved back: another daemon sharing the cache may have used it more recently."""
        when = time.time() if when is None else when
        with self.env.begin(write=True) as txn:
            for key in keys:
                raw = txn.get(key, db=self.blocks)
                if raw is None:
                    continue
                record = BlockRecord.unpack(raw)
                if record.last_access >= when:
                    continue
                txn.delete(lru_key(key, record.last_access), db=self.lru)
                txn.put(key, record.touched(when).pack(), db=self.blocks)
                txn.put(lru_key(key, when), b"", db=self.lru)

    def totals(self) -> IndexTotals:
        with self.env.begin() as txn:
            return self.totals_in(txn)

    def totals_in(self, txn: lmdb.Transaction[bytes]) -> IndexTotals:
        """The totals as the caller's transaction sees them."""
        raw = txn.get(_TOTALS_KEY, db=self.meta)
        return IndexTotals(*_TOTALS.unpack(raw)) if raw else IndexTotals(0, 0)

    def set_totals(self, txn: lmdb.Transaction[bytes], totals: IndexTotals) -> None:
        """Overwrite the totals (verify recounts them) inside the caller's write transaction."""
        txn.put(_TOTALS_KEY, _TOTALS.pack(totals.blocks, totals.bytes), db=self.meta)

    def add_traffic(self, traffic: dict[str, tuple[int, int]]) -> None:
        """Add bytes fetched and bytes served, by store, to the totals kept for the cache's life."""
        with self.env.begin(write=True, db=self.meta) as txn:
            for name, (fetched, served) in traffic.items():
                key = _TRAFFIC_PREFIX + name.encode()[:400]
                raw = txn.get(key)
                old = _TOTALS.unpack(raw) if raw is not None else (0, 0)
                txn.put(key, _TOTALS.pack(old[0] + fetched, old[1] + served))

    def traffic(self) -> dict[str, tuple[int, int]]:
        """Bytes fetched and bytes served by store, since the cache dir was made."""
        found: dict[str, tuple[int, int]] = {}
        with self.env.begin(db=self.meta) as txn:
            cursor = txn.cursor()
            positioned = cursor.set_range(_TRAFFIC_PREFIX)
            while positioned and bytes(cursor.key()).startswith(_TRAFFIC_PREFIX):
                name = bytes(cursor.key())[len(_TRAFFIC_PREFIX):].decode(errors="replace")
                found[name] = _TOTALS.unpack(cursor.value())
                positioned = cursor.next()
        return found

    def access_range(self) -> tuple[float, float] | None:
        """The oldest and newest last access of any block (the two ends of the lru sub-db)."""
        with self.env.begin(db=self.lru) as txn:
            cursor = txn.cursor()
            if not cursor.first():
                return None
            oldest = split_lru_key(cursor.key())[0]
            cursor.last()
            return oldest, split_lru_key(cursor.key())[0]

    def counts(self) -> dict[str, int]:
        """Entries per sub-db, straight from LMDB's own statistics (no scan)."""
        with self.env.begin() as txn:
            return {name: int(txn.stat(db)["entries"]) for name, db in
                    (("blocks", self.blocks), ("objects", self.objects), ("lru", self.lru))}

    def iter_blocks(self) -> Iterator[tuple[bytes, BlockRecord]]:
        with self.env.begin(db=self.blocks) as txn:
            for key, raw in txn.cursor():
                yield bytes(key), BlockRecord.unpack(raw)

    def add_totals(self, txn: lmdb.Transaction[bytes], blocks: int, nbytes: int) -> None:
        """Adjust the totals inside the caller's write transaction."""
        if blocks == 0 and nbytes == 0:
            return
        old = self.totals_in(txn)
        self.set_totals(txn, IndexTotals(max(0, old.blocks + blocks), max(0, old.bytes + nbytes)))
