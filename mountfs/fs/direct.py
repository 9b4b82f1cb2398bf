"""Direct access: files served straight from their local (or NFS) path, with no block cache and no
staged upload (issue 7.5; which files is decided by `mountfs.passthrough` at mount time, see
`MountRoot.is_direct`).

Listings and lookups still come from the mount's LocalStore; only file data and file attributes
come from here: open is an open of the file, reads and writes are pread/pwrite, fsync is fsync,
truncate is ftruncate, and every write or getattr re-stats the file so the size and mtime shown are
the file's own. Files are opened, stated and truncated through the store (`LocalStore.open_file`),
which never follows a symlink nor leaves the folder. Every call runs in a worker thread (the trio
loop never blocks).
"""

from __future__ import annotations

import os

from mountfs.backends.base import ObjectMeta
from mountfs.backends.local import LocalStore, error_from_os, meta_from_stat
from mountfs.concurrency import BlockingRunner
from mountfs.errors import IsADirectory, ReadOnly
from mountfs.fs.handles import FileHandle
from mountfs.namespace.inodes import MountRoot, Node
from mountfs.namespace.tree import Namespace

ATTR_TIMEOUT = 1.0  # seconds the kernel keeps a direct file's attributes: another writer shows soon
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOCTTY
_KEPT_FLAGS = os.O_ACCMODE | os.O_TRUNC  # O_APPEND stays out: the kernel gives every write its offset


class DirectHandle(FileHandle):
    """An open direct-access file: its own descriptor, no cache, no staging. Flush (every close)
    is a no-op; fsync is the file's fsync."""

    __slots__ = ("fd", "files", "path", "writable")

    def __init__(self, node: Node, fd: int, path: str, writable: bool, files: DirectFiles) -> None:
        super().__init__(node)
        self.fd, self.path, self.writable, self.files = fd, path, writable, files

    async def read(self, offset: int, size: int) -> bytes:
        return await self.files.read(self, offset, size)

    async def write(self, offset: int, data: bytes) -> int:
        return await self.files.write(self, offset, data)

    async def fsync(self, datasync: bool) -> None:
        await self.files.fsync(self, datasync)

    async def truncate(self, size: int) -> None:
        await self.files.truncate(self.node, size, self)

    async def release(self) -> None:
        await self.files.release(self)

    @property
    def backing_fd(self) -> int:
        return self.fd


def _store_of(mount: MountRoot) -> LocalStore:
    store = mount.store.store
    assert isinstance(store, LocalStore), "direct access is only set up for file:// mounts"
    return store


def _check_writable(node: Node) -> MountRoot:
    mount = node.mount
    if mount is None or not mount.writable:
        raise ReadOnly(f"{mount.path if mount is not None and mount.path else 'the mount'} is read-only")
    return mount


def _stat(fd: int, key: str, path: str) -> ObjectMeta:
    try:
        return meta_from_stat(key, os.fstat(fd))
    except OSError as exc:
        raise error_from_os(exc, path) from exc


def _open(store: LocalStore, key: str, flags: int, create: bool = False) -> tuple[int, ObjectMeta]:
    write = create or (flags & os.O_ACCMODE) != os.O_RDONLY
    fd = store.open_file(key, flags | _OPEN_FLAGS | (os.O_CREAT if create else 0), write=write)
    try:
        return fd, _stat(fd, key, store.file_path(key))
    except BaseException:
        os.close(fd)
        raise


def _pread(fd: int, size: int, offset: int, path: str) -> bytes:
    try:
        data = os.pread(fd, size, offset)
        if 0 < len(data) < size:  # short reads only at EOF (NFS can return less): ask for the rest
            parts = [data]
            got = len(data)
            while got < size and (more := os.pread(fd, size - got, offset + got)):
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data
    except OSError as exc:
        raise error_from_os(exc, path) from exc


def _pwrite(fd: int, data: bytes, offset: int, key: str, path: str) -> tuple[int, ObjectMeta]:
    try:
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], offset + written)
        return written, meta_from_stat(key, os.fstat(fd))
    except OSError as exc:
        raise error_from_os(exc, path, write=True) from exc


