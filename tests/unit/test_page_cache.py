"""Which open handles read through the kernel's page cache (one per inode, shared by all its
handles), which read around it (direct I/O), and when its pages of another version are dropped:
the policy on the node, and the open flags the handlers give the kernel."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio

from mountfs.backends.memory import MemoryStore
from mountfs.cache.block_cache import BlockCache
from mountfs.fs.operations import Operations, Ownership
from mountfs.namespace.inodes import ROOT_INODE, Node, PageUse
from mountfs.upload.journal import UploadJournal
from tests.unit.conftest import FakeClock, single_mount
from tests.unit.test_operations_write import WHEN, attributes, make_ops, setattr_fields

BLOCK = 64 * 1024
CTX: Any = None


def test_handles_of_one_version_share_the_page_cache_and_others_read_around_it() -> None:
    node = Node(5, 1, b"f", False, None, "f")
    assert node.open_pages("v1") is PageUse.KEEP, "nothing cached yet: nothing to drop"
    assert node.open_pages("v1") is PageUse.KEEP
    assert node.open_pages("v2") is PageUse.AROUND, "v1 handles read through the page cache"
    assert node.page_handles == 2
    node.close_pages()
    assert node.open_pages("v2") is PageUse.AROUND
    node.close_pages()
    assert node.page_handles == 0
    assert node.open_pages("v2") is PageUse.CLEAR, "the pages of v1 must go first"
    node.close_pages()
    assert node.open_pages("v2") is PageUse.KEEP, "unchanged since: the pages are right"
    node.close_pages()
    node.close_pages()  # a release too many never goes below zero
    assert node.page_handles == 0


def test_staged_bytes_leave_the_cached_version_unknown() -> None:
    node = Node(5, 1, b"f", False, None, "f")
    assert node.open_pages("v1") is PageUse.KEEP
    assert node.open_pages(None) is PageUse.STAGED  # a writer: every handle reads its staged bytes
    assert node.open_pages("v2") is PageUse.AROUND, "the page cache holds staged bytes, not v2's"
    node.close_pages()
    node.close_pages()
    assert node.open_pages("v2") is PageUse.CLEAR


@pytest.fixture
def dropped() -> list[int]:
    return []


@pytest.fixture
def ops(store: MemoryStore, clock: FakeClock, tmp_path: Path, dropped: list[int]) -> Operations:
    return Operations(single_mount(store, clock), BlockCache(str(tmp_path), BLOCK, 1 << 20),
                      Ownership(0, 0), drop_pages=dropped.append)


async def open_file(ops: Operations, name: bytes) -> pyfuse3.FileInfo:
    attr = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(name), CTX)
    return await ops.open(attr.st_ino, os.O_RDONLY, CTX)


async def test_a_handle_opened_at_a_newer_version_gets_direct_io(
        ops: Operations, store: MemoryStore, clock: FakeClock, dropped: list[int]) -> None:
    store.put_object("model", b"1" * 100)
    old = await open_file(ops, b"model")
    assert (old.direct_io, old.keep_cache) == (False, True)
    assert await ops.read(old.fh, 0, 10) == b"1" * 10
    store.put_object("model", b"2" * 100)
    clock.now += 120  # past the metadata TTL: the next open sees the new version
    new = await open_file(ops, b"model")
    assert new.direct_io, "its reads must not mix with the pages the old handle reads"
    assert new.keep_cache, "the old handle's pages stay: they are still right for it"
    assert await ops.read(new.fh, 0, 100) == b"2" * 100
    assert await ops.read(old.fh, 0, 100) == b"1" * 100  # its version, from the block cache
    assert dropped == []
    await ops.release(old.fh)
    newest = await open_file(ops, b"model")
    inode = ops.namespace.inodes.by_path(ops.namespace.mounts[0], "model", False)
    assert inode is not None and dropped == [inode.inode], "the pages of the old version are dropped"
    assert (newest.direct_io, newest.keep_cache) == (False, True)
    again = await open_file(ops, b"model")
    assert (again.direct_io, again.keep_cache) == (False, True)
    assert len(dropped) == 1
    await ops.release(new.fh)
    assert inode.page_handles == 2  # the direct handle never counted


async def test_opens_of_the_new_version_wait_until_the_old_pages_are_dropped(
        store: MemoryStore, clock: FakeClock, tmp_path: Path) -> None:
    entered, gate = threading.Event(), threading.Event()

    def slow_drop(inode: int) -> None:
        entered.set()
        assert gate.wait(10)

    ops = Operations(single_mount(store, clock), BlockCache(str(tmp_path), BLOCK, 1 << 20),
                     Ownership(0, 0), drop_pages=slow_drop)
    store.put_object("model", b"1")
    await ops.release((await open_file(ops, b"model")).fh)
    store.put_object("model", b"2")
    clock.now += 120
    replies: list[pyfuse3.FileInfo] = []

    async def opener() -> None:
        replies.append(await open_file(ops, b"model"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(opener)
        await trio.to_thread.run_sync(entered.wait, 10)
        nursery.start_soon(opener)
        await trio.sleep(0.05)
        assert replies == [], "no handle may read through the page cache before its old pages are gone"
        gate.set()
    assert [(r.direct_io, r.keep_cache) for r in replies] == [(False, True), (False, True)]


async def test_when_the_pages_cannot_be_dropped_the_kernel_drops_them_and_others_read_around(
        store: MemoryStore, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    def failing_drop(inode: int) -> None:
        attempts.append(inode)
        raise OSError(errno.EIO, "notify failed")

    ops = Operations(single_mount(store, clock), BlockCache(str(tmp_path), BLOCK, 1 << 20),
                     Ownership(0, 0), drop_pages=failing_drop)
    store.put_object("model", b"1")
    await ops.release((await open_file(ops, b"model")).fh)
    store.put_object("model", b"2")
    clock.now += 120
    first = await open_file(ops, b"model")
    assert (first.direct_io, first.keep_cache) == (False, False), "the kernel drops them at open"
    assert "could not drop the kernel's cached pages of model" in caplog.text
    second = await open_file(ops, b"model")
    assert second.direct_io, "the version in the page cache is unknown: read around it"
    await ops.release(first.fh)
    await ops.release(second.fh)
    await open_file(ops, b"model")
    assert len(attempts) == 2, "tried again once no handle reads through the page cache"


async def test_a_real_drop_without_a_mount_fails_cleanly(store: MemoryStore, clock: FakeClock,
                                                         tmp_path: Path) -> None:
    """The default drop asks the kernel through pyfuse3: without a FUSE session that is an error
    (EINVAL), never a crash; the open still succeeds, leaving the drop to the kernel."""
    ops = Operations(single_mount(store, clock), BlockCache(str(tmp_path), BLOCK, 1 << 20), Ownership(0, 0))
    store.put_object("model", b"1")
    await ops.release((await open_file(ops, b"model")).fh)
    store.put_object("model", b"2")
    clock.now += 120
    info = await open_file(ops, b"model")
    assert (info.direct_io, info.keep_cache) == (False, False)
    assert await ops.read(info.fh, 0, 1) == b"2"


async def test_only_the_handles_of_the_version_whose_mtime_is_set_follow_its_new_etag(
        store: MemoryStore, clock: FakeClock, tmp_path: Path) -> None:
    """utimens gives the object a new ETag of the same bytes (a copy in place): handles of that
    version go on reading under the new ETag; a handle of an older version must not."""
    journal = UploadJournal(str(tmp_path / "cache"))
    try:
        ops = make_ops(store, journal, clock, tmp_path)
        store.put_object("model", b"1" * 100)
        old = await open_file(ops, b"model")
        assert await ops.read(old.fh, 0, 10) == b"1" * 10
        store.put_object("model", b"2" * 100)  # another client
        clock.now += 120
        new = await open_file(ops, b"model")
        inode = (await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"model"), CTX)).st_ino
        await ops.setattr(inode, attributes(st_mtime_ns=WHEN), setattr_fields(mtime=True), None, CTX)
        assert store.calls["set_mtime"] == 1 and store.calls["put"] == 0
        assert await ops.read(new.fh, 0, 100) == b"2" * 100, "same bytes under the new ETag"
        try:
            data = await ops.read(old.fh, 0, 100)
        except pyfuse3.FUSEError as exc:
            assert exc.errno == errno.ESTALE
        else:
            assert bytes(data) == b"1" * 100, "the handle of version 1 must not switch to version 2's bytes"
        assert await ops.read(new.fh, 0, 100) == b"2" * 100
    finally:
        journal.close()
