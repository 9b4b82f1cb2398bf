"""Shared by the cache policy tests and the subprocess that loads a shared cache dir."""

from __future__ import annotations

import os

from mountfs.backends.base import ObjectId
from mountfs.cache.blocks import BlockFiles
from mountfs.cache.index import BlockRecord, CacheIndex, block_key, identity

BLOCK_SIZE = 1 << 20  # the block size these blocks are keyed with (their lengths are the tests' own)


def obj(name: str) -> ObjectId:
    return ObjectId("memory", "mem", name, "etag-1")


def ident(name: str) -> bytes:
    """The object entry the block cache commits with a block of `name`."""
    return identity(obj(name), BLOCK_SIZE)


def add_block(index: CacheIndex, files: BlockFiles, name: str, block: int, size: int,
              when: float) -> bytes:
    """Write a block file and commit its record, as the block cache does (file first)."""
    key = block_key(obj(name), BLOCK_SIZE, block)
    data = (name.encode() * (size // max(1, len(name)) + 1))[:size]
    crcs = files.write(key, data)
    index.commit(ident(name), key, BlockRecord(len(data), crcs, when), present=files.exists)
    return key


def files_on_disk(files: BlockFiles) -> dict[str, int]:
    """Every block file (not temp files) under blocks/, with its size."""
    found = {}
    for sub in os.scandir(files.root):
        if not sub.is_dir():  # the CHECKSUM file
            continue
        for entry in os.scandir(sub.path):
            if not entry.name.endswith(".tmp"):
                found[entry.name] = entry.stat().st_size
    return found
