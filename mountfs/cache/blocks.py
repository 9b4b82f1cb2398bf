"""Block bytes on disk: one file per block, written temp-then-rename, verified on read."""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import tempfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import crc32c

from mountfs.buffers import ALIGN, DIRECT_MIN, Buffer, Piece, aligned, is_aligned
from mountfs.errors import NoSpace
from mountfs.processes import process_alive

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
# Checksum granularity of new cache dirs. A small read must read and check whole chunks: measured
# here with the page cache dropped, a 4 KiB pread took about 45 us, 16 KiB 70 us, 64 KiB 140 us.
# 4 KiB chunks cost a Python call each, about 0.3 ms more per 4 MiB verified, which made random
# 1 MiB reads slower than with 64 KiB; 16 KiB chunks cost next to nothing more than 64 KiB and made
# warm random 1 MiB reads about 450 -> 500 ops/s. Caches written before keep 64 KiB (LEGACY_CHUNK).
CHUNK = 16 * 1024
LEGACY_CHUNK = 64 * 1024
SPARE_BYTES = 256 * 1024  # a missed read_nowait this large hands its buffer to the blocking read
DIRECT_PIECE = 1024 * 1024  # bytes per O_DIRECT write through a writer thread's staging buffer

Checksum = Callable[[Buffer], int]


def _crc32c(data: Buffer) -> int:
    """CRC-32C with the CPU's instruction, from the crc32c package, which takes any buffer: a 4 MiB
    block in 16 KiB chunks in about 0.24 ms here. google_crc32c took 0.35 ms, as it takes bytes
    only and a view of a block had to be copied first; zlib's crc32 is about 3x slower."""
    return int(crc32c.crc32c(data))


@dataclass(frozen=True)
class ChecksumKind:
    function: Checksum
    chunk: int  # bytes per checksum


CHECKSUMS: dict[str, ChecksumKind] = {
    "crc32": ChecksumKind(zlib.crc32, LEGACY_CHUNK),
    "crc32c": ChecksumKind(_crc32c, LEGACY_CHUNK),
    "crc32c-16k": ChecksumKind(_crc32c, CHUNK),
}
NEW_CACHE_CHECKSUM = "crc32c-16k"
CHECKSUM_FILE = "CHECKSUM"  # in blocks/: which of CHECKSUMS this cache dir's records hold


def chunk_crcs(data: Buffer, checksum: Checksum = _crc32c, chunk: int = CHUNK) -> tuple[int, ...]:
    view = memoryview(data)
    return tuple(checksum(view[i:i + chunk]) for i in range(0, len(view), chunk))


