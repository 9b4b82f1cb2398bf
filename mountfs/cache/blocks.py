"""Block bytes on disk: one file per block, written temp-then-rename, verified on read."""

from __future__ import annotations

import contextlib
import errno
import os
import zlib

from mountfs.errors import NoSpace
from mountfs.processes import process_alive

TEMP_SUFFIX = ".tmp"
CHUNK = 64 * 1024  # checksum granularity: a 4 KiB random read verifies 64 KiB, not a whole block


def chunk_crcs(data: bytes | memoryview) -> tuple[int, ...]:
    view = memoryview(data)
    return tuple(zlib.crc32(view[i:i + CHUNK]) for i in range(0, len(view), CHUNK))


class CorruptBlock(Exception):
    """A block file that is missing, short, or fails its checksum: drop it and fetch again."""


class BlockFiles:
    def __init__(self, cache_dir: str) -> None:
        self.root = os.path.join(cache_dir, "blocks")
        os.makedirs(self.root, exist_ok=True)

    def path(self, key: bytes) -> str:
        name = key.hex()
        return os.path.join(self.root, name[:2], name)

    def write(self, key: bytes, data: bytes | memoryview) -> tuple[int, ...]:
        """Write the block and return its chunk checksums. The final name appears only once whole."""
        final = self.path(key)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        temp = f"{final}.{os.getpid()}.{id(data):x}{TEMP_SUFFIX}"
        try:
            with open(temp, "wb") as f:
                f.write(data)
            os.rename(temp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"cache disk full writing {final}") from exc
            raise
        return chunk_crcs(data)

    def read(self, key: bytes, length: int, crcs: tuple[int, ...], start: int = 0,
             end: int | None = None) -> bytes:
        """Bytes [start, end) of the block, after checking the checksum of every chunk they touch."""
        end = length if end is None else end
        first, last = start // CHUNK, (end - 1) // CHUNK
        span_start = first * CHUNK
        span_length = min(length, (last + 1) * CHUNK) - span_start
        try:
            with open(self.path(key), "rb") as f:
                if os.fstat(f.fileno()).st_size != length:
                    raise CorruptBlock(f"block file {key.hex()} has the wrong length (expected {length})")
                data = os.pread(f.fileno(), span_length, span_start)
        except FileNotFoundError as exc:
            raise CorruptBlock(f"block file {key.hex()} is missing") from exc
        view = memoryview(data)
        for number in range(first, last + 1):
            offset = (number - first) * CHUNK
            if number >= len(crcs) or zlib.crc32(view[offset:offset + CHUNK]) != crcs[number]:
                raise CorruptBlock(f"block file {key.hex()} fails its checksum (chunk {number})")
        if start == span_start and end == span_start + span_length:
            return data
        return data[start - span_start:end - span_start]

    def remove(self, key: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(key))

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