def _fsync(fd: int, datasync: bool, path: str) -> None:
    try:
        (os.fdatasync if datasync else os.fsync)(fd)
    except OSError as exc:
        raise error_from_os(exc, path, write=True) from exc


def _ftruncate(fd: int, size: int, key: str, path: str) -> ObjectMeta:
    try:
        os.ftruncate(fd, size)
        return meta_from_stat(key, os.fstat(fd))
    except OSError as exc:
        raise error_from_os(exc, path, write=True) from exc


class DirectFiles:
    """The file operations of direct-access files (`node.mount.is_direct(node.key)`): their
    handles' methods and the handlers' path operations (truncate, utimens, getattr) call these."""

    def __init__(self, namespace: Namespace, threads: int = 16) -> None:
        self.namespace = namespace
        self._io = BlockingRunner(threads)

    @staticmethod
    def covers(node: Node) -> bool:
        return node.mount is not None and not node.is_dir and node.mount.is_direct(node.key)

    def _updated(self, node: Node, meta: ObjectMeta) -> None:
        assert node.mount is not None
        if not node.unlinked:
            self.namespace.set_file_meta(node.mount, node.key, meta)
        else:
            node.set_meta(meta)

    async def open(self, node: Node, flags: int) -> DirectHandle:
        if node.is_dir:
            raise IsADirectory(node.key)
        assert node.mount is not None
        flags &= _KEPT_FLAGS
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        if writable:
            _check_writable(node)
        store = _store_of(node.mount)
        fd, meta = await self._io(_open, store, node.key, flags)
        self._updated(node, meta)
        return DirectHandle(node, fd, store.file_path(node.key), writable, self)

    async def create(self, parent: Node, name: bytes, flags: int) -> tuple[Node, DirectHandle]:
        mount = _check_writable(parent)
        key = parent.key + os.fsdecode(name)
        store = _store_of(mount)
        path = store.file_path(key, write=True)
        fd, meta = await self._io(_open, store, key, (flags & os.O_TRUNC) | os.O_RDWR, True)
        node = self.namespace.add_entry(parent, name, False, meta)
        self._updated(node, meta)
        return node, DirectHandle(node, fd, path, True, self)

    async def read(self, handle: DirectHandle, offset: int, size: int) -> bytes:
        return await self._io(_pread, handle.fd, size, offset, handle.path)

    async def write(self, handle: DirectHandle, offset: int, data: bytes) -> int:
        if not handle.writable:
            raise ReadOnly(f"{handle.path} is not open for writing")
        written, meta = await self._io(_pwrite, handle.fd, data, offset, handle.node.key, handle.path)
        self._updated(handle.node, meta)
        return written

    async def fsync(self, handle: DirectHandle, datasync: bool = False) -> None:
        if handle.writable:
            await self._io(_fsync, handle.fd, datasync, handle.path)

    async def release(self, handle: DirectHandle) -> None:
        await self._io(os.close, handle.fd)

    async def truncate(self, node: Node, size: int, handle: DirectHandle | None) -> None:
        mount = _check_writable(node)
        if node.is_dir:
            raise IsADirectory(node.key)
        if handle is not None and handle.writable:
            meta = await self._io(_ftruncate, handle.fd, size, node.key, handle.path)
        else:
            meta = await self._io(_store_of(mount).truncate, node.key, size)
        self._updated(node, meta)

    async def set_mtime(self, node: Node, mtime_ns: int) -> None:
        mount = _check_writable(node)
        self._updated(node, await self._io(_store_of(mount).set_mtime, node.key, mtime_ns))

    async def refresh(self, node: Node) -> Node:
        """The file's own size and mtime (a symlink's own), now (getattr of a direct file)."""
        if node.unlinked or node.mount is None:
            return node
        self._updated(node, await self._io(_store_of(node.mount).head, node.key))
        return node