def checksum_of_dir(root: str) -> str:
    """The checksum a blocks dir uses: what its CHECKSUM file says; crc32c in 16 KiB chunks for a
    new dir; crc32 for one written before the file existed (old caches keep working as they are)."""
    path = os.path.join(root, CHECKSUM_FILE)
    with contextlib.suppress(FileNotFoundError), open(path) as f:
        return f.read().strip()
    kind = "crc32" if any(len(name) == 2 for name in os.listdir(root)) else NEW_CACHE_CHECKSUM
    # Written whole to a temp file, then linked into place: a second daemon never reads it half-written.
    fd, temp = tempfile.mkstemp(prefix=".checksum-", dir=root)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(kind + "\n")
        os.chmod(temp, 0o644)
        try:  # the first daemon to get here decides; a second one reads what it wrote
            os.link(temp, path)
        except FileExistsError:
            with open(path) as f:
                return f.read().strip()
        except OSError:  # no hard links here: renamed (a daemon starting at the same moment decided alike)
            os.rename(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    return kind


def _write_direct(fd: int, data: memoryview, staging: mmap.mmap) -> None:
    """`data` to an O_DIRECT file: as it is if it is page-aligned (blocks from S3 are received into
    aligned buffers), else through the page-aligned `staging` buffer a piece at a time. The part
    past the last whole ALIGN bytes goes through `staging` too, padded, and is cut back."""
    size = len(data)
    whole = size - size % ALIGN if is_aligned(data) else 0
    if whole and os.pwrite(fd, data[:whole], 0) != whole:
        raise _short_write()
    for offset in range(whole, size, len(staging)):
        piece = min(len(staging), size - offset)
        staging[:piece] = data[offset:offset + piece]
        padded = -(-piece // ALIGN) * ALIGN
        if os.pwrite(fd, memoryview(staging)[:padded], offset) != padded:
            raise _short_write()
    if size % ALIGN:
        os.ftruncate(fd, size)


def _short_write() -> OSError:
    """An O_DIRECT write to a new file that wrote less than asked: the disk filled up (a full
    tmpfs, for one, answers so instead of ENOSPC), which must free space like ENOSPC does."""
    return OSError(errno.ENOSPC, "short O_DIRECT write: the disk is full")


class CorruptBlock(Exception):
    """A block file that is missing, short, or fails its checksum: drop it and fetch again.
    `record`: the index record the file was opened by, when known (see BlockCache._drop_corrupt)."""

    record: object = None


class BlockFiles:
    def __init__(self, cache_dir: str) -> None:
        self.root = os.path.join(cache_dir, "blocks")
        os.makedirs(self.root, exist_ok=True)
        self._made: set[str] = set()  # subdirectories known to exist: no mkdir per block
        kind = checksum_of_dir(self.root)
        if kind not in CHECKSUMS:
            raise ValueError(f"{self.root}: unknown block checksum {kind!r} (a newer mountfs?)")
        self.checksum = CHECKSUMS[kind].function
        self.chunk = CHECKSUMS[kind].chunk
        # Blocks of DIRECT_MIN and more are written with O_DIRECT (turned off for good where the
        # file system refuses it). Through the page cache, a cold read kept every byte twice in
        # memory (the reader's pages of the file and the block file's), and on this VM, whose
        # free memory goes back to the host, filling fresh page-cache pages cost 1.2-2.5 s of
        # system time per GiB written against 0.15 s direct.
        self.direct = True
        self._local = threading.local()

    def _direct_for(self, length: int) -> bool:
        """Whether a block of `length` bytes goes to and from the disk with O_DIRECT."""
        return self.direct and length >= DIRECT_MIN

    def path(self, key: bytes) -> str:
        name = key.hex()
        return os.path.join(self.root, name[:2], name)

    def write(self, key: bytes, data: Buffer) -> tuple[int, ...]:
        """Write the block and return its chunk checksums. The final name appears only once whole."""
        final = self.path(key)
        folder = os.path.dirname(final)
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        temp = f"{final}.{os.getpid()}.{id(data):x}{TEMP_SUFFIX}"
        direct = self._direct_for(len(data))
        try:
            try:
                self._write_file(temp, data, direct=direct)
            except OSError as exc:
                if not direct or exc.errno != errno.EINVAL:  # only O_DIRECT's refusal falls back
                    raise
                log.info("%s: no O_DIRECT here (%s): cache blocks go through the page cache", self.root,
                         exc.strerror)
                self.direct = False
                self._write_file(temp, data, direct=False)
            os.rename(temp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"cache disk full writing {final}") from exc
            raise
        return chunk_crcs(data, self.checksum, self.chunk)

    def write_chunks(self, key: bytes, length: int, offset: int,
                     data: Buffer) -> tuple[tuple[int, ...], int, bool]:
        """Write bytes at `offset` (a chunk boundary) of a block of `length` bytes that may be only
        partly present: in place, into its sparse file (made, of full length, when missing), so
        readers of the chunks already recorded read on. Returns the checksums of the chunks
        written, the file's inode, which its commit checks (see BlockCache._is_written), and
        whether this write made the file."""
        final = self.path(key)
        folder = os.path.dirname(final)
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        try:
            fd, made = self._open_for_chunks(final)
            try:
                st = os.fstat(fd)
                if st.st_size != length:
                    os.ftruncate(fd, length)
                view = memoryview(data)
                done = 0
                while done < len(view):
                    done += os.pwrite(fd, view[done:], offset + done)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"cache disk full writing {final}") from exc
            raise
        return chunk_crcs(data, self.checksum, self.chunk), st.st_ino, made

    @staticmethod
    def _open_for_chunks(path: str) -> tuple[int, bool]:
        """A write descriptor of the block's file, and whether this call made the file."""
        for _ in range(8):
            try:
                return os.open(path, os.O_WRONLY | os.O_CLOEXEC), False
            except FileNotFoundError:
                pass
            try:
                return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), True
            except FileExistsError:  # made meanwhile by another writer: opened as it is
                continue
            except FileNotFoundError:  # the subdirectory was removed (`cache prune --all`): again
                os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644), True  # made, for safety

    def inode(self, key: bytes) -> int | None:
        """The inode of the block's file, None when there is none."""
        try:
            return os.stat(self.path(key)).st_ino
        except FileNotFoundError:
            return None

    def read_present(self, key: bytes, length: int, crcs: tuple[int, ...], present: int) -> bytearray:
        """A partial block, its missing chunks zero: the whole (sparse) file, the chunks it holds
        checked."""
        fd = self._open_checked(key, length)
        try:
            data = bytearray(length)
            if os.preadv(fd, [data], 0) != length:
                raise CorruptBlock(f"block file {key.hex()} is shorter than {length}")
        finally:
            os.close(fd)
        view, chunk = memoryview(data), self.chunk
        for number, crc in enumerate(crcs):
            if present >> number & 1 and self.checksum(view[number * chunk:(number + 1) * chunk]) != crc:
                raise CorruptBlock(f"block file {key.hex()} fails its checksum (chunk {number})")
        return data

    def _write_file(self, path: str, data: Buffer, direct: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | (os.O_DIRECT if direct else 0)
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:  # the subdirectory was removed (`cache prune --all`): again
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags, 0o644)
        try:
            view = memoryview(data)
            if direct:
                _write_direct(fd, view, self._staging())
            else:
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def _staging(self) -> mmap.mmap:
        """This thread's page-aligned buffer for O_DIRECT writes (one per writer thread, reused)."""
        buffer: mmap.mmap | None = getattr(self._local, "staging", None)
        if buffer is None:
            buffer = self._local.staging = mmap.mmap(-1, DIRECT_PIECE)
        return buffer

    def open(self, key: bytes, length: int, crcs: tuple[int, ...], present: int | None = None) -> OpenBlock:
        """The block file, open and checked for length, ready for many small reads; `present`:
        the chunks a partial block holds (None: all)."""
        return OpenBlock(key, self._open_checked(key, length), length, crcs, self.checksum, self.chunk,
                         present)

    def _open_checked(self, key: bytes, length: int, flags: int = 0) -> int:
        """A read descriptor of the block file, which must be `length` bytes long."""
        try:
            fd = os.open(self.path(key), os.O_RDONLY | os.O_CLOEXEC | flags)
        except FileNotFoundError as exc:
            raise CorruptBlock(f"block file {key.hex()} is missing") from exc
        if os.fstat(fd).st_size != length:
            os.close(fd)
            raise CorruptBlock(f"block file {key.hex()} has the wrong length (expected {length})")
        return fd

    def read(self, key: bytes, length: int, crcs: tuple[int, ...], start: int = 0,
             end: int | None = None) -> bytes:
        """Bytes [start, end) of the block, after checking the checksum of every chunk they touch."""
        block = self.open(key, length, crcs)
        try:
            return bytes(block.read(start, length if end is None else end))  # a whole block: no copy
        finally:
            block.close()

    def read_whole(self, key: bytes, length: int, crcs: tuple[int, ...]) -> Piece:
        """The whole block, checked. Large blocks are read with O_DIRECT into an aligned buffer:
        the page cache would hold a second copy of bytes the reader's own pages already have, and
        filling it cost more (warm 1 GiB through a file:// mount here: about 1,040 -> 1,110 MB/s,
        daemon CPU 0.97 -> 0.7 s)."""
        if not self._direct_for(length):
            return self.read(key, length, crcs)
        fd = self._open_checked(key, length, os.O_DIRECT)
        try:
            view = aligned(-(-length // ALIGN) * ALIGN)
            got = os.preadv(fd, [view], 0)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return self.read(key, length, crcs)  # this file refuses O_DIRECT reads
        finally:
            os.close(fd)
        if got != length:
            raise CorruptBlock(f"block file {key.hex()} is shorter than {length}")
        data = view[:length]
        if chunk_crcs(data, self.checksum, self.chunk) != crcs:
            raise CorruptBlock(f"block file {key.hex()} fails its checksum")
        return data

    def exists(self, key: bytes) -> bool:
        return os.path.exists(self.path(key))

    def remove(self, key: bytes) -> bool:
        """Unlink the block file; False if it was not there."""
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            return False
        return True

    def remove_orphan_temps(self) -> int:
        """Temp files left by a killed writer: never served, so delete those whose writer is gone.

        Another live daemon may share this dir, so a temp file of a running pid is left alone.
        """
        removed = 0
        for sub in os.scandir(self.root):
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub.path):
                if entry.name.endswith(TEMP_SUFFIX) and not _writer_alive(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
        return removed


def _writer_alive(temp_name: str) -> bool:
    try:
        pid = int(temp_name.split(".")[1])
    except (IndexError, ValueError):
        return False
    return pid != os.getpid() and process_alive(pid)


class OpenBlock:
    """An open block file. Each chunk's checksum is checked the first time this daemon reads it
    (the file never changes under its name: a new version of an object is a new key), so a warm
    random read costs one pread and no CRC.

    `read_nowait` never waits for the disk (RWF_NOWAIT): it answers only from the page cache,
    which is what lets the event loop serve hot blocks without a worker thread.
    """

    def __init__(self, key: bytes, fd: int, length: int, crcs: tuple[int, ...],
                 checksum: Checksum = _crc32c, chunk: int = CHUNK, present: int | None = None) -> None:
        self.key = key
        self.present = present  # the chunks of a partial block (None: whole)
        self.checksum = checksum
        self.chunk = chunk
        self.fd = fd
        # Which file this is: a record dropped and written again names a new file under the same
        # path, while this descriptor still reads the old one.
        self.inode = os.fstat(fd).st_ino
        self.length = length
        self.crcs = crcs
        self._verified = 0  # bit n set: chunk n checked
        # The buffer of a large read_nowait that missed, for the blocking read that follows: one
        # zero-filled allocation of up to a block per read instead of two.
        self._spare: bytearray | None = None

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        self._spare = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def holds(self, start: int, end: int) -> bool:
        """Whether the file holds bytes [start, end) (a partial block may not)."""
        if self.present is None:
            return True
        first, last = start // self.chunk, (end - 1) // self.chunk
        wanted = ((1 << (last - first + 1)) - 1) << first
        return self.present & wanted == wanted

    def read(self, start: int, end: int) -> Buffer:
        """Bytes [start, end); blocks on the disk when the pages are not cached."""
        data = self._read(start, end, nowait=False)
        assert data is not None
        return data

    def read_nowait(self, start: int, end: int) -> Buffer | None:
        """Bytes [start, end) if the page cache has them all, else None (nothing waited for)."""
        try:
            return self._read(start, end, nowait=True)
        except OSError as exc:
            if exc.errno == errno.EOPNOTSUPP:  # a cache dir on a file system without RWF_NOWAIT
                return None
            raise

    def _read(self, start: int, end: int, nowait: bool) -> Buffer | None:
        chunk = self.chunk
        first, last = start // chunk, (end - 1) // chunk
        unverified = [n for n in range(first, last + 1) if not self._verified >> n & 1]
        # Checking a chunk needs all of it; a read of verified chunks reads only its own bytes.
        span_start = first * chunk if unverified else start
        span_end = min(self.length, (last + 1) * chunk) if unverified else end
        data: bytes | bytearray
        size = span_end - span_start
        if nowait:
            data = bytearray(size)
            try:
                got = os.preadv(self.fd, [data], span_start, os.RWF_NOWAIT)
            except BlockingIOError:
                got = -1
            if got != size:  # not (all) cached: the blocking path reads it
                self._spare = data if size >= SPARE_BYTES else None
                return None
        else:
            data, self._spare = self._spare or b"", None
            if len(data) == size:
                got = os.preadv(self.fd, [data], span_start)
            else:
                data = os.pread(self.fd, size, span_start)
                got = len(data)
            if got != size:
                raise CorruptBlock(f"block file {self.key.hex()} is shorter than {self.length}")
        single = first == last  # the usual small read: check the bytes read, no view to copy
        view = memoryview(data)
        for number in unverified:
            offset = number * chunk - span_start
            piece = data if single else view[offset:offset + chunk]
            if number >= len(self.crcs) or self.checksum(piece) != self.crcs[number]:
                raise CorruptBlock(f"block file {self.key.hex()} fails its checksum (chunk {number})")
            self._verified |= 1 << number
        if span_start == start and span_end == end:
            return data
        return view[start - span_start:end - span_start]
