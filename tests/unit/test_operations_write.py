"""The write handlers called directly, without a kernel: create, write, flush, fsync, release,
setattr, unlink, mkdir, rmdir and rename against MemoryStore, and the tree the mount shows after
each (cached listings included) compared with the store."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyfuse3
import pytest
import trio
import trio.testing

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.memory import MemoryStore
from mountfs.cache.block_cache import BlockCache
from mountfs.config import WriteConfig
from mountfs.errors import NoSpace, StoreUnavailable
from mountfs.fs.handles import StagedHandle
from mountfs.fs.operations import Operations, Ownership
from mountfs.namespace.inodes import ROOT_INODE, MountRoot
from mountfs.namespace.tree import Namespace
from mountfs.upload.journal import UploadJournal
from mountfs.upload.staging import StagedFile
from mountfs.upload.uploader import StagedUpload, Uploader
from tests.unit.conftest import FakeClock, GatedStore

BLOCK = 64 * 1024
PART = 1024
CTX: Any = None
ROOT = pyfuse3.InodeT(ROOT_INODE)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[UploadJournal]:
    j = UploadJournal(str(tmp_path / "cache"))
    yield j
    j.close()


def make_ops(store: MemoryStore, journal: UploadJournal, clock: FakeClock, tmp_path: Path, *,
             read_only: bool = False, ttl: float = 60.0, mounts: list[tuple[str, MemoryStore]] | None = None,
             ) -> Operations:
    roots = []
    for path, s in mounts or [("", store)]:
        async_store = AsyncStore(s, 8)
        uploader = Uploader(async_store, journal, WriteConfig(part_size=PART, max_concurrency=4))
        roots.append(MountRoot(path, async_store, "", read_only, uploader))
    namespace = Namespace(roots, ttl, 5.0, clock)
    return Operations(namespace, BlockCache(str(tmp_path / "cache"), BLOCK, 1 << 20),
                      Ownership(uid=0, gid=0, umask=0o022))


@pytest.fixture
def ops(store: MemoryStore, journal: UploadJournal, clock: FakeClock, tmp_path: Path) -> Operations:
    return make_ops(store, journal, clock, tmp_path)


def name(text: str) -> pyfuse3.FileNameT:
    return pyfuse3.FileNameT(os.fsencode(text))


async def resolve(ops: Operations, path: str) -> pyfuse3.EntryAttributes:
    attr = await ops.getattr(ROOT, CTX)
    for part in filter(None, path.split("/")):
        attr = await ops.lookup(attr.st_ino, name(part), CTX)
    return attr


async def parent_of(ops: Operations, path: str) -> tuple[pyfuse3.InodeT, pyfuse3.FileNameT]:
    folder, _, leaf = path.rpartition("/")
    return (await resolve(ops, folder)).st_ino, name(leaf)


async def create(ops: Operations, path: str) -> pyfuse3.FileHandleT:
    parent, leaf = await parent_of(ops, path)
    info, attr = await ops.create(parent, leaf, stat.S_IFREG | 0o644, os.O_WRONLY | os.O_CREAT, CTX)
    assert stat.S_ISREG(attr.st_mode) and attr.st_size == 0
    return info.fh


async def open_file(ops: Operations, path: str, flags: int) -> pyfuse3.FileHandleT:
    return (await ops.open((await resolve(ops, path)).st_ino, flags, CTX)).fh


async def close(ops: Operations, fh: pyfuse3.FileHandleT) -> None:
    """What close(2) does: flush, then release."""
    await ops.flush(fh)
    await ops.release(fh)


async def write_file(ops: Operations, path: str, data: bytes) -> None:
    fh = await create(ops, path)
    assert await ops.write(fh, 0, data) == len(data)
    await close(ops, fh)


async def read_file(ops: Operations, path: str) -> bytes:
    fh = await open_file(ops, path, os.O_RDONLY)
    try:
        return bytes(await ops.read(fh, 0, 1 << 30))
    finally:
        await ops.release(fh)


def staged_of_handle(ops: Operations, fh: pyfuse3.FileHandleT) -> StagedUpload | None:
    handle = ops._files[fh]
    assert isinstance(handle, StagedHandle)
    return handle.staged


def keys(store: MemoryStore) -> set[str]:
    return set(store.keys())


def stored(store: MemoryStore, key: str) -> bytes:
    return store.get_range(key, 0, 1 << 30)


def errno_of(excinfo: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return excinfo.value.errno


async def listing(ops: Operations, path: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []

    def reply(token: Any, entry: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        names.append(os.fsdecode(entry) + ("/" if stat.S_ISDIR(attr.st_mode) else ""))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    fh = await ops.opendir((await resolve(ops, path)).st_ino, CTX)
    await ops.readdir(fh, 0, None)  # type: ignore[arg-type]
    await ops.releasedir(fh)
    return sorted(names)


def setattr_fields(**updates: bool) -> Any:
    fields = {f"update_{f}": False for f in ("atime", "mtime", "ctime", "mode", "uid", "gid", "size")}
    fields.update({f"update_{k}": v for k, v in updates.items()})
    return SimpleNamespace(**fields)


def attributes(**values: int) -> pyfuse3.EntryAttributes:
    attr = pyfuse3.EntryAttributes()
    for key, value in values.items():
        setattr(attr, key, value)
    return attr


# --- files ---------------------------------------------------------------------------------------


async def test_writable_mounts_show_write_bits(ops: Operations) -> None:
    attr = await resolve(ops, "top.txt")
    assert stat.S_IMODE(attr.st_mode) == 0o644
    assert stat.S_IMODE((await ops.getattr(ROOT, CTX)).st_mode) == 0o755


async def test_create_write_close_uploads_once(ops: Operations, store: MemoryStore,
                                               journal: UploadJournal) -> None:
    fh = await create(ops, "new.txt")
    assert await ops.write(fh, 0, b"hello ") == 6
    assert await ops.write(fh, 6, b"world") == 5
    assert store.calls["put"] == 0, "nothing goes up before flush"
    await close(ops, fh)
    assert stored(store, "new.txt") == b"hello world" and store.calls["put"] == 1
    assert journal.records() == [] and os.listdir(journal.staging_dir) == []
    attr = await resolve(ops, "new.txt")
    assert attr.st_size == 11 and await read_file(ops, "new.txt") == b"hello world"


async def test_size_and_bytes_are_visible_while_writing(ops: Operations, store: MemoryStore,
                                                        clock: FakeClock,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fh = await create(ops, "dir/growing.bin")
    await ops.write(fh, 0, b"x" * 5000)
    assert (await resolve(ops, "dir/growing.bin")).st_size == 5000
    assert await read_file(ops, "dir/growing.bin") == b"x" * 5000
    clock.now += 120  # listings and stats expire: the store does not have the file yet, the mount does
    assert "growing.bin" in await listing(ops, "dir", monkeypatch)
    assert (await resolve(ops, "dir/growing.bin")).st_size == 5000
    assert (await ops.getattr((await resolve(ops, "dir/growing.bin")).st_ino, CTX)).st_size == 5000
    await ops.write(fh, 5000, b"y")
    assert (await resolve(ops, "dir/growing.bin")).st_size == 5001
    await close(ops, fh)
    assert stored(store, "dir/growing.bin") == b"x" * 5000 + b"y"


async def test_random_writes_with_a_hole(ops: Operations, store: MemoryStore) -> None:
    fh = await create(ops, "random.bin")
    await ops.write(fh, 3000, b"C" * 100)
    await ops.write(fh, 0, b"A" * 10)
    await ops.write(fh, 1500, b"B" * 600)  # across a part boundary
    await close(ops, fh)
    expected = bytearray(3100)
    expected[3000:3100] = b"C" * 100
    expected[0:10] = b"A" * 10
    expected[1500:2100] = b"B" * 600
    assert stored(store, "random.bin") == bytes(expected)
    assert store.calls["complete_multipart"] == 1, "more than one part: multipart"


async def test_overwrite_stages_the_old_object_from_the_cache(ops: Operations, store: MemoryStore) -> None:
    old = bytes(range(256)) * 20
    store.put_object("model.bin", old)
    assert await read_file(ops, "model.bin") == old  # now in the block cache
    gets = store.calls["get_range"]
    fh = await open_file(ops, "model.bin", os.O_RDWR)
    assert store.calls["get_range"] == gets, "staged from the cache, not fetched again"
    await ops.write(fh, 100, b"PATCH")
    assert bytes(await ops.read(fh, 95, 15)) == old[95:100] + b"PATCH" + old[105:110]
    await close(ops, fh)
    expected = old[:100] + b"PATCH" + old[105:]
    assert stored(store, "model.bin") == expected
    assert await read_file(ops, "model.bin") == expected, "the new ETag is what later reads ask for"
    node = ops.namespace.inodes.by_path(ops.namespace.mounts[0], "model.bin", False)
    assert node is not None and node.meta == store.head("model.bin")


async def test_open_with_o_trunc_does_not_read_the_old_object(ops: Operations, store: MemoryStore) -> None:
    store.put_object("big", b"z" * 10_000)
    fh = await open_file(ops, "big", os.O_WRONLY | os.O_TRUNC)
    assert (await resolve(ops, "big")).st_size == 0
    await ops.write(fh, 0, b"short")
    await close(ops, fh)
    assert store.calls["get_range"] == 0 and stored(store, "big") == b"short"


async def test_append(ops: Operations, store: MemoryStore) -> None:
    fh = await open_file(ops, "top.txt", os.O_WRONLY | os.O_APPEND)
    size = (await resolve(ops, "top.txt")).st_size
    await ops.write(fh, size, b", world")  # the kernel gives O_APPEND writes the end as offset
    await close(ops, fh)
    assert stored(store, "top.txt") == b"hello, world"


async def test_two_handles_share_one_staged_file(ops: Operations, store: MemoryStore) -> None:
    first = await open_file(ops, "top.txt", os.O_RDWR)
    second = await open_file(ops, "top.txt", os.O_WRONLY)
    await ops.write(first, 0, b"J")
    await ops.write(second, 4, b"y")
    assert bytes(await ops.read(first, 0, 10)) == b"Jelly"
    uploader = ops.namespace.mounts[0].uploader
    assert uploader is not None and len(uploader.staged_uploads()) == 1
    await close(ops, first)
    assert stored(store, "top.txt") == b"Jelly"
    await ops.write(second, 0, b"B")
    await close(ops, second)
    assert stored(store, "top.txt") == b"Belly" and uploader.staged_uploads() == []


async def test_fsync_uploads_and_an_unchanged_file_uploads_nothing(ops: Operations,
                                                                  store: MemoryStore) -> None:
    fh = await open_file(ops, "top.txt", os.O_RDWR)
    await ops.fsync(fh, False)
    assert store.calls["put"] == 0
    await ops.write(fh, 0, b"H")
    await ops.fsync(fh, True)
    assert stored(store, "top.txt") == b"Hello" and store.calls["put"] == 1
    await close(ops, fh)
    assert store.calls["put"] == 1


async def test_a_failed_upload_is_eio_keeps_the_data_and_succeeds_later(
        ops: Operations, store: MemoryStore, journal: UploadJournal,
        caplog: pytest.LogCaptureFixture) -> None:
    fh = await create(ops, "precious.bin")
    await ops.write(fh, 0, b"keep me")
    store.inject("put", StoreUnavailable("503 (gave up after 3 attempt(s))"))
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.flush(fh)
    assert errno_of(excinfo) == errno.EIO
    assert "precious.bin" in caplog.text and "stays staged" in caplog.text
    assert [r.state for r in journal.records()] == ["failed"]
    assert await read_file(ops, "precious.bin") == b"keep me"
    await ops.fsync(fh, False)  # the store answers again
    assert stored(store, "precious.bin") == b"keep me"
    await ops.release(fh)
    assert journal.records() == []


async def test_a_full_cache_disk_is_enospc(ops: Operations, store: MemoryStore,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fh = await create(ops, "full.bin")
    await ops.write(fh, 0, b"before")

    def full(self: StagedFile, offset: int, data: bytes) -> int:
        raise NoSpace("cannot stage: the cache disk is full")

    monkeypatch.setattr(StagedFile, "pwrite", full)
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.write(fh, 6, b"after")
    assert errno_of(excinfo) == errno.ENOSPC
    monkeypatch.undo()
    await close(ops, fh)
    assert stored(store, "full.bin") == b"before", "what was written before stays whole"


async def test_names_the_store_cannot_hold_are_enametoolong_at_create(ops: Operations,
                                                                      store: MemoryStore) -> None:
    """A component over 255 bytes, or a key over the store's limit (1024 bytes on S3): refused
    before anything is staged, by create, mkdir and rename alike; 255 bytes is fine."""
    long_name, fine = "n" * 256, "é" * 127  # 254 bytes
    await ops.mkdir(ROOT, name("d"), 0o755, CTX)
    d = (await resolve(ops, "d")).st_ino
    for parent, leaf in ((ROOT, long_name), (d, "é" * 128)):
        with pytest.raises(pyfuse3.FUSEError) as info:
            await ops.create(parent, name(leaf), stat.S_IFREG | 0o644, os.O_WRONLY | os.O_CREAT, CTX)
        assert errno_of(info) == errno.ENAMETOOLONG
        with pytest.raises(pyfuse3.FUSEError) as info:
            await ops.mkdir(parent, name(leaf), 0o755, CTX)
        assert errno_of(info) == errno.ENAMETOOLONG
    deep = "/".join(["p" * 250] * 4)  # 1003 bytes: a key S3 takes
    for depth in range(1, 5):
        await ops.mkdir((await resolve(ops, "/".join(deep.split("/")[:depth - 1]))).st_ino,
                        name("p" * 250), 0o755, CTX)
    with pytest.raises(pyfuse3.FUSEError) as info:  # 1003 + 1 + 21 bytes: over 1024
        await create(ops, deep + "/" + "x" * 21)
    assert errno_of(info) == errno.ENAMETOOLONG
    await write_file(ops, deep + "/" + "x" * 20, b"fits")
    await write_file(ops, fine, b"fine")
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.rename(ROOT, name(fine), ROOT, name(long_name), 0, CTX)
    assert errno_of(info) == errno.ENAMETOOLONG
    assert stored(store, deep + "/" + "x" * 20) == b"fits" and stored(store, fine) == b"fine"
    assert not [k for k in keys(store) if "n" * 256 in k or "é" * 128 in k]
    assert ops.namespace.mounts[0].uploader is not None and ops.namespace.mounts[0].uploader.pending() == []


async def test_truncate_by_path_and_by_handle(ops: Operations, store: MemoryStore) -> None:
    store.put_object("t.bin", b"0123456789")
    inode = (await resolve(ops, "t.bin")).st_ino
    attr = await ops.setattr(inode, attributes(st_size=4), setattr_fields(size=True), None, CTX)
    assert attr.st_size == 4 and stored(store, "t.bin") == b"0123", "a path truncate is in the store at once"
    attr = await ops.setattr(inode, attributes(st_size=6), setattr_fields(size=True), None, CTX)
    assert stored(store, "t.bin") == b"0123\0\0"
    fh = await open_file(ops, "t.bin", os.O_RDWR)
    attr = await ops.setattr(inode, attributes(st_size=2), setattr_fields(size=True), fh, CTX)
    assert attr.st_size == 2 and stored(store, "t.bin") == b"0123\0\0", "through a handle: at close"
    await close(ops, fh)
    assert stored(store, "t.bin") == b"01"
    await ops.setattr(inode, attributes(st_size=0), setattr_fields(size=True), None, CTX)
    assert stored(store, "t.bin") == b""


WHEN = 1_500_000_000_123_456_789


async def mtime_of(ops: Operations, path: str) -> int:
    return int((await resolve(ops, path)).st_mtime_ns)


async def listed_mtimes(ops: Operations, path: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """name -> st_mtime_ns of a directory's entries, as readdir hands them to the kernel."""
    seen: dict[str, int] = {}

    def reply(token: Any, entry: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        seen[os.fsdecode(entry)] = attr.st_mtime_ns
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    fh = await ops.opendir((await resolve(ops, path)).st_ino, CTX)
    await ops.readdir(fh, 0, None)  # type: ignore[arg-type]
    await ops.releasedir(fh)
    monkeypatch.undo()
    return seen


async def utimens(ops: Operations, path: str, when: int, fh: pyfuse3.FileHandleT | None = None
                  ) -> pyfuse3.EntryAttributes:
    inode = (await resolve(ops, path)).st_ino
    return await ops.setattr(inode, attributes(st_mtime_ns=when), setattr_fields(mtime=True), fh, CTX)


async def test_utimens_on_a_stored_file_is_kept_in_the_object(
        ops: Operations, store: MemoryStore, journal: UploadJournal, clock: FakeClock, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = store.head("top.txt")
    assert (await utimens(ops, "top.txt", WHEN)).st_mtime_ns == WHEN
    assert store.head("top.txt").mtime_ns == WHEN and stored(store, "top.txt") == b"hello"
    assert store.calls["set_mtime"] == 1 and store.calls["put"] == 0, "the bytes are not sent again"
    assert store.head("top.txt").etag != before.etag, "MemoryStore copies in place, as S3 may"
    assert await read_file(ops, "top.txt") == b"hello", "reads follow the new ETag"
    clock.now += 120  # metadata fetched again: HEAD, and a listing that shows only LastModified
    assert (await ops.getattr((await resolve(ops, "top.txt")).st_ino, CTX)).st_mtime_ns == WHEN
    assert (await listed_mtimes(ops, "", monkeypatch))["top.txt"] == WHEN, "the ETag did not change"
    # another mount, or this one remounted: the store says so
    (tmp_path / "other").mkdir()
    other = make_ops(store, journal, clock, tmp_path / "other")
    assert await mtime_of(other, "top.txt") == WHEN
    store.put_object("top.txt", b"changed by another client")
    clock.now += 120
    assert await mtime_of(ops, "top.txt") == store.head("top.txt").mtime_ns != WHEN


async def test_utimens_while_written_goes_up_with_the_upload(ops: Operations, store: MemoryStore,
                                                             clock: FakeClock) -> None:
    """cp -p and touch of a new file: the mtime is set before close, and the one PUT carries it."""
    fh = await create(ops, "copied.txt")
    await ops.write(fh, 0, b"payload")
    assert (await utimens(ops, "copied.txt", WHEN, fh)).st_mtime_ns == WHEN
    assert await mtime_of(ops, "copied.txt") == WHEN, "shown at once, before the upload"
    await close(ops, fh)
    assert store.head("copied.txt").mtime_ns == WHEN and stored(store, "copied.txt") == b"payload"
    assert store.calls["put"] == 1 and store.calls["set_mtime"] == 0
    clock.now += 120
    assert await mtime_of(ops, "copied.txt") == WHEN
    # a write after it: the mtime is the write's again (POSIX), in the mount and in the store
    fh = await open_file(ops, "copied.txt", os.O_WRONLY)
    await ops.write(fh, 0, b"P")
    assert await mtime_of(ops, "copied.txt") != WHEN
    await close(ops, fh)
    assert store.head("copied.txt").mtime_ns != WHEN and stored(store, "copied.txt") == b"Payload"


async def test_utimens_after_close_then_rename_as_rsync_does(ops: Operations, store: MemoryStore,
                                                             clock: FakeClock) -> None:
    await write_file(ops, ".f.XXXXXX", b"synced")
    await utimens(ops, ".f.XXXXXX", WHEN)
    assert store.calls["set_mtime"] == 1 and store.head(".f.XXXXXX").mtime_ns == WHEN
    await ops.rename(ROOT, name(".f.XXXXXX"), ROOT, name("f"), 0, CTX)
    assert store.head("f").mtime_ns == WHEN, "the copy keeps the metadata"
    assert await mtime_of(ops, "f") == WHEN
    clock.now += 120
    assert await mtime_of(ops, "f") == WHEN


async def test_utimens_during_the_upload_is_set_after_it(journal: UploadJournal, clock: FakeClock,
                                                         tmp_path: Path) -> None:
    store = GatedStore()
    ops = make_ops(store, journal, clock, tmp_path)
    fh = await create(ops, "racy.txt")
    await ops.write(fh, 0, b"data")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ops.flush, fh)
        await trio.to_thread.run_sync(store.entered.wait, 10)
        await utimens(ops, "racy.txt", WHEN)
        store.gate.set()
    await ops.release(fh)
    assert store.head("racy.txt").mtime_ns == WHEN and store.calls["set_mtime"] == 1
    assert await mtime_of(ops, "racy.txt") == WHEN


async def test_a_failed_utimens_is_eio_and_the_old_mtime_stays(ops: Operations, store: MemoryStore,
                                                               clock: FakeClock) -> None:
    old = await mtime_of(ops, "top.txt")
    store.inject("set_mtime", StoreUnavailable("503 (gave up)"))
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await utimens(ops, "top.txt", WHEN)
    assert errno_of(excinfo) == errno.EIO
    assert await mtime_of(ops, "top.txt") == old == store.head("top.txt").mtime_ns
    clock.now += 120
    assert await mtime_of(ops, "top.txt") == old


async def test_utimens_of_a_directory_stays_in_memory(ops: Operations, store: MemoryStore) -> None:
    store.reset_counters()
    assert (await utimens(ops, "dir", WHEN)).st_mtime_ns == WHEN
    assert await mtime_of(ops, "dir") == WHEN
    assert sum(store.calls[op] for op in ("put", "copy", "set_mtime")) == 0


async def test_chmod_and_chown_are_accepted_and_ignored(ops: Operations) -> None:
    inode = (await resolve(ops, "top.txt")).st_ino
    attr = await ops.setattr(inode, attributes(st_mode=0o100600, st_uid=5),
                             setattr_fields(mode=True, uid=True), None, CTX)
    assert stat.S_IMODE(attr.st_mode) == 0o644 and attr.st_uid == 0


# --- names ---------------------------------------------------------------------------------------


async def test_unlink_deletes_and_the_name_is_gone(ops: Operations, store: MemoryStore,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert "top.txt" in await listing(ops, "", monkeypatch)
    await ops.unlink(ROOT, name("top.txt"), CTX)
    assert "top.txt" not in keys(store)
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await resolve(ops, "top.txt")
    assert errno_of(excinfo) == errno.ENOENT
    assert "top.txt" not in await listing(ops, "", monkeypatch)
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.unlink(ROOT, name("dir"), CTX)
    assert errno_of(excinfo) == errno.EISDIR


async def test_unlink_of_a_file_being_written_discards_it(ops: Operations, store: MemoryStore,
                                                          journal: UploadJournal) -> None:
    fh = await create(ops, "scratch.tmp")
    await ops.write(fh, 0, b"temporary")
    await ops.unlink(ROOT, name("scratch.tmp"), CTX)
    assert bytes(await ops.read(fh, 0, 100)) == b"temporary", "an open handle keeps working"
    await ops.write(fh, 9, b"!")
    await close(ops, fh)
    assert "scratch.tmp" not in keys(store) and store.calls["put"] == 0
    assert journal.records() == [] and os.listdir(journal.staging_dir) == []


async def test_mkdir_makes_a_marker_and_an_empty_directory(ops: Operations, store: MemoryStore,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    attr = await ops.mkdir(ROOT, name("made"), 0o755, CTX)
    assert stat.S_ISDIR(attr.st_mode) and stored(store, "made/") == b""
    assert await listing(ops, "made", monkeypatch) == []
    assert "made/" in await listing(ops, "", monkeypatch)
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.mkdir(ROOT, name("made"), 0o755, CTX)
    assert errno_of(excinfo) == errno.EEXIST
    await write_file(ops, "made/inside.txt", b"in")
    assert await listing(ops, "made", monkeypatch) == ["inside.txt"]


async def test_rmdir_only_when_empty(ops: Operations, store: MemoryStore,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.rmdir(ROOT, name("dir"), CTX)
    assert errno_of(excinfo) == errno.ENOTEMPTY
    await ops.rmdir(ROOT, name("marker"), CTX)
    assert "marker/" not in keys(store) and "marker/" not in await listing(ops, "", monkeypatch)
    await ops.mkdir(ROOT, name("busy"), 0o755, CTX)
    fh = await create(ops, "busy/open.bin")  # only staged, not in the store yet
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.rmdir(ROOT, name("busy"), CTX)
    assert errno_of(excinfo) == errno.ENOTEMPTY
    await close(ops, fh)
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.rmdir(ROOT, name("top.txt"), CTX)
    assert errno_of(excinfo) == errno.ENOTDIR


async def test_a_directory_emptied_by_the_mount_stays(ops: Operations, store: MemoryStore,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """dir/sub has no marker: removing its last file puts one, so the directory stays until rmdir."""
    assert await listing(ops, "dir/sub", monkeypatch) == ["b.bin"]
    await ops.unlink((await resolve(ops, "dir/sub")).st_ino, name("b.bin"), CTX)
    assert stored(store, "dir/sub/") == b""
    assert await listing(ops, "dir", monkeypatch) == ["a.bin", "sub/"]
    await ops.rmdir((await resolve(ops, "dir")).st_ino, name("sub"), CTX)
    assert [k for k in keys(store) if k.startswith("dir/")] == ["dir/a.bin"]
    await ops.unlink((await resolve(ops, "dir")).st_ino, name("a.bin"), CTX)
    assert [k for k in keys(store) if k.startswith("dir/")] == ["dir/"]
    assert "dir/" in await listing(ops, "", monkeypatch)


async def test_rename_of_a_file_is_copy_then_delete(ops: Operations, store: MemoryStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    inode = (await resolve(ops, "top.txt")).st_ino
    await ops.rename(ROOT, name("top.txt"), (await resolve(ops, "dir")).st_ino, name("moved.txt"), 0, CTX)
    assert "top.txt" not in keys(store) and stored(store, "dir/moved.txt") == b"hello"
    assert store.calls["copy"] == 1 and store.calls["delete"] == 1
    assert (await resolve(ops, "dir/moved.txt")).st_ino == inode, "the inode moves with the name"
    assert await read_file(ops, "dir/moved.txt") == b"hello"
    assert "top.txt" not in await listing(ops, "", monkeypatch)
    assert "moved.txt" in await listing(ops, "dir", monkeypatch)
    # onto an existing file: it is replaced
    await ops.rename((await resolve(ops, "dir")).st_ino, name("moved.txt"), ROOT, name("empty"), 0, CTX)
    assert stored(store, "empty") == b"hello" and "dir/moved.txt" not in keys(store)
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.rename(ROOT, name("empty"), ROOT, name("dir"), 0, CTX)
    assert errno_of(excinfo) == errno.EISDIR
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.rename(ROOT, name("empty"), ROOT, name("both"), pyfuse3.RENAME_NOREPLACE, CTX)
    assert errno_of(excinfo) == errno.EEXIST


async def test_rename_of_a_file_being_written(ops: Operations, store: MemoryStore) -> None:
    fh = await create(ops, "draft.txt")
    await ops.write(fh, 0, b"draft")
    await ops.rename(ROOT, name("draft.txt"), ROOT, name("final.txt"), 0, CTX)
    assert (await resolve(ops, "final.txt")).st_size == 5
    await ops.write(fh, 5, b" done")
    await close(ops, fh)
    assert stored(store, "final.txt") == b"draft done" and "draft.txt" not in keys(store)


async def test_rename_of_a_directory_moves_every_key(ops: Operations, store: MemoryStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_object("dir/sub/deeper/c.bin", b"c")
    store.put_object("dir/sub/marked/", b"")
    child = await resolve(ops, "dir/sub/b.bin")  # known to the kernel before the rename
    fh = await create(ops, "dir/writing.bin")
    await ops.write(fh, 0, b"w")
    await ops.rename(ROOT, name("dir"), ROOT, name("renamed"), 0, CTX)
    assert [k for k in keys(store) if k.startswith("dir")] == []
    assert sorted(k for k in keys(store) if k.startswith("renamed/")) == [
        "renamed/a.bin", "renamed/sub/b.bin", "renamed/sub/deeper/c.bin", "renamed/sub/marked/"]
    assert await read_file(ops, "renamed/sub/b.bin") == b"b" * 10
    assert (await ops.getattr(child.st_ino, CTX)).st_size == 10, "descendants keep their inodes"
    assert await listing(ops, "renamed/sub", monkeypatch) == ["b.bin", "deeper/", "marked/"]
    assert "dir/" not in await listing(ops, "", monkeypatch)
    await close(ops, fh)
    assert stored(store, "renamed/writing.bin") == b"w" and "dir/writing.bin" not in keys(store)
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.rename(ROOT, name("renamed"), (await resolve(ops, "renamed/sub")).st_ino, name("x"), 0, CTX)
    assert errno_of(excinfo) == errno.EINVAL
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.rename(ROOT, name("renamed"), ROOT, name("both"), 0, CTX)
    assert errno_of(excinfo) == errno.ENOTEMPTY
    await ops.mkdir(ROOT, name("target"), 0o755, CTX)
    await ops.rename(ROOT, name("renamed"), ROOT, name("target"), 0, CTX)  # onto an empty directory
    assert "target/sub/b.bin" in keys(store)


async def test_a_file_known_before_its_directory_was_renamed_opens_under_the_new_name(
        ops: Operations, store: MemoryStore) -> None:
    """The kernel keeps the dentries of a renamed directory's files and opens them by inode, without
    a lookup: the node must not read the old key, which the rename deleted."""
    await ops.mkdir(ROOT, name("e"), 0o755, CTX)
    await write_file(ops, "e/f.bin", b"moved with its folder")
    inode = (await resolve(ops, "e/f.bin")).st_ino
    await ops.rename(ROOT, name("e"), ROOT, name("d"), 0, CTX)
    assert keys(store) & {"e/f.bin", "d/f.bin"} == {"d/f.bin"}
    fh = (await ops.open(inode, os.O_RDONLY, CTX)).fh
    try:
        assert bytes(await ops.read(fh, 0, 100)) == b"moved with its folder"
    finally:
        await ops.release(fh)


def copies_keep_the_etag(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """As S3 copies a single-part object: the copy has the source's ETag (MemoryStore gives a new one,
    as GCS and Azure do)."""
    copy = store.copy

    def same_etag(src_key: str, dst_key: str) -> Any:
        source = store._objects[src_key]
        copy(src_key, dst_key)
        store._objects[dst_key] = store._objects[dst_key]._replace(etag=source.etag)
        return store.head(dst_key)
    monkeypatch.setattr(store, "copy", same_etag)


@pytest.mark.parametrize("etag", ["new", "kept"])
@pytest.mark.parametrize("renamed", ["file", "directory"])
async def test_a_file_open_for_reading_reads_on_after_a_rename(ops: Operations, store: MemoryStore,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               renamed: str, etag: str) -> None:
    """The old key is gone after a rename (a copy, then a delete): reads of blocks not cached yet
    follow the file to its new key, whether the copy got a new ETag or kept the old one."""
    if etag == "kept":
        copies_keep_the_etag(store, monkeypatch)
    data = os.urandom(3 * BLOCK + 5)
    store.put_object("e/f.bin", data)
    fh = await open_file(ops, "e/f.bin", os.O_RDONLY)
    try:
        assert bytes(await ops.read(fh, 0, 10)) == data[:10]  # only the first block is fetched
        if renamed == "file":
            await ops.rename((await resolve(ops, "e")).st_ino, name("f.bin"),
                             (await resolve(ops, "e")).st_ino, name("g.bin"), 0, CTX)
        else:
            await ops.rename(ROOT, name("e"), ROOT, name("d"), 0, CTX)
        assert "e/f.bin" not in keys(store)
        assert bytes(await ops.read(fh, 2 * BLOCK, BLOCK + 5)) == data[2 * BLOCK:]
    finally:
        await ops.release(fh)


async def test_a_directory_rename_that_cannot_finish_says_so(ops: Operations, store: MemoryStore,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    await resolve(ops, "dir")
    store.inject("copy", StoreUnavailable("503 (gave up)"))
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.rename(ROOT, name("dir"), ROOT, name("elsewhere"), 0, CTX)
    assert errno_of(excinfo) == errno.EIO
    assert "rename of dir/ to elsewhere/ stopped after copying" in caplog.text
    assert "nothing was removed" in caplog.text
    assert {"dir/a.bin", "dir/sub/b.bin"} <= set(store.keys())
    assert await read_file(ops, "dir/a.bin") == b"a" * 100


async def test_read_only_mounts_answer_erofs(store: MemoryStore, journal: UploadJournal, clock: FakeClock,
                                             tmp_path: Path) -> None:
    ops = make_ops(store, journal, clock, tmp_path, read_only=True)
    attr = await resolve(ops, "top.txt")
    assert stat.S_IMODE(attr.st_mode) == 0o444
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.open(attr.st_ino, os.O_WRONLY, CTX)
    assert errno_of(excinfo) == errno.EROFS
    for call in (ops.mkdir(ROOT, name("d"), 0o755, CTX), ops.unlink(ROOT, name("top.txt"), CTX),
                 ops.rmdir(ROOT, name("marker"), CTX), ops.create(ROOT, name("n"), 0o100644, 0, CTX),
                 ops.rename(ROOT, name("top.txt"), ROOT, name("n"), 0, CTX),
                 ops.setattr(attr.st_ino, attributes(st_size=0), setattr_fields(size=True), None, CTX),
                 ops.setattr(attr.st_ino, attributes(st_mtime_ns=1), setattr_fields(mtime=True), None, CTX)):
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await call
        assert errno_of(excinfo) == errno.EROFS
    assert sum(store.calls[op] for op in ("put", "delete", "copy", "create_multipart", "set_mtime")) == 0


async def test_virtual_directories_and_mount_roots_do_not_change(journal: UploadJournal, clock: FakeClock,
                                                                 tmp_path: Path) -> None:
    first, second = MemoryStore("one"), MemoryStore("two")
    first.put_object("f", b"1")
    ops = make_ops(first, journal, clock, tmp_path, mounts=[("a/one", first), ("b", second)])
    a = await resolve(ops, "a")
    assert stat.S_IMODE(a.st_mode) == 0o555
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.mkdir(ROOT, name("c"), 0o755, CTX)
    assert errno_of(excinfo) == errno.EROFS
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.rmdir(a.st_ino, name("one"), CTX)
    assert errno_of(excinfo) == errno.EROFS
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.rename((await resolve(ops, "a/one")).st_ino, name("f"), (await resolve(ops, "b")).st_ino,
                         name("f"), 0, CTX)
    assert errno_of(excinfo) == errno.EXDEV
    await write_file(ops, "b/new", b"2")
    assert stored(second, "new") == b"2"


async def test_links_and_device_nodes_are_eperm(ops: Operations) -> None:
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.symlink(ROOT, name("link"), name("top.txt"), CTX)
    assert errno_of(excinfo) == errno.EPERM
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await ops.create(ROOT, name("fifo"), stat.S_IFIFO | 0o644, 0, CTX)
    assert errno_of(excinfo) == errno.EPERM


async def test_statfs_reports_the_cache_disk(ops: Operations, tmp_path: Path) -> None:
    data = await ops.statfs(CTX)
    disk = os.statvfs(tmp_path)
    assert data.f_bavail * data.f_frsize == pytest.approx(disk.f_bavail * disk.f_frsize, rel=0.01)
    assert data.f_namemax == 255 and data.f_ffree > 0


async def test_writes_wait_for_recovery(store: MemoryStore, journal: UploadJournal, clock: FakeClock,
                                        tmp_path: Path) -> None:
    ops = make_ops(store, journal, clock, tmp_path)
    ops.writes.ready = trio.Event()
    done = trio.Event()

    async def writer() -> None:
        await write_file(ops, "after-recovery", b"x")
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set() and await read_file(ops, "top.txt") == b"hello", "reads go on"
        ops.writes.ready.set()
    assert stored(store, "after-recovery") == b"x"


async def _until(check: Any) -> None:
    """Let other tasks (and their worker threads) run until `check()` holds."""
    with trio.fail_after(10):
        while not check():
            await trio.sleep(0.001)


async def test_o_trunc_open_while_the_last_close_is_released_keeps_its_file(
        ops: Operations, store: MemoryStore) -> None:
    """close(2) returns after FUSE's flush; its release comes later, and may come while another
    open(O_TRUNC) of the file is truncating the staged file it shares. That open's handle must keep
    the file: no write of it fails (EIO "already released") once the upload of the truncation
    drops the staged file, and what it writes reaches the store."""
    fh = await create(ops, "f.bin")
    await ops.write(fh, 0, b"first version")
    await ops.flush(fh)  # close(2) returned; the kernel has not sent the release yet
    staged = staged_of_handle(ops, fh)
    assert staged is not None
    uploader = ops.namespace.mounts[0].uploader
    assert uploader is not None
    handles: list[pyfuse3.FileHandleT] = []

    async def overwrite() -> None:
        handles.append(await open_file(ops, "f.bin", os.O_WRONLY | os.O_TRUNC))

    # the truncation of the open waits for its journal record, held here
    async with trio.open_nursery() as nursery, staged.journal_lock:
        nursery.start_soon(overwrite)
        await _until(lambda: staged.journal_lock.statistics().tasks_waiting == 1)
        await ops.release(fh)  # the first handle's release arrives meanwhile
    second = handles[0]
    assert staged_of_handle(ops, second) is staged
    await uploader.flush(staged)  # what the background retry of a released upload does
    assert await ops.write(second, 0, b"second") == 6
    await close(ops, second)
    assert stored(store, "f.bin") == b"second"
    assert await read_file(ops, "f.bin") == b"second"


async def test_rename_waiting_for_an_upload_that_ends_and_drops_the_file_moves_the_object(
        ops: Operations, store: MemoryStore) -> None:
    """A file is renamed right after its last close: the rename waits for the staged upload, whose
    release (clean, uploaded) drops it first. The rename then moves the object in the store: the
    closed file's data is under the new name, not deleted with the old one."""
    fh = await create(ops, "a.bin")
    await ops.write(fh, 0, b"acknowledged")
    await ops.flush(fh)
    staged = staged_of_handle(ops, fh)
    assert staged is not None
    old_parent, old_name = await parent_of(ops, "a.bin")
    async with trio.open_nursery() as nursery, staged.flush_lock:  # an upload of the file holds it
        nursery.start_soon(ops.release, fh)
        await _until(lambda: staged.flush_lock.statistics().tasks_waiting == 1)
        nursery.start_soon(ops.rename, old_parent, old_name, old_parent, name("b.bin"), 0, CTX)
        await _until(lambda: staged.flush_lock.statistics().tasks_waiting == 2)
    assert staged.dropped
    assert keys(store) >= {"b.bin"} and "a.bin" not in keys(store)
    assert stored(store, "b.bin") == b"acknowledged"
    assert await read_file(ops, "b.bin") == b"acknowledged"


class _GatedFile(GatedStore):
    """Only the PUT of `gated` waits for the gate."""

    gated = "d/f.bin"

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> Any:
        if key == self.gated:
            return super().put(key, data, mtime_ns)
        return MemoryStore.put(self, key, data, mtime_ns)


async def test_a_directory_rename_that_waited_for_an_upload_ending_after_its_listing_moves_the_file(
        journal: UploadJournal, clock: FakeClock, tmp_path: Path) -> None:
    """A file's last close is uploading while its directory is renamed: the rename lists the
    directory before the object is there, then waits for the upload, which ends and drops the
    staged file (all handles closed). The object the upload made is moved too: the closed file is
    in the new directory, and nothing stays behind in the old one."""
    store = _GatedFile()
    ops = make_ops(store, journal, clock, tmp_path)
    await ops.mkdir(ROOT, name("d"), 0o755, CTX)
    fh = await create(ops, "d/f.bin")
    await ops.write(fh, 0, b"closed while its folder moved")
    staged = staged_of_handle(ops, fh)
    assert staged is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ops.flush, fh)
        await trio.to_thread.run_sync(store.entered.wait, 10)  # the PUT is under way
        await ops.release(fh)
        nursery.start_soon(ops.rename, ROOT, name("d"), ROOT, name("e"), 0, CTX)
        await _until(lambda: staged.flush_lock.statistics().tasks_waiting == 1)
        store.gate.set()
    assert staged.dropped
    assert stored(store, "e/f.bin") == b"closed while its folder moved"
    assert not any(key.startswith("d/") for key in keys(store))
    assert await read_file(ops, "e/f.bin") == b"closed while its folder moved"
