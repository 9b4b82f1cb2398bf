"""Staged files: bytes, size, per-part version stamps, the sequential flag, a full disk, the fill."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mountfs.concurrency import BlockingRunner
from mountfs.errors import NoSpace, Stale, errno_for
from mountfs.upload.staging import StagedFile, fill_from

PART = 100


def staged(tmp_path: Path) -> StagedFile:
    return StagedFile.create(str(tmp_path / "staging"), PART)


def on_disk(f: StagedFile) -> bytes:
    return Path(f.path).read_bytes()


def test_create_is_exclusive_and_private(tmp_path: Path) -> None:
    f = StagedFile.create(str(tmp_path / "staging"), PART, "abc")
    assert f.path == str(tmp_path / "staging" / "abc") and f.id == "abc"
    assert os.stat(f.path).st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        StagedFile.create(str(tmp_path / "staging"), PART, "abc")
    f.remove()
    assert not os.path.exists(f.path)
    f.remove()  # twice is fine


def test_writes_reads_and_size(tmp_path: Path) -> None:
    f = staged(tmp_path)
    assert f.pwrite(0, b"hello") == 5 and f.size == 5
    assert f.pwrite(10, memoryview(b"world")) == 5 and f.size == 15
    assert f.pread(0, 100) == b"hello" + b"\0" * 5 + b"world"
    assert f.pread(3, 4) == b"lo\0\0"
    assert f.pread(15, 10) == b"" and f.pread(40, 1) == b""
    assert f.pwrite(0, b"") == 0
    f.remove()


def test_version_stamps_only_the_parts_touched(tmp_path: Path) -> None:
    f = staged(tmp_path)
    f.pwrite(0, b"x" * (3 * PART + 10))
    v = [f.version(i * PART, PART) for i in range(4)]
    assert len(set(v)) == 1 and v[0] > 0
    f.pwrite(PART + 5, b"y" * 10)  # inside part 1 only
    assert f.version(PART, PART) > v[1]
    assert [f.version(i * PART, PART) for i in (0, 2, 3)] == [v[0], v[2], v[3]]
    before = f.version(0, PART)
    f.pwrite(PART - 1, b"zz")  # straddles parts 0 and 1
    assert f.version(0, PART) > before and f.version(PART, PART) == f.version(0, PART)
    assert f.version(0, 4 * PART) == f.clock, "a range's version is its newest part's"
    f.remove()


def test_sequential_flag(tmp_path: Path) -> None:
    f = staged(tmp_path)
    for _ in range(5):
        f.pwrite(f.size, b"a" * 30)
    assert f.sequential, "appends"
    f.pwrite(f.size - 10, b"b" * 20)  # rewrites the tail inside the last incomplete part
    assert f.sequential
    f.pwrite(10, b"c")  # into a complete part
    assert not f.sequential
    f.truncate(0)
    assert f.sequential, "truncating to nothing starts over"
    f.pwrite(5, b"hole")
    assert not f.sequential, "a hole is not sequential"
    f.remove()


def test_truncate_stamps_the_parts_that_change(tmp_path: Path) -> None:
    f = staged(tmp_path)
    f.pwrite(0, b"x" * (4 * PART))
    v0, v1 = f.version(0, PART), f.version(PART, PART)
    f.truncate(PART + 50)
    assert f.size == PART + 50 and os.path.getsize(f.path) == PART + 50
    assert f.version(0, PART) == v0, "untouched part keeps its version"
    assert f.version(PART, 50) > v1, "the new last part got shorter"
    clock = f.clock
    f.truncate(2 * PART + 10)  # grows with zeros
    assert f.pread(PART + 40, 20) == b"x" * 10 + b"\0" * 10
    assert f.version(PART, PART) > clock and f.version(2 * PART, 10) > clock
    clock = f.clock
    f.truncate(2 * PART)  # exactly on a part boundary: nothing left changes, but the content did
    assert f.clock > clock and f.version(PART, PART) <= clock
    f.truncate(2 * PART)
    f.remove()


def test_full_disk_is_nospace_and_leaves_the_file_as_it_was(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    f = staged(tmp_path)
    f.pwrite(0, b"keep" * 10)
    real = os.pwrite
    calls = 0

    def full(fd: int, data: bytes, offset: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:  # part of the data lands, then the disk is full
            return real(fd, bytes(data)[:7], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(NoSpace) as caught:
        f.pwrite(40, b"a" * 50)
    assert errno_for(caught.value) == errno.ENOSPC
    monkeypatch.setattr(os, "pwrite", real)
    assert f.size == 40 and on_disk(f) == b"keep" * 10, "the partial append is cut off again"
    monkeypatch.setattr(os, "pwrite", lambda *a: (_ for _ in ()).throw(OSError(errno.EDQUOT, "quota")))
    with pytest.raises(NoSpace):
        f.pwrite(0, b"x")
    monkeypatch.setattr(os, "pwrite", real)
    assert f.pwrite(40, b"after") == 5 and on_disk(f) == b"keep" * 10 + b"after"
    f.remove()


def test_other_write_errors_pass_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = staged(tmp_path)

    def broken(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "pwrite", broken)
    with pytest.raises(OSError) as caught:
        f.pwrite(0, b"x")
    assert caught.value.errno == errno.EIO and not isinstance(caught.value, NoSpace)
    monkeypatch.undo()
    f.remove()


def test_reopen_and_md5(tmp_path: Path) -> None:
    import hashlib

    f = staged(tmp_path)
    f.pwrite(0, b"0123456789" * 25)
    f.fsync()
    f.close()
    again = StagedFile.open(f.path, PART)
    assert again.size == 250 and again.pread(0, 250) == b"0123456789" * 25
    assert again.md5(PART, PART) == hashlib.md5(b"0123456789" * 10).hexdigest()
    assert again.md5(200, PART) == hashlib.md5(b"0123456789" * 5).hexdigest()
    again.remove()


async def test_fill_from_copies_the_old_object(tmp_path: Path) -> None:
    old = bytes(range(256)) * 40
    asked: list[tuple[int, int]] = []

    async def read(offset: int, length: int) -> bytes | memoryview:
        asked.append((offset, length))
        return memoryview(old)[offset:offset + length]

    f = staged(tmp_path)
    await fill_from(f, read, len(old), BlockingRunner(2), chunk=3000)
    assert f.pread(0, len(old)) == old and f.size == len(old)
    assert asked == [(0, 3000), (3000, 3000), (6000, 3000), (9000, 1240)]
    assert f.sequential
    f.remove()


async def test_fill_from_a_shrunk_object_is_stale(tmp_path: Path) -> None:
    async def read(offset: int, length: int) -> bytes:
        return b"x" * min(length, max(0, 50 - offset))

    f = staged(tmp_path)
    with pytest.raises(Stale):
        await fill_from(f, read, 100, BlockingRunner(1), chunk=30)
    f.remove()
