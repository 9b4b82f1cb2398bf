"""The LMDB index of the block cache: which blocks exist, their checksums and last use.

A block is served only if its record is here, and the record is committed only after the
block file has been renamed into place: a kill -9 mid-write leaves an orphan temp file that
nobody reads, never a record pointing at half a block. LMDB is safe across processes, so
several daemons may share one cache dir. Every method blocks: call them from worker threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import lmdb

from mountfs.backends.base import ObjectId

# LMDB reserves address space, not disk: the file grows only as records are written.
MAP_SIZE = 1 << 36
_RECORD = struct.Struct("<QdI")  # length, last access (unix seconds), number of chunk checksums
_TOTALS = struct.Struct("<QQ")  # blocks, bytes
_TOTALS_KEY = b"totals"


def object_digest(obj: ObjectId) -> bytes:
    """20 bytes naming one version of one object: ETag included, so a changed object never
    shares blocks with its old self. Hashed because store keys can be longer than LMDB's 511."""
    text = "\0".join((obj.store, obj.bucket, obj.key, obj.etag))
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=20).digest()


def block_key(obj: ObjectId, index: int) -> bytes:
    return object_digest(obj) + index.to_bytes(8, "big")


@dataclass(frozen=True)
class BlockRecord:
    """A block on disk: its length, a crc32 per checksum chunk (so a small read verifies only
    what it reads), and when it was last used."""

    length: int
    crcs: tuple[int, ...]
    last_access: float

    def pack(self) -> bytes:
        return _RECORD.pack(self.length, self.last_access, len(self.crcs)) + struct.pack(
            f"<{len(self.crcs)}I", *self.crcs)

    @classmethod
    def unpack(cls, raw: bytes) -> BlockRecord:
        length, last_access, count = _RECORD.unpack_from(raw)
        crcs = struct.unpack_from(f"<{count}I", raw, _RECORD.size)
        return cls(length, crcs, last_access)

    def touched(self, when: float) -> BlockRecord:
        return BlockRecord(self.length, self.crcs, when)


@dataclass(frozen=True)
class IndexTotals:
    blocks: int
    bytes: int


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

    def close(self) -> None:
        self.env.close()

    def lookup(self, key: bytes) -> BlockRecord | None:
        with self.env.begin(db=self.blocks) as txn:
            raw = txn.get(key)
        return None if raw is None else BlockRecord.unpack(raw)

    def commit(self, obj: ObjectId, key: bytes, record: BlockRecord) -> None:
        """Record a block whose file is already in place."""
        self.commit_many([(obj, key, record)])

    def commit_many(self, blocks: Iterable[tuple[ObjectId, bytes, BlockRecord]]) -> None:
        """Record blocks whose files are already in place, in one transaction (one sync)."""
        with self.env.begin(write=True) as txn:
            for obj, key, record in blocks:
                previous = txn.get(key, db=self.blocks)
                txn.put(key, record.pack(), db=self.blocks)
                digest = key[:20]
                if txn.get(digest, db=self.objects) is None:
                    ident = {"store": obj.store, "bucket": obj.bucket, "key": obj.key, "etag": obj.etag}
                    txn.put(digest, json.dumps(ident).encode("utf-8", "surrogateescape"), db=self.objects)
                added_blocks, added_bytes = 1, record.length
                if previous is not None:
                    added_blocks, added_bytes = 0, record.length - BlockRecord.unpack(previous).length
                self._add_totals(txn, added_blocks, added_bytes)

    def remove(self, key: bytes) -> None:
        with self.env.begin(write=True) as txn:
            raw = txn.get(key, db=self.blocks)
            if raw is None:
                return
            txn.delete(key, db=self.blocks)
            self._add_totals(txn, -1, -BlockRecord.unpack(raw).length)

    def touch(self, keys: Iterable[bytes], when: float | None = None) -> None:
        """Move blocks to the young end of the LRU clock (batched by the caller)."""
        when = time.time() if when is None else when
        with self.env.begin(write=True, db=self.blocks) as txn:
            for key in keys:
                raw = txn.get(key)
                if raw is not None:
                    txn.put(key, BlockRecord.unpack(raw).touched(when).pack())

    def totals(self) -> IndexTotals:
        with self.env.begin(db=self.meta) as txn:
            raw = txn.get(_TOTALS_KEY)
        return IndexTotals(*_TOTALS.unpack(raw)) if raw else IndexTotals(0, 0)

    def iter_blocks(self) -> Iterator[tuple[bytes, BlockRecord]]:
        with self.env.begin(db=self.blocks) as txn:
            for key, raw in txn.cursor():
                yield bytes(key), BlockRecord.unpack(raw)

    def _add_totals(self, txn: lmdb.Transaction, blocks: int, nbytes: int) -> None:
        raw = txn.get(_TOTALS_KEY, db=self.meta)
        old_blocks, old_bytes = _TOTALS.unpack(raw) if raw else (0, 0)
        txn.put(_TOTALS_KEY, _TOTALS.pack(max(0, old_blocks + blocks), max(0, old_bytes + nbytes)),
                db=self.meta)
