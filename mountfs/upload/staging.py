"""Staged files: where written data waits on the cache disk until it is uploaded.

A staged file is the truth for its object while it is open for writing: readers in the same mount
get their bytes and size from it. Besides the bytes it keeps a version per part-sized range. Every
write or truncate stamps the ranges it touched with a new number from a monotonic clock *after* the
bytes are in place; an upload notes the version before it reads a range. A part stays uploaded only
while that version is unchanged, so a random writer re-uploads just the parts it changed, and a
write that races an upload can never be lost (at worst its part goes up twice).

Methods block (file I/O): call them through a `BlockingRunner`. The few attributes read from the
trio thread (`size`, `clock`, `version()`) are guarded by a short lock that is never held over I/O.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
import uuid
from collections.abc import Awaitable, Callable

from mountfs.concurrency import BlockingRunner
from mountfs.errors import NoSpace, Stale

SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
FILL_CHUNK = 4 * 1024 * 1024

Reader = Callable[[int, int], Awaitable[bytes | memoryview]]
"""read(offset, length) -> the old object's bytes in that range (through the block cache)."""


def staging_name(session: str) -> str:
    """A new staged file's name (and journal id): its journal session, then a unique part."""
    return f"{session}-{uuid.uuid4().hex}"


def staging_session(name: str) -> str | None:
    """The journal session a staged file's name starts with; None for a name of another form."""
    session, sep, rest = name.partition("-")
    if not sep or not rest or len(session) != 32 or any(c not in "0123456789abcdef" for c in session):
        return None
    return session


def no_space(path: str, exc: OSError) -> NoSpace:
    return NoSpace(f"cannot stage {path}: the cache disk is full ({os.strerror(exc.errno or 0)})")


class StagedFile:
    """One file under `<cache_dir>/staging/`; its name is the staging id."""

    def __init__(self, path: str, fd: int, part_size: int, size: int = 0) -> None:
        if part_size <= 0:
            raise ValueError(f"part_size must be positive, not {part_size}")
        self.path = path
        self.id = os.path.basename(path)
        self.part_size = part_size
        self._fd = fd
        self._size = size
        self._clock = 0
        self._versions = [0] * self._parts(size)
        self._sequential = True
        self._meta = threading.Lock()  # short: bookkeeping only, taken on the trio thread too
        self._writing = threading.Lock()  # one write or truncate at a time, so a failed one can be undone

    @classmethod
    def create(cls, staging_dir: str, part_size: int, staging_id: str | None = None) -> StagedFile:
        """A new, empty staged file; O_EXCL, so it never reuses (and never clobbers) another's file."""
        os.makedirs(staging_dir, exist_ok=True)
        path = os.path.join(staging_dir, staging_id or uuid.uuid4().hex)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in SPACE_ERRNOS:
                raise no_space(path, exc) from exc
            raise
        return cls(path, fd, part_size)

    @classmethod
    def open(cls, path: str, part_size: int) -> StagedFile:
        """A staged file left by an earlier process (recovery); its size is what is on disk."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        return cls(path, fd, part_size, os.fstat(fd).st_size)

    # --- what the trio thread reads ----------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def clock(self) -> int:
        """Changes on every write or truncate: equal clocks mean equal content."""
        return self._clock

    @property
    def sequential(self) -> bool:
        """True while every write landed in the last, incomplete part or appended to it, leaving no
        hole: the complete parts below will not change again, so they may be uploaded early."""
        return self._sequential

    def version(self, offset: int, length: int) -> int:
        """The newest stamp of the part-sized ranges overlapping [offset, offset + length)."""
        with self._meta:
            first = offset // self.part_size
            last = (offset + max(length, 1) - 1) // self.part_size
            return max(self._versions[first:last + 1], default=0)

    def _parts(self, size: int) -> int:
        return -(-size // self.part_size)

    def _stamp(self, start: int, end: int) -> None:
        """New version for the parts overlapping [start, end) within the size. Hold `_meta`."""
        self._clock += 1
        end = min(end, self._size)
        if end > start:
            for index in range(start // self.part_size, (end - 1) // self.part_size + 1):
                self._versions[index] = self._clock

    def _resize(self, size: int) -> None:
        """Hold `_meta`."""
        self._size = size
        parts = self._parts(size)
        del self._versions[parts:]
        self._versions.extend([0] * (parts - len(self._versions)))

    # --- blocking I/O ------------------------------------------------------------------------

    def pwrite(self, offset: int, data: bytes | memoryview) -> int:
        """Write all of `data` at `offset`. A full disk raises NoSpace and leaves the file at its
        old size (what was partly written inside it is stamped, so it is uploaded as it now is)."""
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        view = memoryview(data).cast("B")
        end = offset + len(view)
        if not view:
            return 0
        with self._writing:
            with self._meta:
                tail = self._size // self.part_size * self.part_size
                appending = tail <= offset <= self._size
            done = 0
            try:
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], offset + done)
            except OSError as exc:
                self._undo_growth()
                with self._meta:
                    self._stamp(offset, end)
                if exc.errno in SPACE_ERRNOS:
                    raise no_space(self.path, exc) from exc
                raise
            with self._meta:
                if end > self._size:
                    self._resize(end)
                if not appending:
                    self._sequential = False
                self._stamp(offset, end)
        return len(view)

    def _undo_growth(self) -> None:
        """Cut what a failed write appended past the size: the blocks go back to the disk."""
        if os.fstat(self._fd).st_size > self._size:
            os.ftruncate(self._fd, self._size)

    def pread(self, offset: int, length: int) -> bytes:
        """`length` bytes from `offset`, fewer only at the end of the staged data."""
        length = max(0, min(length, self._size - offset))
        chunks: list[bytes] = []
        got = 0
        while got < length:
            chunk = os.pread(self._fd, length - got, offset + got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def truncate(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"negative size {size}")
        with self._writing:
            old = self._size
            if size == old:
                return
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                if exc.errno in SPACE_ERRNOS:
                    raise no_space(self.path, exc) from exc
                raise
            with self._meta:
                self._resize(size)
                self._sequential = size == 0
                if size > old:
                    self._stamp(old, size)
                elif size % self.part_size:
                    self._stamp(size - 1, size)  # the new last part got shorter
                else:
                    self._clock += 1

    def fsync(self) -> None:
        os.fsync(self._fd)

    def md5(self, offset: int, length: int) -> str:
        """Hex MD5 of a range: what S3 answers as the ETag of a part with these bytes."""
        digest = hashlib.md5(usedforsecurity=False)
        end = min(offset + length, self._size)
        while offset < end:
            chunk = os.pread(self._fd, min(FILL_CHUNK, end - offset), offset)
            if not chunk:
                break
            digest.update(chunk)
            offset += len(chunk)
        return digest.hexdigest()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        """Close and delete: the data is in the store, or no longer wanted."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


async def fill_from(staged: StagedFile, read: Reader, size: int, run: BlockingRunner,
                    chunk: int = FILL_CHUNK) -> None:
    """Copy the old object's `size` bytes into an empty staged file, so that an overwrite or an append
    starts from them. `read` is pinned to the old version by the caller: Stale if it changes."""
    offset = 0
    while offset < size:
        data = await read(offset, min(chunk, size - offset))
        if not data:
            raise Stale(f"{staged.path}: the object ended at {offset} bytes while {size} were expected")
        await run(staged.pwrite, offset, data)
        offset += len(data)
