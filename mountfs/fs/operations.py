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
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, ParamSpec, TypeVar, cast

import pyfuse3
import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.cache.prefetch import DirectoryPattern, PrefetchGroup, PrefetchScheduler
from mountfs.errors import InvalidArgument, IsADirectory, MountfsError, NotPermitted, errno_for
from mountfs.fs.direct import ATTR_TIMEOUT, DirectFiles
from mountfs.fs.handles import CachedHandle, FileHandle, Services, StagedHandle, fetcher
from mountfs.fs.xattrs import PREFIX, Xattrs
from mountfs.latency import Latencies
from mountfs.namespace.inodes import Node, PageUse
from mountfs.namespace.listing import DirSnapshot
from mountfs.namespace.tree import Namespace
from mountfs.namespace.writes import Writes

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


# Errors of the cache disk an application understands as they are; any other becomes EIO.
_PASSED_ON = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def _fuse_errors(handler: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    name = handler.__name__

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # One coroutine around the handler (not two): every request passes through here.
        requests: RequestStats = args[0].requests  # type: ignore[attr-defined]
        started = time.perf_counter()
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError as exc:
            requests.errors[(name, exc.errno)] += 1
            raise
        except Exception as exc:
            error = _fuse_error(name, exc)
            requests.errors[(name, error.errno)] += 1
            raise error from exc
        finally:
            requests.latency.observe(name, time.perf_counter() - started)

    return wrapper


def _fuse_error(name: str, exc: Exception) -> pyfuse3.FUSEError:
    """The FUSEError that answers a request whose handler `name` raised `exc`."""
    if isinstance(exc, MountfsError):
        code = errno_for(exc)
        if code == errno.EIO:
            log.error("%s: %s", name, exc)
    elif isinstance(exc, OSError):
        # the cache disk refused (read-only, full, gone): one line that says so, not a traceback
        code = exc.errno if exc.errno in _PASSED_ON else errno.EIO
        log.error("%s: %s", name, exc)
        log.debug("%s failed", name, exc_info=exc)
    else:
        log.error("%s failed unexpectedly", name, exc_info=exc)
        code = errno.EIO
    return pyfuse3.FUSEError(code)


@dataclass
class RequestStats:
    """FUSE requests by handler: latency (its count is the number of requests) and errors by errno."""

    latency: Latencies = field(default_factory=Latencies)
    errors: Counter[tuple[str, int]] = field(default_factory=Counter)


@dataclass(frozen=True)
class Ownership:
    """Who owns every entry, and its permission bits: `-o uid=,gid=,umask=,file_mode=,dir_mode=`
    (a mode, when given, is the bits of every file or directory, the umask left out)."""

    uid: int
    gid: int
    umask: int = 0o022
    file_mode: int | None = None
    dir_mode: int | None = None

    @property
    def file_bits(self) -> int:
        return self.file_mode if self.file_mode is not None else 0o666 & ~self.umask

    @property
    def dir_bits(self) -> int:
        return self.dir_mode if self.dir_mode is not None else 0o777 & ~self.umask


@dataclass
class ReadStats:
    reads: int = 0
    bytes_served: int = 0
    opens: int = 0
    writes: int = 0
    bytes_written: int = 0


def drop_kernel_pages(inode: int) -> None:
    """Make the kernel drop its cached pages (and attributes) of `inode`. Blocking: the kernel may
    wait for reads in flight, which the event loop must stay free to answer."""
    try:
        pyfuse3.invalidate_inode(pyfuse3.InodeT(inode))
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # ENOENT: the kernel does not hold the inode, so no pages
            raise


# When files of a directory are opened in listing order, the first block of this many next files
# is fetched ahead (within the prefetch budgets); patterns are kept for this many directories.
SIBLINGS_AHEAD = 32
DIRECTORY_PATTERNS = 1024


class Operations(pyfuse3.Operations):
    def __init__(self, namespace: Namespace, cache: BlockCache, ownership: Ownership,
                 prefetch: PrefetchScheduler | None = None, readahead_max: int = 0, *,
                 recovering: bool = False, drop_pages: Callable[[int], None] = drop_kernel_pages) -> None:
        super().__init__()
        self.namespace = namespace
        self.cache = cache
        self.writes = Writes(namespace, cache, recovering=recovering)
        self.ownership = ownership
        self.prefetch = prefetch
        self.readahead_max = readahead_max
        self.stats = ReadStats()
        self.requests = RequestStats()
        self.xattrs = Xattrs(cache)
        self.direct = DirectFiles(namespace)  # direct-access files: their own handles, no cache
        self.services = Services(namespace, cache, self.writes, prefetch, readahead_max)
        self._files: dict[int, FileHandle] = {}  # open files by handle number, of every kind
        self._directories: OrderedDict[int, DirectoryPattern] = OrderedDict()
        self._sibling_prefetches = PrefetchGroup()
        self._dirs: dict[int, tuple[int, DirSnapshot]] = {}
        self._next_handle = 1
        self.started = time.time()
        self._drop_pages = drop_pages
        self._clearing: dict[int, trio.Event] = {}  # inodes whose stale kernel pages are being dropped

    def _handle(self) -> int:
        fh = self._next_handle
        self._next_handle += 1
        return fh

    def attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        read_only = node.mount is None or not node.mount.writable
        if node.is_dir:
            mode = stat.S_IFDIR | self.ownership.dir_bits
            attr.st_nlink = 2
        elif node.link is not None:  # a symlink of a file:// folder: the kernel follows it, not us
            mode = stat.S_IFLNK | 0o777
            attr.st_nlink = 1
            read_only = False  # a symlink's own bits are always rwx
        else:
            mode = stat.S_IFREG | self.ownership.file_bits
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
        if DirectFiles.covers(node):  # the file's own attributes: another writer shows within a second
            attr.entry_timeout = attr.attr_timeout = min(self.namespace.metadata_ttl, ATTR_TIMEOUT)
        return attr

    # --- metadata ------------------------------------------------------------------------

    @_fuse_errors
    async def lookup(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attributes(await self.namespace.lookup(parent_inode, name))

    @_fuse_errors
    async def getattr(self, inode: pyfuse3.InodeT,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attributes(await self._current(inode))

    async def _current(self, inode: int) -> Node:
        """The node with its attributes as they are now (a direct file's re-read from the folder)."""
        node = self.namespace.node(inode)
        if DirectFiles.covers(node):
            return await self.direct.refresh(node)
        return await self.namespace.attributes(inode)

    @_fuse_errors
    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileNameT:
        node = await self._current(inode)
        if node.link is None:
            raise InvalidArgument(f"{node.key or 'the root'} is not a symlink")
        return pyfuse3.FileNameT(os.fsencode(node.link))

    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        for inode, count in inode_list:
            self.namespace.forget(inode, count)

    def readahead_windows(self) -> list[int]:
        """How far ahead each open file that reads as a stream is fetched right now (for metrics)."""
        return [h.pattern.window for h in self._files.values()
                if isinstance(h, CachedHandle) and h.pattern.window > 0]

    @_fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        # Object stores have no capacity, but what is written waits on the cache disk until it is
        # uploaded: its free space is what a writer can count on. Size and free space are the cache
        # disk's; inodes are unlimited.
        data = pyfuse3.StatvfsData()
        data.f_files = data.f_ffree = data.f_favail = 1 << 32
        data.f_namemax = 255
        try:
            disk = await trio.to_thread.run_sync(os.statvfs, self.cache.cache_dir)
        except OSError:
            data.f_bsize = data.f_frsize = 4096
            data.f_blocks = data.f_bfree = data.f_bavail = (1 << 50) // 4096
            return data
        data.f_bsize, data.f_frsize = disk.f_bsize, disk.f_frsize
        data.f_blocks, data.f_bfree, data.f_bavail = disk.f_blocks, disk.f_bfree, disk.f_bavail
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

    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        """Nothing to sync: every entry is in the store, or staged and journalled, once it is made.
        An answer, not ENOSYS, which the kernel would remember as "never ask again"."""

    # --- files ---------------------------------------------------------------------------

    @_fuse_errors
    async def open(self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = await self.namespace.attributes(inode)
        if node.is_dir:
            raise IsADirectory(node.key)
        if DirectFiles.covers(node):
            return self._opened_direct(await self.direct.open(node, flags))
        truncate = bool(flags & os.O_TRUNC)
        if (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR) or truncate:
            staged = await self.writes.open_for_write(node, truncate=truncate)
            return await self._opened(StagedHandle(node, staged, self.services))
        self._prefetch_siblings(node)
        return await self._opened(CachedHandle(node, self.services))

    def _opened_direct(self, handle: FileHandle) -> pyfuse3.FileInfo:
        """A direct file: never through the kernel's page cache of an earlier open."""
        fh = self._handle()
        self._files[fh] = handle
        self.stats.opens += 1
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=False)

    async def _opened(self, handle: CachedHandle) -> pyfuse3.FileInfo:
        """The kernel's page cache of a file is shared by all its handles and filled by whichever
        reads first, so a handle reads through it only while every handle that does reads the same
        version (the one pinned at open), and only once pages of any other version are gone; a
        handle of another version gets direct I/O. Pages of the version a handle reads are kept,
        so re-reads of an unchanged object never leave the page cache. A file being written: its
        staged bytes, which every handle reads."""
        fh = self._handle()
        self._files[fh] = handle
        self.stats.opens += 1
        node = handle.node
        staged = handle.staged is not None or self.namespace.staged_of(node) is not None
        version = None if staged or handle.obj is None else handle.obj.etag
        use = node.open_pages(version)
        handle.paged = use is not PageUse.AROUND
        keep = use is not PageUse.STAGED
        try:
            if use is PageUse.CLEAR:
                keep = await self._clear_pages(node)
            elif use is PageUse.KEEP and (clearing := self._clearing.get(node.inode)) is not None:
                await clearing.wait()  # pages of the old version are being dropped: not read yet
                keep = node.page_etag == version  # else the drop failed
        except BaseException:  # no reply: the kernel never releases this handle
            self._files.pop(fh, None)
            if handle.paged:
                node.close_pages()
            raise
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=keep,
                                direct_io=use is PageUse.AROUND)

    async def _clear_pages(self, node: Node) -> bool:
        """Drop the kernel's pages of another version before the reply to an open: the kernel's
        own drop at open (keep_cache off) comes after the reply, when another handle of the new
        version may already be reading them. False if they could not be dropped: the handles
        waiting for it leave the drop to the kernel (keep_cache off), and the version cached is
        unknown, so that later ones read around the page cache until it is dropped again."""
        done = self._clearing[node.inode] = trio.Event()
        try:
            await trio.to_thread.run_sync(self._drop_pages, node.inode)
        except BaseException as exc:
            node.page_etag = None
            if not isinstance(exc, OSError):
                raise
            log.warning("could not drop the kernel's cached pages of %s: %s", node.key, exc)
            return False
        finally:
            del self._clearing[node.inode]
            done.set()
        return True

    @_fuse_errors
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        data = await self._files[fh].read(off, size)
        stats = self.stats
        stats.reads += 1
        stats.bytes_served += len(data)
        return cast(bytes, data)  # pyfuse3 replies with any buffer: a view saves a copy

    def _prefetch_siblings(self, node: Node) -> None:
        """Files opened in their directory's listing order: fetch the first blocks of the next ones."""
        if self.prefetch is None or node.mount is None or node.mount.direct:
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
        # Only the files not handed over by an earlier open: a scan then costs one new sibling
        # per open, not a check of all SIBLINGS_AHEAD of them.
        store, block_size = node.mount.store, self.cache.block_size
        # No further ahead than the cache keeps a block until its reader gets there: the files read
        # in between (taken to be about this one's size) push it out of memory and off the disk.
        size = node.meta.size if node.meta is not None else 0
        ahead = max(1, min(SIBLINGS_AHEAD, self.prefetch.ahead_bytes // max(size, 1)))
        skip = pattern.fetched_through - position
        pattern.fetched_through = max(pattern.fetched_through, position + ahead)
        for at, meta in self.namespace.files_after(node, ahead, skip):
            if node.mount.is_direct(meta.key) or meta.link is not None:
                continue
            obj = store.store.object_id(meta)
            if not self.prefetch.schedule(self._sibling_prefetches, obj, meta.size, 0,
                                          min(meta.size, block_size), fetcher(store, obj, block_size)):
                pattern.fetched_through = at - 1  # at the limit: the next open goes on from here
                return

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        handle = self._files.pop(fh, None)
        if handle is not None:
            await handle.release()

    # --- writing -------------------------------------------------------------------------

    @_fuse_errors
    async def create(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        if not stat.S_ISREG(mode) and stat.S_IFMT(mode):
            raise NotPermitted("only regular files can be created")
        parent = self.namespace.node(parent_inode)
        mount = parent.mount
        if parent.is_dir and mount is not None and mount.is_direct(parent.key + os.fsdecode(name)):
            node, direct = await self.direct.create(parent, name, flags)
            self.namespace.inodes.remember(node)
            return self._opened_direct(direct), self.attributes(node)
        node, staged = await self.writes.create(parent, name)
        self.namespace.inodes.remember(node)
        return await self._opened(StagedHandle(node, staged, self.services)), self.attributes(node)

    @_fuse_errors
    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        handle = self._files.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        written = await handle.write(off, buf)
        self.stats.writes += 1
        self.stats.bytes_written += written
        return written

    @_fuse_errors
    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        handle = self._files.get(fh)
        if handle is not None:
            await handle.flush()

    @_fuse_errors
    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        handle = self._files.get(fh)
        if handle is not None:
            await handle.fsync(datasync)

    @_fuse_errors
    async def setattr(self, inode: pyfuse3.InodeT, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: pyfuse3.FileHandleT | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = await self.namespace.attributes(inode)
        direct = DirectFiles.covers(node)
        if fields.update_size:
            handle = self._files.get(fh) if fh is not None else None
            if handle is not None:
                await handle.truncate(attr.st_size)
            elif direct:
                await self.direct.truncate(node, attr.st_size, None)
            else:
                await self.writes.truncate(node, attr.st_size, None)
        if fields.update_mtime:
            await (self.direct if direct else self.writes).set_mtime(node, attr.st_mtime_ns)
        if fields.update_mode or fields.update_uid or fields.update_gid:
            self.writes.check_attributes(node)
        return self.attributes(node)

    # --- names ---------------------------------------------------------------------------

    @_fuse_errors
    async def mkdir(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = await self.writes.mkdir(self.namespace.node(parent_inode), name)
        self.namespace.inodes.remember(node)
        return self.attributes(node)

    @_fuse_errors
    async def unlink(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                     ctx: pyfuse3.RequestContext) -> None:
        await self.writes.unlink(self.namespace.node(parent_inode), name)

    @_fuse_errors
    async def rmdir(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                    ctx: pyfuse3.RequestContext) -> None:
        await self.writes.rmdir(self.namespace.node(parent_inode), name)

    @_fuse_errors
    async def rename(self, parent_inode_old: pyfuse3.InodeT, name_old: pyfuse3.FileNameT,
                     parent_inode_new: pyfuse3.InodeT, name_new: pyfuse3.FileNameT, flags: int,
                     ctx: pyfuse3.RequestContext) -> None:
        await self.writes.rename(self.namespace.node(parent_inode_old), name_old,
                                 self.namespace.node(parent_inode_new), name_new, flags)

    # --- what object stores cannot hold --------------------------------------------------

    def _refuse(self, inode: int, code: int) -> NoReturn:
        """EROFS where nothing may change; else `code`: what object stores cannot hold."""
        node = self.namespace.inodes.get(inode)
        if node is None or node.mount is None or not node.mount.writable:
            raise pyfuse3.FUSEError(errno.EROFS)
        raise pyfuse3.FUSEError(code)

    async def symlink(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, target: pyfuse3.FileNameT,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._refuse(parent_inode, errno.EPERM)  # regular files and directories only

    async def link(self, inode: pyfuse3.InodeT, new_parent_inode: pyfuse3.InodeT,
                   new_name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._refuse(new_parent_inode, errno.EPERM)

    async def mknod(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._refuse(parent_inode, errno.EPERM)

    @_fuse_errors
    async def getxattr(self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT,
                       ctx: pyfuse3.RequestContext) -> bytes:
        text = name.decode(errors="replace")
        if not text.startswith(PREFIX):  # security.capability, asked before every write: no work
            raise pyfuse3.FUSEError(errno.ENODATA)
        value = await self.xattrs.get(await self._current(inode), text)
        if value is None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return value.encode()

    @_fuse_errors
    async def listxattr(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> list[pyfuse3.XAttrNameT]:
        return [pyfuse3.XAttrNameT(name.encode()) for name in self.xattrs.names(await self._current(inode))]

    async def setxattr(self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        self._refuse(inode, errno.ENOTSUP)  # cp -a and rsync -X skip what is not supported

    async def removexattr(self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT,
                          ctx: pyfuse3.RequestContext) -> None:
        self._refuse(inode, errno.ENOTSUP)
