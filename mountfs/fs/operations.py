"""The FUSE handlers: thin translations between pyfuse3 calls and the layers below.

Every handler goes through `_fuse_errors`, which turns mountfs errors into their errno and
anything unexpected into a logged traceback plus EIO, so one bad request never kills the mount.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

import pyfuse3

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.base import ObjectId
from mountfs.cache.block_cache import BlockCache, Fetch
from mountfs.cache.prefetch import DirectoryPattern, PrefetchGroup, PrefetchScheduler, ReadPattern
from mountfs.errors import IsADirectory, MountfsError, ReadOnly, errno_for
from mountfs.namespace.inodes import Node
from mountfs.namespace.listing import DirSnapshot
from mountfs.namespace.tree import Namespace

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Until the write path exists every mount is read-only, and its modes say so.
WRITES_SUPPORTED = False
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC | os.O_CREAT


def _fuse_errors(handler: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except MountfsError as exc:
            code = errno_for(exc)
            if code == errno.EIO:
                log.error("%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(code) from exc
        except Exception as exc:
            log.exception("%s failed unexpectedly", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from exc

    return wrapper


@dataclass(frozen=True)
class Ownership:
    """Who owns every entry, and its permission bits: `-o uid=,gid=,umask=`."""

    uid: int
    gid: int
    umask: int = 0o022


@dataclass
class ReadStats:
    reads: int = 0
    bytes_served: int = 0
    opens: int = 0


@dataclass
class _OpenFile:
    obj: ObjectId  # the version pinned at open: every read asks for this ETag
    size: int
    fetch: Fetch
    pattern: ReadPattern
    prefetches: PrefetchGroup


def _fetcher(store: AsyncStore, obj: ObjectId, block_size: int) -> Fetch:
    async def fetch(start: int, length: int) -> list[bytes]:
        return await store.get_pieces(obj.key, start, length, block_size, obj.etag)

    return fetch


# Kernel readahead sends reads a little out of order; within this distance they still count as
# sequential.
SEQUENTIAL_TOLERANCE = 1 << 20
# When files of a directory are opened in listing order, the first block of this many next files
# is fetched ahead (within the prefetch budgets); patterns are kept for this many directories.
SIBLINGS_AHEAD = 32
DIRECTORY_PATTERNS = 1024


class Operations(pyfuse3.Operations):
    def __init__(self, namespace: Namespace, cache: BlockCache, ownership: Ownership,
                 prefetch: PrefetchScheduler | None = None, readahead_max: int = 0) -> None:
        super().__init__()
        self.namespace = namespace
        self.cache = cache
        self.ownership = ownership
        self.prefetch = prefetch
        self.readahead_max = readahead_max
        self.stats = ReadStats()
        self._files: dict[int, _OpenFile] = {}
        self._directories: OrderedDict[int, DirectoryPattern] = OrderedDict()
        self._sibling_prefetches = PrefetchGroup()
        self._dirs: dict[int, tuple[int, DirSnapshot]] = {}
        self._next_handle = 1
        self.started = time.time()

    def _handle(self) -> int:
        fh = self._next_handle
        self._next_handle += 1
        return fh

    def attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        read_only = not WRITES_SUPPORTED or node.mount is None or node.mount.read_only
        if node.is_dir:
            mode = stat.S_IFDIR | (0o777 & ~self.ownership.umask)
            attr.st_nlink = 2
        else:
            mode = stat.S_IFREG | (0o666 & ~self.ownership.umask)
            attr.st_nlink = 1
        if read_only:
            mode &= ~0o222
        attr.st_mode = pyfuse3.ModeT(mode)
        attr.st_ino = pyfuse3.InodeT(node.inode)
        attr.st_uid = self.ownership.uid
        attr.st_gid = self.ownership.gid
        attr.st_size = node.size
        attr.st_blksize = min(self.cache.block_size, 1 << 20)
        attr.st_blocks = (node.size + 511) // 512
        attr.st_mtime_ns = attr.st_ctime_ns = attr.st_atime_ns = node.mtime_ns
        attr.entry_timeout = attr.attr_timeout = self.namespace.metadata_ttl
        return attr

    # --- metadata ------------------------------------------------------------------------

    @_fuse_errors
    async def lookup(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attributes(await self.namespace.lookup(parent_inode, name))

    @_fuse_errors
    async def getattr(self, inode: pyfuse3.InodeT,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attributes(await self.namespace.attributes(inode))

    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        for inode, count in inode_list:
            self.namespace.forget(inode, count)

    @_fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        # Object stores have no capacity: report a large, empty file system, as gcsfuse does.
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_blocks = data.f_bfree = data.f_bavail = (1 << 50) // 4096
        data.f_files = data.f_ffree = data.f_favail = 1 << 32
        data.f_namemax = 255
        return data

    # --- directories ---------------------------------------------------------------------

    @_fuse_errors
    async def opendir(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        fh = self._handle()
        self._dirs[fh] = (inode, self.namespace.open_dir(inode))
        return pyfuse3.FileHandleT(fh)

    @_fuse_errors
    async def readdir(self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        inode, snapshot = self._dirs[fh]
        position = start_id
        while (entry := await snapshot.entry(position)) is not None:
            node = self.namespace.entry_node(inode, entry)
            if not pyfuse3.readdir_reply(token, pyfuse3.FileNameT(entry.name), self.attributes(node),
                                         position + 1):
                self.namespace.inodes.discard_if_unused(node)
                return
            self.namespace.inodes.remember(node)
            position += 1

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self._dirs.pop(fh, None)

    # --- files ---------------------------------------------------------------------------

    @_fuse_errors
    async def open(self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & WRITE_FLAGS:
            raise ReadOnly("writes are not supported yet")
        node = await self.namespace.attributes(inode)
        if node.is_dir:
            raise IsADirectory(node.key)
        assert node.mount is not None and node.meta is not None
        fh = self._handle()
        store = node.mount.store
        obj = store.store.object_id(node.meta)
        pattern = ReadPattern(self.cache.block_size, self.readahead_max, SEQUENTIAL_TOLERANCE)
        fetch = _fetcher(store, obj, self.cache.block_size)
        self._files[fh] = _OpenFile(obj, node.meta.size, fetch, pattern, PrefetchGroup())
        self.stats.opens += 1
        self._prefetch_siblings(node)
        # The kernel's cached pages are still right when the object has not changed since the
        # last open: keep them, so re-reads never leave the page cache.
        unchanged = node.opened_etag == node.meta.etag
        node.opened_etag = node.meta.etag
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=unchanged)

    @_fuse_errors
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        handle = self._files[fh]
        window = handle.pattern.observe(off, size)
        if window and self.prefetch is not None:
            ahead = off + size
            self.prefetch.schedule(handle.prefetches, handle.obj, handle.size, ahead, ahead + window,
                                   handle.fetch)
        data = await self.cache.read(handle.obj, handle.size, off, size, handle.fetch)
        self.stats.reads += 1
        self.stats.bytes_served += len(data)
        return cast(bytes, data)  # pyfuse3 replies with any buffer: a view saves a copy

    def _prefetch_siblings(self, node: Node) -> None:
        """Files opened in their directory's listing order: fetch the first blocks of the next ones."""
        if self.prefetch is None or node.mount is None:
            return
        position = self.namespace.position_in_parent(node)
        if position is None:
            return
        pattern = self._directories.pop(node.parent, None) or DirectoryPattern()
        self._directories[node.parent] = pattern
        if len(self._directories) > DIRECTORY_PATTERNS:
            self._directories.popitem(last=False)
        if not pattern.observe(position):
            return
        store, block_size = node.mount.store, self.cache.block_size
        for meta in self.namespace.files_after(node, SIBLINGS_AHEAD):
            obj = store.store.object_id(meta)
            self.prefetch.schedule(self._sibling_prefetches, obj, meta.size, 0, min(meta.size, block_size),
                                   _fetcher(store, obj, block_size))

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        handle = self._files.pop(fh, None)
        if handle is not None:
            handle.prefetches.cancel()

    # --- everything that would change the tree: read-only for now ------------------------

    async def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _read_only
    create = write = setxattr = removexattr = _read_only
