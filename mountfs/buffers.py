"""Page-aligned buffers, so that block bytes received from a store can be written to the cache
disk with O_DIRECT as they are, without a copy into an aligned staging buffer first.

A bytes object's data sits 32 bytes into its allocation, never on a page boundary, and O_DIRECT
wants buffer addresses aligned to the device (512 bytes here, 4096 on some disks). The buffers
come from malloc on the ordinary heap, ALIGN bytes larger than asked and used from the first
page boundary: no mmap per buffer (no page faults for memory the heap already has) and no
zero-filling, which a bytearray of a 4 MiB block costs (about 145 us against 9 us here; 7% of
the daemon's CPU in a cold sequential read). Not posix_memalign: each of its allocations asks
the heap for more than the one freed before it, and a cold read's peak RSS went from 220 to 640
MiB. Where libc cannot be loaded, an aligned slice of a bytearray serves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import weakref

ALIGN = 4096  # a multiple of any device's O_DIRECT alignment
# Blocks smaller than this are received as plain bytes and written through the page cache: for
# 128 KiB files, an aligned buffer and a synchronous O_DIRECT write each cost about 7% of the
# files/s here (5,000 small files: 590 -> 530 files/s with both).
DIRECT_MIN = 1024 * 1024

Buffer = bytes | bytearray | memoryview
Piece = bytes | memoryview  # a block's bytes as a store returned them


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        libc.free.restype = None
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def aligned(size: int) -> memoryview:
    """A writable, page-aligned buffer of `size` bytes, contents undefined. It lives as long as
    any view of it (the memory is freed when the last one goes)."""
    if _LIBC is None or size <= 0:
        backing = bytearray(size + ALIGN)
        start = -_address(backing) % ALIGN if size > 0 else 0
        return memoryview(backing)[start:start + size]
    pointer = _LIBC.malloc(size + ALIGN)
    if not pointer:
        raise MemoryError(f"no memory for a {size}-byte buffer")
    array = (ctypes.c_char * size).from_address(pointer + -pointer % ALIGN)
    weakref.finalize(array, _LIBC.free, pointer)
    return memoryview(array).cast("B")


def is_aligned(data: Buffer) -> bool:
    """True if `data` starts on an ALIGN boundary (only writable buffers can tell: bytes cannot)."""
    if isinstance(data, bytes) or (isinstance(data, memoryview) and data.readonly) or not len(data):
        return False
    return _address(data) % ALIGN == 0


def _address(data: bytearray | memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(data))
