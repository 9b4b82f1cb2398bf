"""The FUSE handlers called directly, without a kernel mount."""

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
from mountfs.errors import StoreUnavailable, Transient
from mountfs.fs.operations import Operations, Ownership
from mountfs.namespace.inodes import ROOT_INODE
from tests.unit.conftest import FakeClock, single_mount

BLOCK = 64 * 1024
CTX: Any = None  # handlers ignore the request context


@pytest.fixture
def ops(store: MemoryStore, clock: FakeClock, tmp_path: Path) -> Operations:
    return Operations(single_mount(store, clock), BlockCache(str(tmp_path), BLOCK, 1 << 20),
                      Ownership(uid=1234, gid=2345, umask=0o027))


def fuse_errno(excinfo: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return excinfo.value.errno


async def collect_readdir(ops: Operations, inode: int, start: int = 0, limit: int | None = None,
                          monkeypatch: pytest.MonkeyPatch | None = None) -> list[tuple[bytes, int]]:
    replies: list[tuple[bytes, int]] = []

    def reply(token: Any, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        if limit is not None and len(replies) >= limit:
            return False
        replies.append((name, next_id))
        return True

    assert monkeypatch is not None
    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    fh = await ops.opendir(pyfuse3.InodeT(inode), None)  # type: ignore[arg-type]
    await ops.readdir(fh, start, None)  # type: ignore[arg-type]
    await ops.releasedir(fh)
    return replies


async def test_attributes_follow_ownership_and_the_object(ops: Operations, store: MemoryStore) -> None:
    attr = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"top.txt"), CTX)
    # umask 027 on 0666/0777, and no write bits while every mount is read-only
    assert stat.S_ISREG(attr.st_mode) and stat.S_IMODE(attr.st_mode) == 0o440
    assert (attr.st_uid, attr.st_gid, attr.st_size) == (1234, 2345, 5)
    assert attr.st_mtime_ns == store.head("top.txt").mtime_ns
    root = await ops.getattr(pyfuse3.InodeT(ROOT_INODE), CTX)
    assert stat.S_ISDIR(root.st_mode) and stat.S_IMODE(root.st_mode) == 0o550


async def test_read_only_mounts_show_no_write_bits(store: MemoryStore, clock: FakeClock,
                                                   tmp_path: Path) -> None:
    ns = single_mount(store, clock)
    ns.mounts[0].read_only = True
    ops = Operations(ns, BlockCache(str(tmp_path), BLOCK, 1 << 20), Ownership(0, 0))
    attr = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"top.txt"), CTX)
    assert stat.S_IMODE(attr.st_mode) == 0o444


async def test_missing_names_are_enoent(ops: Operations) -> None:
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"nope"), CTX)
    assert fuse_errno(excinfo) == errno.ENOENT


async def test_readdir_offsets_are_stable_and_count_lookups(ops: Operations,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    everything = await collect_readdir(ops, ROOT_INODE, monkeypatch=monkeypatch)
    assert sorted(n for n, _ in everything) == [b"both", b"dir", b"empty", b"marker", b"top.txt"]
    assert [next_id for _, next_id in everything] == [1, 2, 3, 4, 5]
    first_two = await collect_readdir(ops, ROOT_INODE, limit=2, monkeypatch=monkeypatch)
    rest = await collect_readdir(ops, ROOT_INODE, start=2, monkeypatch=monkeypatch)
    assert [n for n, _ in first_two + rest] == [n for n, _ in everything]
    for name, _ in everything:  # listed in full once, then in two parts: two references each
        node = await ops.namespace.lookup(ROOT_INODE, name)
        assert node.lookups == 3, name


async def test_reads_return_exact_bytes_and_hit_the_cache(ops: Operations, store: MemoryStore) -> None:
    data = os.urandom(3 * BLOCK + 17)
    store.put_object("blob", data)
    attr = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"blob"), CTX)
    info = await ops.open(attr.st_ino, os.O_RDONLY, None)  # type: ignore[arg-type]
    for offset, size in [(0, 4096), (BLOCK - 10, 20), (3 * BLOCK, 1000), (len(data), 10), (5, len(data))]:
        assert await ops.read(info.fh, offset, size) == data[offset:offset + size]
    gets = store.calls["get_range"]
    assert gets == 4
    assert await ops.read(info.fh, 0, len(data)) == data
    assert store.calls["get_range"] == gets
    await ops.release(info.fh)
    assert ops.stats.bytes_served == 4096 + 20 + 17 + (len(data) - 5) + len(data)


