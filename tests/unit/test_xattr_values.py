"""Extended attributes, file and directory modes, and the request counters of the FUSE handlers,
called directly without a kernel mount."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pyfuse3
import pytest

from mountfs.backends.memory import MemoryStore
from mountfs.cache.block_cache import BlockCache
from mountfs.fs.operations import Operations, Ownership
from mountfs.namespace.inodes import ROOT_INODE
from tests.unit.conftest import FakeClock, single_mount

BLOCK = 64 * 1024
CTX: Any = None


def make_ops(store: MemoryStore, clock: FakeClock, tmp_path: Path, ownership: Ownership,
             prefix: str = "") -> Operations:
    return Operations(single_mount(store, clock, prefix=prefix), BlockCache(str(tmp_path), BLOCK, 1 << 20),
                      ownership)


async def lookup(ops: Operations, *names: str) -> pyfuse3.EntryAttributes:
    inode = pyfuse3.InodeT(ROOT_INODE)
    attr = None
    for name in names:
        attr = await ops.lookup(inode, pyfuse3.FileNameT(name.encode()), CTX)
        inode = attr.st_ino
    assert attr is not None
    return attr


async def xattrs(ops: Operations, inode: int) -> dict[str, str]:
    names = await ops.listxattr(pyfuse3.InodeT(inode), CTX)
    return {n.decode(): (await ops.getxattr(pyfuse3.InodeT(inode), n, CTX)).decode() for n in names}


async def test_attributes_of_a_cached_file_before_and_after_a_read(store: MemoryStore, clock: FakeClock,
                                                                   tmp_path: Path) -> None:
    big = os.urandom(3 * BLOCK + 7)
    store.put_object("data/big.bin", big)
    ops = make_ops(store, clock, tmp_path, Ownership(0, 0), prefix="data/")
    ops.xattrs.mount_urls = {"": "s3://host:9000/bucket/data"}
    attr = await lookup(ops, "big.bin")
    before = await xattrs(ops, attr.st_ino)
    assert before == {"user.mountfs.url": "s3://host:9000/bucket/data/big.bin",
                      "user.mountfs.direct": "false", "user.mountfs.etag": store.head("data/big.bin").etag,
                      "user.mountfs.pending": "0", "user.mountfs.cached": "0"}
    info = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert await ops.read(info.fh, 0, len(big)) == big
    await ops.release(info.fh)
    assert (await xattrs(ops, attr.st_ino))["user.mountfs.cached"] == str(len(big))
    assert await xattrs(ops, ROOT_INODE) == {"user.mountfs.url": "s3://host:9000/bucket/data/"}  # a folder's
    ops.cache.close()


async def test_no_other_attribute_and_nothing_to_set(store: MemoryStore, clock: FakeClock,
                                                     tmp_path: Path) -> None:
    ops = make_ops(store, clock, tmp_path, Ownership(0, 0))
    attr = await lookup(ops, "top.txt")
    for name in (b"security.capability", b"user.other", b"user.mountfs.nope"):
        with pytest.raises(pyfuse3.FUSEError) as info:
            await ops.getxattr(attr.st_ino, pyfuse3.XAttrNameT(name), CTX)
        assert info.value.errno == errno.ENODATA
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.setxattr(attr.st_ino, pyfuse3.XAttrNameT(b"user.mountfs.url"), b"x", CTX)
    assert info.value.errno == errno.EROFS  # a mount without uploads (test_xattrs in tests/fuse: ENOTSUP)
    folder = await lookup(ops, "dir")
    assert set(await xattrs(ops, folder.st_ino)) == {"user.mountfs.url"}
    assert await ops.listxattr(pyfuse3.InodeT(ROOT_INODE), CTX) == [b"user.mountfs.url"]
    # each handler call is counted, with its errno when it failed
    assert sum(ops.requests.latency.by_name["getxattr"].counts) == 3 + 1  # the failed ones too
    assert ops.requests.errors[("getxattr", errno.ENODATA)] == 3
    ops.cache.close()


async def test_file_and_dir_modes_replace_the_umask(store: MemoryStore, clock: FakeClock,
                                                     tmp_path: Path) -> None:
    ops = make_ops(store, clock, tmp_path, Ownership(1, 2, 0o077, file_mode=0o640, dir_mode=0o751))
    # no uploads to this mount: read-only, so the write bits go (tests/fuse/test_other_users: writable)
    assert stat.S_IMODE((await lookup(ops, "top.txt")).st_mode) == 0o440
    assert stat.S_IMODE((await lookup(ops, "dir")).st_mode) == 0o551
    ops.cache.close()
