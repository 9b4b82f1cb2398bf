"""A cached block is found only by everything that decides its bytes: store endpoint, bucket, key,
version (ETag; a local file's size, mtime and inode), block size, block index and cache format."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from mountfs import cli
from mountfs.backends.base import ObjectId, ObjectMeta
from mountfs.backends.local import LocalStore
from mountfs.backends.s3 import S3Store
from mountfs.buffers import Piece
from mountfs.cache import maintenance
from mountfs.cache.block_cache import BlockCache, Fetch
from mountfs.cache.blocks import BlockFiles
from mountfs.cache.index import CACHE_FORMAT, BlockRecord, CacheIndex, block_key, identity
from mountfs.config import RetryConfig
from mountfs.config.s3 import S3Settings

KiB = 1024
OBJ = ObjectId("s3://http://127.0.0.1:9000", "bucket", "dir/file.bin", "etag-1")


def test_every_part_of_the_identity_changes_the_key() -> None:
    base = block_key(OBJ, 4 << 20, 1)
    assert block_key(ObjectId(*OBJ.__dict__.values()), 4 << 20, 1) == base  # same inputs, same key
    variants = [
        block_key(OBJ, 1 << 20, 1),  # block size
        block_key(OBJ, 4 << 20, 2),  # block index
        block_key(ObjectId("s3://http://127.0.0.1:9001", OBJ.bucket, OBJ.key, OBJ.etag), 4 << 20, 1),
        block_key(ObjectId("s3://aws", OBJ.bucket, OBJ.key, OBJ.etag), 4 << 20, 1),
        block_key(ObjectId(OBJ.store, "other", OBJ.key, OBJ.etag), 4 << 20, 1),
        block_key(ObjectId(OBJ.store, OBJ.bucket, "dir/file.bin2", OBJ.etag), 4 << 20, 1),
        block_key(ObjectId(OBJ.store, OBJ.bucket, OBJ.key, "etag-2"), 4 << 20, 1),
    ]
    assert len({base, *variants}) == len(variants) + 1
    # fields never run into each other ("a" + "b/c" is not "a/b" + "c")
    assert (block_key(ObjectId("s", "a", "b\0c", "e"), 4 << 20, 0)
            != block_key(ObjectId("s", "a\0b", "c", "e"), 4 << 20, 0))
    fields = json.loads(identity(OBJ, 4 << 20))
    assert fields == {"format": CACHE_FORMAT, "store": OBJ.store, "bucket": OBJ.bucket, "key": OBJ.key,
                      "etag": OBJ.etag, "block_size": 4 << 20}


def test_s3_stores_at_different_endpoints_never_share_blocks() -> None:
    stores = [S3Store(S3Settings("b", endpoint, "us-east-1", key="k", secret="s"), RetryConfig())
              for endpoint in ("http://127.0.0.1:9000", "http://127.0.0.1:9001", None)]
    meta = ObjectMeta("k", 10, "etag", 0)
    keys = {block_key(store.object_id(meta), 1 << 20, 0) for store in stores}
    assert len(keys) == 3


def test_a_local_files_version_is_its_size_mtime_and_inode(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    path = tmp_path / "f"
    path.write_bytes(b"a" * 100)
    os.utime(path, ns=(1, 1_000_000_000))
    first = store.object_id(store.head("f"))
    path.write_bytes(b"a" * 101)  # size
    os.utime(path, ns=(1, 1_000_000_000))
    size = store.object_id(store.head("f"))
    path.write_bytes(b"a" * 100)
    os.utime(path, ns=(1, 1_000_000_001))  # mtime, to the nanosecond
    mtime = store.object_id(store.head("f"))
    (tmp_path / "g").write_bytes(b"b" * 100)  # a new file renamed over it: only the inode differs
    os.utime(tmp_path / "g", ns=(1, 1_000_000_001))
    os.rename(tmp_path / "g", path)
    inode = store.object_id(store.head("f"))
    assert len({first, size, mtime, inode}) == 4
    assert len({block_key(o, 1 << 20, 0) for o in (first, size, mtime, inode)}) == 4


def _source(data: bytes, block: int, fetched: list[int]) -> Fetch:
    async def fetch(start: int, length: int) -> list[Piece]:
        fetched.append(start)
        chunk = data[start:start + length]
        return [chunk[i:i + block] for i in range(0, len(chunk), block)]
    return fetch


async def test_one_cache_dir_serves_two_block_sizes_each_its_own_bytes(tmp_path: Path) -> None:
    data = os.urandom(12 * 64 * KiB)
    obj = ObjectId("file", "/bucket", "twelve.bin", "1-2-3")
    fetched: list[int] = []
    big = BlockCache(str(tmp_path), 256 * KiB, 0)
    assert await big.read(obj, len(data), 0, len(data), _source(data, 256 * KiB, fetched)) == data
    big.close()

    small = BlockCache(str(tmp_path), 64 * KiB, 0)
    fetched.clear()
    got = await small.read(obj, len(data), 0, len(data), _source(data, 64 * KiB, fetched))
    assert got == data, "never the bytes of a 256 KiB block as those of a 64 KiB one"
    assert fetched, "the 64 KiB layout was fetched, not answered from the 256 KiB blocks"
    small.close()

    again = BlockCache(str(tmp_path), 256 * KiB, 0)  # both layouts stay in the one cache dir
    fetched.clear()
    assert await again.read(obj, len(data), 0, len(data), _source(data, 256 * KiB, fetched)) == data
    assert fetched == []
    assert again.index.totals().blocks == 12 + 3
    again.close()
    assert maintenance.verify(str(tmp_path)).clean


def _old_format_block(index: CacheIndex, files: BlockFiles, obj: ObjectId, block: int, data: bytes) -> bytes:
    """A block as mountfs wrote it before the block size was part of its key."""
    text = "\0".join((obj.store, obj.bucket, obj.key, obj.etag))
    digest = hashlib.blake2b(text.encode(), digest_size=20).digest()
    key = digest + block.to_bytes(8, "big")
    crcs = files.write(key, data)
    with index.env.begin(write=True) as txn:
        txn.put(key, BlockRecord(len(data), crcs, 1.0).pack(), db=index.blocks)
        txn.put(digest, json.dumps({"store": obj.store, "bucket": obj.bucket, "key": obj.key,
                                    "etag": obj.etag}).encode(), db=index.objects)
    return key


async def test_blocks_of_the_old_format_are_never_served_and_verify_drops_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = os.urandom(2 * 64 * KiB)
    obj = ObjectId("file", "/bucket", "f.bin", "1-2-3")
    index, files = CacheIndex(str(tmp_path)), BlockFiles(str(tmp_path))
    assert not index.older_format  # a new cache dir
    old_keys = [_old_format_block(index, files, obj, i, b"W" * 64 * KiB) for i in range(2)]
    index.close()
    index = CacheIndex(str(tmp_path))
    with index.env.begin(write=True) as txn:  # the old daemon's lru and totals; no format mark
        index.rebuild_lru(txn)
        index.add_totals(txn, 2, 2 * 64 * KiB)
        txn.delete(b"format", db=index.meta)
    index.close()

    cache = BlockCache(str(tmp_path), 64 * KiB, 0)
    assert cache.index.older_format
    fetched: list[int] = []
    assert await cache.read(obj, len(data), 0, len(data), _source(data, 64 * KiB, fetched)) == data
    assert fetched == [0, 64 * KiB], "both blocks fetched: the old ones are never served"
    cache.close()
    with maintenance.open_cache(str(tmp_path)) as (index, _):
        assert not index.older_format  # said once

    assert cli.main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "checked 2 blocks; repaired" in out, out
    assert "2 blocks of an older cache format (or of no known object) dropped" in out, out
    assert "  2 blocks (128.0 KiB) cached" in out, out
    assert not any(os.path.exists(files.path(key)) for key in old_keys)
    assert maintenance.verify(str(tmp_path)).clean
    with maintenance.open_cache(str(tmp_path)) as (index, _):
        assert index.counts()["objects"] == 1
