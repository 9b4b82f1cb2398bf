"""Block bytes on disk: one file per block, written temp-then-rename, verified on read."""

from __future__ import annotations

import contextlib
import errno
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import google_crc32c

from mountfs.errors import NoSpace
from mountfs.processes import process_alive

TEMP_SUFFIX = ".tmp"
# Checksum granularity of new cache dirs. A small read must read and check whole chunks: measured
# here with the page cache dropped, a 4 KiB pread took about 45 us, 16 KiB 70 us, 64 KiB 140 us.
# 4 KiB chunks cost a Python call each, about 0.3 ms more per 4 MiB verified, which made random
# 1 MiB reads slower than with 64 KiB; 16 KiB chunks cost next to nothing more than 64 KiB and made
# warm random 1 MiB reads about 450 -> 500 ops/s. Caches written before keep 64 KiB (LEGACY_CHUNK).
CHUNK = 16 * 1024
LEGACY_CHUNK = 64 * 1024
SPARE_BYTES = 256 * 1024  # a missed read_nowait this large hands its buffer to the blocking read

Buffer = bytes | bytearray | memoryview


Checksum = Callable[[Buffer], int]


def _crc32c(data: Buffer) -> int:
    """CRC-32C with the CPU's instruction: about 2.6 us per 64 KiB chunk here, zlib's crc32 8.8.
    (google_crc32c takes bytes only: a view is copied first, which still leaves it far ahead.)"""
    return int(google_crc32c.value(data if isinstance(data, bytes) else bytes(data)))


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
    """One checksum per chunk. Slices of bytes are bytes already: no view to copy again."""
    sliced: Buffer = data if isinstance(data, bytes) else memoryview(data)
    return tuple(checksum(sliced[i:i + chunk]) for i in range(0, len(sliced), chunk))


def checksum_of_dir(root: str) -> str:
    """The checksum a blocks dir uses: what its CHECKSUM file says; crc32c for a new dir; crc32
    for one written before the file existed (mountfs 0.1 caches keep working as they are)."""
    path = os.path.join(root, CHECKSUM_FILE)
    with contextlib.suppress(FileNotFoundError), open(path) as f:
        return f.read().strip()
    kind = "crc32" if any(len(name) == 2 for name in os.listdir(root)) else NEW_CACHE_CHECKSUM
    try:  # the first daemon to get here decides; a second one reads what it wrote
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        with open(path) as f:
            return f.read().strip()
    with os.fdopen(fd, "w") as f:
        f.write(kind + "\n")
    return kind


class CorruptBlock(Exception):
    """A block file that is missing, short, or fails its checksum: drop it and fetch again."""


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

    def path(self, key: bytes) -> str:
        name = key.hex()
        return os.path.join(self.root, name[:2], name)

    def write(self, key: bytes, data: bytes | memoryview) -> tuple[int, ...]:
        """Write the block and return its chunk checksums. The final name appears only once whole."""
        final = self.path(key)
        folder = os.path.dirname(final)
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        temp = f"{final}.{os.getpid()}.{id(data):x}{TEMP_SUFFIX}"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            try:
                fd = os.open(temp, flags, 0o644)
            except FileNotFoundError:  # the subdirectory was removed (`cache prune --all`): again
                os.makedirs(folder, exist_ok=True)
                fd = os.open(temp, flags, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.rename(temp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"cache disk full writing {final}") from exc
            raise
        return chunk_crcs(data, self.checksum, self.chunk)

    def open(self, key: bytes, length: int, crcs: tuple[int, ...]) -> OpenBlock:
        """The block file, open and checked for length, ready for many small reads."""
        try:
            fd = os.open(self.path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise CorruptBlock(f"block file {key.hex()} is missing") from exc
        block = OpenBlock(key, fd, length, crcs, self.checksum, self.chunk)
        if os.fstat(fd).st_size != length:
            block.close()
            raise CorruptBlock(f"block file {key.hex()} has the wrong length (expected {length})")
        return block

    def read(self, key: bytes, length: int, crcs: tuple[int, ...], start: int = 0,
             end: int | None = None) -> bytes:
        """Bytes [start, end) of the block, after checking the checksum of every chunk they touch."""
        block = self.open(key, length, crcs)
        try:
            return bytes(block.read(start, length if end is None else end))  # a whole block: no copy
        finally:
            block.close()

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
                 checksum: Checksum = _crc32c, chunk: int = CHUNK) -> None:
        self.key = key
        self.checksum = checksum
        self.chunk = chunk
        self.fd = fd
        self.length = length
        self.crcs = crcs
        self._verified = 0  # bit n set: chunk n checked
        # The buffer of a large read_nowait that missed, for the blocking read that follows: one
        # megabyte-sized allocation (a fresh mmap, page faults and all) per read instead of two.
        self._spare: bytearray | None = None

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        self._spare = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

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