async def test_a_changed_object_reads_as_estale(ops: Operations, store: MemoryStore) -> None:
    store.put_object("moving", b"1" * 100)
    attr = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"moving"), CTX)
    info = await ops.open(attr.st_ino, os.O_RDONLY, None)  # type: ignore[arg-type]
    store.put_object("moving", b"2" * 100)
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.read(info.fh, 0, 10)
    assert fuse_errno(excinfo) == errno.ESTALE


async def test_store_failures_are_eio_and_the_next_read_works(ops: Operations, store: MemoryStore) -> None:
    attr = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"top.txt"), CTX)
    info = await ops.open(attr.st_ino, os.O_RDONLY, None)  # type: ignore[arg-type]
    store.inject("get_range", Transient("503 slow down"))
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.read(info.fh, 0, 5)
    assert fuse_errno(excinfo) == errno.EIO
    assert await ops.read(info.fh, 0, 5) == b"hello"


async def test_a_store_failure_during_lookup_is_eio_without_a_traceback(
        ops: Operations, store: MemoryStore, caplog: pytest.LogCaptureFixture) -> None:
    store.inject("head", StoreUnavailable("HEAD mem/unlisted: 503 (gave up after 3 attempt(s))"))
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"unlisted"), CTX)
    assert fuse_errno(excinfo) == errno.EIO
    assert "gave up after 3" in caplog.text and "unexpectedly" not in caplog.text


async def test_unexpected_exceptions_become_eio(ops: Operations, store: MemoryStore) -> None:
    store.inject("head", RuntimeError("a bug"))
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"unlisted"), CTX)
    assert fuse_errno(excinfo) == errno.EIO


async def test_every_change_answers_erofs_without_an_uploader(ops: Operations) -> None:
    """A mount with no uploader (as every read-only one) changes nothing: EROFS for every handler."""
    root = pyfuse3.InodeT(ROOT_INODE)
    attr = await ops.lookup(root, pyfuse3.FileNameT(b"top.txt"), CTX)
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.open(attr.st_ino, flags, CTX)
        assert fuse_errno(excinfo) == errno.EROFS
    name = pyfuse3.FileNameT(b"new")
    calls = [ops.mkdir(root, name, 0o755, CTX), ops.unlink(root, pyfuse3.FileNameT(b"top.txt"), CTX),
             ops.rmdir(root, pyfuse3.FileNameT(b"dir"), CTX),
             ops.rename(root, pyfuse3.FileNameT(b"top.txt"), root, name, 0, CTX),
             ops.create(root, name, 0o100644, os.O_WRONLY, CTX),
             ops.symlink(root, name, pyfuse3.FileNameT(b"top.txt"), CTX)]
    for call in calls:
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await call
        assert fuse_errno(excinfo) == errno.EROFS
    assert sum(1 for op in ("put", "delete", "copy") if ops.namespace.mounts[0].store.stats.requests[op]) == 0


async def test_opening_a_directory_as_a_file_is_eisdir(ops: Operations) -> None:
    attr = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"dir"), CTX)
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.open(attr.st_ino, os.O_RDONLY, None)  # type: ignore[arg-type]
    assert fuse_errno(excinfo) == errno.EISDIR


async def test_statfs_reports_a_large_empty_file_system(ops: Operations) -> None:
    data = await ops.statfs(None)  # type: ignore[arg-type]
    assert data.f_namemax == 255 and data.f_bavail > 0


async def test_keep_cache_only_while_the_object_is_unchanged(store: MemoryStore, clock: FakeClock,
                                                             tmp_path: Path) -> None:
    dropped: list[int] = []
    ops = Operations(single_mount(store, clock), BlockCache(str(tmp_path), BLOCK, 1 << 20),
                     Ownership(0, 0), drop_pages=dropped.append)
    store.put_object("model", b"v1")
    attr = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"model"), CTX)
    first = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
    second = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert (first.keep_cache, second.keep_cache) == (True, True)
    await ops.release(first.fh)
    await ops.release(second.fh)
    store.put_object("model", b"v2")
    clock.now += 120  # past the metadata TTL: open sees the new ETag
    assert dropped == []
    third = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert dropped == [attr.st_ino], "a changed object must not be served from stale kernel pages"
    assert await ops.read(third.fh, 0, 10) == b"v2"
