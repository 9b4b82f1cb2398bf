"""The three kinds of open file, each called directly (no FUSE handler in between): a cached
object, a staged file and a direct file, with their read, write, flush, fsync, truncate and
release, and what each answers for a call its kind does not take."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pyfuse3
import pytest
import trio

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.local import LocalStore
from mountfs.backends.memory import MemoryStore
from mountfs.cache.prefetch import PrefetchScheduler
from mountfs.config import WriteConfig
from mountfs.errors import ReadOnly, Stale
from mountfs.fs.direct import DirectFiles, DirectHandle
from mountfs.fs.handles import CachedHandle, FileHandle, Services, StagedHandle
from mountfs.fs.operations import Operations
from mountfs.namespace.inodes import ROOT_INODE, MountRoot, Node
from mountfs.namespace.tree import Namespace
from mountfs.upload.journal import UploadJournal
from mountfs.upload.uploader import Uploader
from tests.unit.conftest import FakeClock
from tests.unit.test_operations_write import BLOCK, make_ops


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[UploadJournal]:
    j = UploadJournal(str(tmp_path / "cache"))
    yield j
    j.close()


@pytest.fixture
def ops(store: MemoryStore, journal: UploadJournal, clock: FakeClock, tmp_path: Path) -> Operations:
    return make_ops(store, journal, clock, tmp_path)


async def node_of(namespace: Namespace, path: str) -> Node:
    node = namespace.node(ROOT_INODE)
    for part in path.split("/"):
        node = await namespace.lookup(node.inode, os.fsencode(part))
    return node


# --- cached -------------------------------------------------------------------------------


async def test_a_cached_handle_reads_its_object_once_then_from_the_cache(ops: Operations,
                                                                        store: MemoryStore) -> None:
    handle = CachedHandle(await node_of(ops.namespace, "dir/a.bin"), ops.services)
    assert handle.obj is not None and handle.obj.key == "dir/a.bin" and handle.size == 100
    assert bytes(await handle.read(10, 20)) == b"a" * 20
    gets = store.calls["get_range"]
    assert bytes(await handle.read(90, 50)) == b"a" * 10  # short only at the end
    assert store.calls["get_range"] == gets
    assert handle.backing_fd is None
    await handle.release()


async def test_a_cached_handle_takes_no_write_and_flush_is_nothing(ops: Operations,
                                                                  store: MemoryStore) -> None:
    handle = CachedHandle(await node_of(ops.namespace, "top.txt"), ops.services)
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await handle.write(0, b"x")
    assert excinfo.value.errno == errno.EBADF
    await handle.flush()
    await handle.fsync(True)
    assert bytes(await handle.read(0, 5)) == b"hello" and store.get_range("top.txt", 0, 9) == b"hello"
    await handle.release()


async def test_a_cached_handle_keeps_the_version_pinned_at_open(ops: Operations, store: MemoryStore) -> None:
    handle = CachedHandle(await node_of(ops.namespace, "top.txt"), ops.services)
    store.put_object("top.txt", b"HELLO")  # another client: the node still shows the old version
    assert handle.obj is not None and handle.obj.etag != store.head("top.txt").etag
    with pytest.raises(Stale):  # ESTALE: a changed object never serves old bytes
        await handle.read(0, 5)


async def test_a_cached_handle_reads_ahead_and_its_release_stops_that(ops: Operations,
                                                                      store: MemoryStore) -> None:
    store.put_object("big", os.urandom(16 * BLOCK))
    scheduler = PrefetchScheduler(ops.cache, 4, 1 << 30, BLOCK)
    services = Services(ops.namespace, ops.cache, ops.writes, scheduler, 8 * BLOCK)
    node = await node_of(ops.namespace, "big")
    node.open_pages(store.head("big").etag)
    handle = CachedHandle(node, services)
    handle.paged = True
    async with trio.open_nursery() as nursery:
        scheduler.nursery = nursery
        for offset in range(0, 2 * BLOCK, BLOCK // 2):  # sequential from the start
            assert bytes(await handle.read(offset, BLOCK // 2)) == store.get_range("big", offset, BLOCK // 2)
        assert scheduler.started > 0  # blocks ahead of the reader were asked for
        await handle.release()
    assert handle.prefetches.closed and not handle.prefetches.scopes
    assert node.page_handles == 0  # its share of the kernel's page cache given back


async def test_a_cached_handle_reads_what_another_handle_is_writing(ops: Operations) -> None:
    node = await node_of(ops.namespace, "top.txt")
    reader = CachedHandle(node, ops.services)
    writer = StagedHandle(node, await ops.writes.open_for_write(node, truncate=False), ops.services)
    assert await writer.write(0, b"J") == 1
    assert bytes(await reader.read(0, 5)) == b"Jello"  # the staged bytes are the newest
    await writer.release()
    await reader.release()


# --- staged -------------------------------------------------------------------------------


async def test_a_staged_handle_writes_reads_back_and_uploads_on_flush(ops: Operations,
                                                                    store: MemoryStore) -> None:
    parent = ops.namespace.node(ROOT_INODE)
    node, staged = await ops.writes.create(parent, b"new.txt")
    handle = StagedHandle(node, staged, ops.services)
    assert await handle.write(0, b"hello world") == 11
    assert bytes(await handle.read(6, 100)) == b"world"
    assert "new.txt" not in set(store.keys())
    await handle.flush()
    assert store.get_range("new.txt", 0, 100) == b"hello world"
    await handle.truncate(5)
    await handle.fsync(False)
    assert store.get_range("new.txt", 0, 100) == b"hello"
    assert handle.backing_fd is None
    await handle.release()
    assert bytes(await CachedHandle(node, ops.services).read(0, 100)) == b"hello"


async def test_a_staged_handle_release_logs_what_fails(ops: Operations, caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    node, staged = await ops.writes.create(ops.namespace.node(ROOT_INODE), b"f")
    handle = StagedHandle(node, staged, ops.services)

    async def broken(*args: object) -> None:
        raise OSError(errno.EIO, "disk gone")

    monkeypatch.setattr(ops.writes, "release", broken)
    await handle.release()  # FUSE discards errors of release: logged, not raised
    assert "release of f failed" in caplog.text


async def test_a_path_truncate_without_a_writer_goes_to_the_store(ops: Operations,
                                                                  store: MemoryStore) -> None:
    handle = CachedHandle(await node_of(ops.namespace, "top.txt"), ops.services)
    await handle.truncate(2)
    assert store.get_range("top.txt", 0, 9) == b"he"
    await handle.release()


# --- direct -------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "nfs"
    root.mkdir()
    (root / "data.bin").write_bytes(b"0123456789")
    return root


def direct_files(folder: Path, clock: FakeClock, journal: UploadJournal) -> DirectFiles:
    store = AsyncStore(LocalStore(str(folder)), 4)
    uploader = Uploader(store, journal, WriteConfig(part_size=1024, max_concurrency=4))  # writable
    mount = MountRoot("", store, "", False, uploader, local_root=str(folder), direct=True)
    return DirectFiles(Namespace([mount], 60.0, 5.0, clock))


async def test_a_direct_handle_is_the_files_own_descriptor(folder: Path, clock: FakeClock,
                                                         journal: UploadJournal) -> None:
    files = direct_files(folder, clock, journal)
    node = await node_of(files.namespace, "data.bin")
    handle = await files.open(node, os.O_RDWR)
    assert isinstance(handle, FileHandle) and isinstance(handle, DirectHandle)
    assert handle.backing_fd == handle.fd and os.fstat(handle.fd).st_size == 10
    assert await handle.read(2, 3) == b"234"
    assert await handle.write(8, b"ABCD") == 4
    assert (folder / "data.bin").read_bytes() == b"01234567ABCD"
    assert node.size == 12  # the file's own size, stated after the write
    await handle.flush()  # nothing: no upload
    await handle.fsync(True)
    await handle.truncate(4)
    assert (folder / "data.bin").read_bytes() == b"0123" and node.size == 4
    await handle.release()
    with pytest.raises(OSError) as excinfo:
        os.fstat(handle.fd)
    assert excinfo.value.errno == errno.EBADF


async def test_a_direct_handle_open_for_reading_takes_no_write(folder: Path, clock: FakeClock,
                                                         journal: UploadJournal) -> None:
    files = direct_files(folder, clock, journal)
    handle = await files.open(await node_of(files.namespace, "data.bin"), os.O_RDONLY)
    with pytest.raises(ReadOnly):
        await handle.write(0, b"x")
    await handle.fsync(False)  # nothing to sync
    assert (folder / "data.bin").read_bytes() == b"0123456789"
    await handle.release()


# --- the handlers in front of them ----------------------------------------------------------


class Failing(FileHandle):
    """A handle whose every read raises what it is given."""

    __slots__ = ("error",)

    def __init__(self, node: Node, error: Exception) -> None:
        super().__init__(node)
        self.error = error

    async def read(self, offset: int, size: int) -> bytes:
        raise self.error


@pytest.mark.parametrize(("error", "code"), [
    (Stale("changed"), errno.ESTALE),
    (OSError(errno.ENOSPC, "cache disk full"), errno.ENOSPC),
    (OSError(errno.EBADMSG, "cache disk broken"), errno.EIO),
    (RuntimeError("a bug"), errno.EIO),
])
async def test_the_read_handler_answers_a_handles_error_with_its_errno(
        ops: Operations, error: Exception, code: int, caplog: pytest.LogCaptureFixture) -> None:
    ops._files[99] = Failing(await node_of(ops.namespace, "top.txt"), error)
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.read(pyfuse3.FileHandleT(99), 0, 10)
    assert excinfo.value.errno == code and excinfo.value.__cause__ is error
    assert ops.requests.errors[("read", code)] == 1
    assert ops.requests.latency.by_name["read"].total >= 0
    if isinstance(error, RuntimeError):
        assert "read failed unexpectedly" in caplog.text and "a bug" in caplog.text


async def test_the_handlers_dispatch_to_the_handle(ops: Operations) -> None:
    node = await node_of(ops.namespace, "top.txt")
    info = await ops.open(pyfuse3.InodeT(node.inode), os.O_RDONLY, None)  # type: ignore[arg-type]
    assert isinstance(ops._files[info.fh], CachedHandle)
    assert bytes(await ops.read(info.fh, 1, 3)) == b"ell"
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.write(info.fh, 0, b"x")
    assert excinfo.value.errno == errno.EBADF
    await ops.flush(info.fh)
    await ops.release(info.fh)
    assert info.fh not in ops._files and node.page_handles == 0
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.write(info.fh, 0, b"x")  # released: no such handle
    assert excinfo.value.errno == errno.EBADF
