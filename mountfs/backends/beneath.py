"""Opening a path inside a folder so that it can never lead outside it.

A `file://` folder is a boundary: a symlink in it, a `..`, or a component swapped for a symlink
between a check and an open must not make the daemon read or write a file elsewhere. So paths are
never resolved by the kernel's ordinary lookup from the folder's path: every open starts from a
descriptor of the folder and follows no symlink at all. Linux 5.6+ does that in one call,
`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` (Python has no wrapper
for it, so it is called through ctypes); elsewhere, or where a seccomp filter refuses it, each
component is opened in turn from the descriptor of the one before with `O_NOFOLLOW`, which is as
safe, one system call per component.

A symlink anywhere on the way is ELOOP (the caller says what it means); the relative paths given
here are checked first to have no empty, `.` or `..` component.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import sys
from collections.abc import Callable
from typing import Any

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_SYS_OPENAT2 = 437  # the same on every Linux architecture (numbers are shared since 5.1)
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RETRIES = 8  # EAGAIN: a rename raced the lookup


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_syscall() -> Callable[..., Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syscall
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_long
    return function


_syscall = _load_syscall()
_openat2_usable: bool | None = None  # None: not tried yet


def _openat2(dir_fd: int, rel: bytes, flags: int, mode: int) -> int:
    assert _syscall is not None
    creates = flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE
    how = _OpenHow(flags, mode if creates else 0, _RESOLVE)  # a mode without O_CREAT is EINVAL
    for _ in range(_RETRIES):
        fd = _syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), ctypes.c_char_p(rel),
                      ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        code = ctypes.get_errno()
        if code not in (errno.EAGAIN, errno.EINTR):
            raise OSError(code, os.strerror(code), os.fsdecode(rel))
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), os.fsdecode(rel))


def openat2_available() -> bool:
    """Can openat2 be used here? Tried once: old kernels say ENOSYS, some seccomp filters EPERM."""
    global _openat2_usable
    if _openat2_usable is None:
        _openat2_usable = False
        if _syscall is not None:
            root = os.open("/", _DIR_FLAGS)
            try:
                os.close(_openat2(root, b".", _DIR_FLAGS, 0))
                _openat2_usable = True
            except OSError:
                pass
            finally:
                os.close(root)
    return _openat2_usable


def use_openat2(enabled: bool | None) -> None:
    """Force the fallback (False) or a fresh probe (None); for tests."""
    global _openat2_usable
    _openat2_usable = None if enabled is None else (enabled and openat2_available())


def _not_a_folder(dir_fd: int, name: bytes, exc: OSError) -> OSError:
    """O_DIRECTORY | O_NOFOLLOW on a symlink says ENOTDIR: tell a symlink (ELOOP) from a file."""
    try:
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fsdecode(name))
    except OSError:
        pass
    return exc


def _walk(dir_fd: int, parts: list[bytes], flags: int, mode: int) -> int:
    """The fallback: one component at a time, each from the descriptor of its folder."""
    current = dir_fd
    try:
        for name in parts[:-1]:
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=current)
            except NotADirectoryError as exc:
                raise _not_a_folder(current, name, exc) from None
            if current != dir_fd:
                os.close(current)
            current = fd
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=current)
        except NotADirectoryError as exc:
            if flags & os.O_DIRECTORY:
                raise _not_a_folder(current, parts[-1], exc) from None
            raise
    finally:
        if current != dir_fd:
            os.close(current)


def open_beneath(dir_fd: int, rel: bytes, flags: int, mode: int = 0o666) -> int:
    """os.open of `rel` (a relative path with no empty, "." or ".." part) from the folder `dir_fd`,
    following no symlink on the way or at the end (ELOOP), and never leaving that folder."""
    parts = rel.split(b"/")
    if not rel or any(p in (b"", b".", b"..") for p in parts) or b"\0" in rel:
        raise OSError(errno.EINVAL, "not a plain relative path", os.fsdecode(rel))
    flags |= os.O_CLOEXEC
    if openat2_available():
        try:
            return _openat2(dir_fd, rel, flags | os.O_NOFOLLOW, mode)
        except NotADirectoryError:
            if not flags & os.O_DIRECTORY:
                raise
            # A symlink or a file in the way: the walk tells them apart (ELOOP or ENOTDIR).
    return _walk(dir_fd, parts, flags, mode)


def open_folder(dir_fd: int, rel: bytes) -> int:
    """An O_PATH descriptor of the folder `rel` beneath `dir_fd` (`rel` b"": a copy of `dir_fd`)."""
    if not rel:
        return os.dup(dir_fd)
    return open_beneath(dir_fd, rel, _DIR_FLAGS)


def make_folders(dir_fd: int, rel: bytes) -> int:
    """`os.makedirs(rel, exist_ok=True)` beneath `dir_fd`, following no symlink; a descriptor of the
    last folder. A file in the way is ENOTDIR, a symlink ELOOP."""
    if not rel:
        return os.dup(dir_fd)
    try:
        return open_folder(dir_fd, rel)
    except FileNotFoundError:
        pass
    current = os.dup(dir_fd)
    try:
        for name in rel.split(b"/"):
            try:
                fd = open_beneath(current, name, _DIR_FLAGS)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):  # made meanwhile (a dangling symlink:
                    os.mkdir(name, 0o777, dir_fd=current)  # the open below says ELOOP)
                fd = open_beneath(current, name, _DIR_FLAGS)
            except NotADirectoryError as exc:
                raise _not_a_folder(current, name, exc) from None
            os.close(current)
            current = fd
        result, current = current, -1
        return result
    finally:
        if current >= 0:
            os.close(current)
