"""Open files, by kind. An open file is one of three handles, each with its own read, write,
flush, fsync, truncate and release; the FUSE handlers look the handle up by its number and call
one method, so every per-kind decision is made here, once per open, not on every request.

- `CachedHandle`: a file of the store, read through the block cache at the version pinned at
  open (or from the staged file while another handle of this mount writes it). Not writable.
- `StagedHandle`: a file open for writing: writes go to its staged upload, flush uploads it,
  reads see the staged bytes.
- `DirectHandle` (in `mountfs.fs.direct`): a direct-access file, served from its own descriptor.

`backing_fd` is the descriptor the kernel could read by itself (FUSE passthrough) with no daemon
work per read; only a direct file has one today.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

import pyfuse3

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.base import ObjectId
from mountfs.buffers import Buffer, Piece
from mountfs.cache.block_cache import BlockCache, Fetch
from mountfs.cache.prefetch import PrefetchGroup, PrefetchScheduler, ReadPattern
from mountfs.namespace.inodes import Node
from mountfs.namespace.tree import Namespace
from mountfs.namespace.writes import Writes
from mountfs.upload.uploader import StagedUpload

log = logging.getLogger(__name__)

# Kernel readahead sends reads a little out of order; within this distance they still count as
# sequential.
SEQUENTIAL_TOLERANCE = 1 << 20


def fetcher(store: AsyncStore, obj: ObjectId, block_size: int) -> Fetch:
    """The ranged GET of one version of an object, as the block cache asks for it."""
    async def fetch(start: int, length: int) -> list[Piece]:
        return await store.get_pieces(obj.key, start, length, block_size, obj.etag)

    return fetch


@dataclass(eq=False)
class Services:
    """What the handles of cached and staged files read and write through (one per mount)."""

    namespace: Namespace
    cache: BlockCache
    writes: Writes
    prefetch: PrefetchScheduler | None = None
    readahead_max: int = 0


class FileHandle:
    """One open file. The defaults are those of a file open for reading only."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    async def read(self, offset: int, size: int) -> Buffer:
        raise NotImplementedError

    async def write(self, offset: int, data: bytes) -> int:
        raise pyfuse3.FUSEError(errno.EBADF)  # not open for writing

    async def flush(self) -> None:
        """Nothing to upload (every close sends one)."""

    async def fsync(self, datasync: bool) -> None:
        await self.flush()

    async def truncate(self, size: int) -> None:
        """setattr(size) given this handle."""
        raise NotImplementedError

    async def release(self) -> None:
        """The last close. FUSE discards its errors: a handle that can fail logs why."""

    @property
    def backing_fd(self) -> int | None:
        return None


class CachedHandle(FileHandle):
    __slots__ = ("fetch", "obj", "paged", "pattern", "prefetches", "services", "size", "staged")

    def __init__(self, node: Node, services: Services) -> None:
        super().__init__(node)
        self.services = services
        # the version pinned at open: every read asks for this ETag (None: not stored yet)
        self.obj: ObjectId | None = None
        self.size = 0
        self.fetch: Fetch | None = None
        self.pattern = ReadPattern(services.cache.block_size, services.readahead_max, SEQUENTIAL_TOLERANCE,
                                   services.cache.access)
        self.prefetches = PrefetchGroup()
        self.staged: StagedUpload | None = None  # a write handle's staged upload (one per file)
        self.paged = False  # reads through the kernel's page cache (counted on the node), else direct I/O
        self.pin()

    def pin(self) -> None:
        """Reads of the stored object ask for the version seen at open (ESTALE once it changes), or
        the version this mount uploaded since, or the new ETag this mount gave the same bytes (a
        copy in place, or a rename: then under the new key)."""
        node = self.node
        meta, obj = node.meta, self.obj
        if meta is None or not meta.etag or node.mount is None:
            return
        if obj is None or (meta.etag != obj.etag and meta.etag in (
                node.written_etag, node.same_bytes(obj.etag))) or (
                meta.key != obj.key and meta.etag == obj.etag):  # renamed here, same ETag
            store = node.mount.store
            self.obj = obj = store.store.object_id(meta)
            self.size = meta.size
            self.fetch = fetcher(store, obj, self.services.cache.block_size)

    async def read(self, offset: int, size: int) -> Buffer:
        staged = self.staged
        if staged is None:
            staged = self.services.namespace.staged_of(self.node)
        if staged is not None and not staged.dropped:  # being written: the staged bytes are the newest
            mount = self.node.mount
            assert mount is not None and mount.uploader is not None
            return await mount.uploader.read(staged, offset, size)
        self.pin()
        obj, fetch = self.obj, self.fetch
        if obj is None or fetch is None:
            return b""  # a file that never reached the store and has no staged data any more
        services = self.services
        pattern = self.pattern
        window = pattern.observe(offset, size, obj, self.size)
        if window and services.prefetch is not None:
            ahead = offset + size
            services.prefetch.schedule(self.prefetches, obj, self.size, ahead, ahead + window, fetch)
        return await services.cache.read(obj, self.size, offset, size, fetch, random=pattern.random)

    async def truncate(self, size: int) -> None:
        await self.services.writes.truncate(self.node, size, None)

    async def release(self) -> None:
        self.prefetches.cancel()
        if self.paged:
            self.node.close_pages()


class StagedHandle(CachedHandle):
    __slots__ = ()

    def __init__(self, node: Node, staged: StagedUpload, services: Services) -> None:
        super().__init__(node, services)
        self.staged = staged

    async def write(self, offset: int, data: bytes) -> int:
        assert self.staged is not None
        return await self.services.writes.write(self.node, self.staged, offset, data)

    async def flush(self) -> None:
        assert self.staged is not None
        await self.services.writes.flush(self.node, self.staged)

    async def truncate(self, size: int) -> None:
        await self.services.writes.truncate(self.node, size, self.staged)

    async def release(self) -> None:
        await super().release()
        assert self.staged is not None
        try:  # FUSE discards errors of release: what failed is logged, the data stays staged
            await self.services.writes.release(self.node, self.staged)
        except Exception:
            log.exception("release of %s failed", self.node.key)
