"""Inode numbers and the kernel's lookup counts.

An inode lives while the kernel holds a reference to it (its lookup count) or while it is a
fixed part of the tree (the root, the directories of each mount). Inode numbers are never
reused within one mount, so generation numbers are not needed.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pyfuse3

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.base import ObjectMeta
from mountfs.upload.uploader import StagedUpload, Uploader

log = logging.getLogger(__name__)

ROOT_INODE = int(pyfuse3.ROOT_INODE)
RETAGGED_MAX = 16  # per file: enough for the mtimes set while a handle stays open


class PageUse(enum.Enum):
    """How an open handle reads: through the kernel's page cache of its file, or around it."""

    KEEP = "keep"  # through it: its pages are of the handle's version (or it is empty)
    CLEAR = "clear"  # through it, once its pages of another version are dropped
    STAGED = "staged"  # through it, dropped by the kernel at open: this mount's staged bytes
    AROUND = "around"  # direct I/O: other open handles read another version through it


@dataclass
class MountRoot:
    """One `[[mount]]` entry as the namespace sees it."""

    path: str
    store: AsyncStore
    prefix: str  # "" or ending in "/"
    read_only: bool
    uploader: Uploader | None = None  # None: nothing is ever written to this store
    local_root: str | None = None  # the folder of a file:// mount: what direct access serves from
    direct: bool = False  # every file is served straight from local_root (its URL is direct access)
    direct_match: Callable[[str], bool] | None = None  # else: which keys are (by the globs), if any

    @property
    def writable(self) -> bool:
        return not self.read_only and self.uploader is not None

    def is_direct(self, key: str) -> bool:
        """Is the file `key` passed through to its local file (no block cache, no upload)?"""
        if self.local_root is None:
            return False
        return self.direct or (self.direct_match is not None and self.direct_match(key))


@dataclass(eq=False)
class Node:
    inode: int
    parent: int
    name: bytes
    is_dir: bool
    mount: MountRoot | None  # None for the virtual directories above the mounts
    key: str  # object key of a file; prefix ("" or ending in "/") of a directory
    meta: ObjectMeta | None = None
    meta_expires: float = 0.0
    mtime_ns: int = 0
    lookups: int = 0
    page_etag: str | None = None  # the version the kernel's page cache holds (None: unknown)
    page_handles: int = 0  # open handles that read through the kernel's page cache (of page_etag)
    pages_filled: bool = False  # a handle read through the page cache: it may hold pages
    pinned: bool = False  # part of the fixed tree: never forgotten
    children: dict[bytes, Node] = field(default_factory=dict)  # virtual directories only
    staged: StagedUpload | None = None  # written in this mount and not yet settled in the store
    mtime_pin: tuple[str, int] | None = None
    """The object's own mtime as last seen whole (a HEAD, an upload, utimens): (the ETag of that
    version, mtime_ns). A listing that shows only the store's time of
    last write (S3's: `ObjectMeta.last_modified_only`) does not override it while the ETag holds."""
    unlinked: bool = False  # removed from the tree; lives on while the kernel holds it
    written_etag: str | None = None  # the version this mount uploaded last: open handles follow it
    retagged: dict[str, str] = field(default_factory=dict)
    """New ETags this mount gave the same bytes (a copy in place to set the mtime), by the old one:
    the handles of the old version follow, and no other."""

    def live_staged(self) -> StagedUpload | None:
        """The staged upload whose bytes are this file's newest, if it still exists."""
        staged = self.staged
        if staged is not None and (staged.dropped or staged.discarded):
            self.staged = staged = None
        return staged

    @property
    def link(self) -> str | None:
        """The target of a symlink (of a file:// folder) as stored; None for files and directories."""
        return self.meta.link if self.meta is not None and not self.is_dir else None

    @property
    def size(self) -> int:
        staged = self.live_staged()
        if staged is not None:
            return staged.size
        return self.meta.size if self.meta else 0

    def set_meta(self, meta: ObjectMeta) -> None:
        """The store's metadata of this file; the mtime follows it (the object's own, kept in its
        metadata, when it has one), unless the file is being written (then the last write's or the
        user's time shows), or this is a listing that cannot show the metadata's mtime of a version
        whose mtime is known."""
        self.meta = meta
        pin = self.mtime_pin
        if meta.last_modified_only and pin is not None and pin[0] == meta.etag:
            mtime = pin[1]  # S3 listed the version a HEAD or an upload showed whole
        else:
            mtime = meta.mtime_ns
            self.mtime_pin = None if meta.last_modified_only or not meta.etag else (meta.etag, mtime)
        if self.live_staged() is None:
            self.mtime_ns = mtime

    def same_bytes(self, etag: str) -> str:
        """The newest ETag this mount gave the bytes of version `etag` (itself if none)."""
        for _ in range(len(self.retagged)):
            if (newer := self.retagged.get(etag)) is None:
                break
            etag = newer
        return etag

    def retag(self, old: str, new: str) -> None:
        """This mount gave the bytes of version `old` the ETag `new`."""
        if old != new:
            self.retagged[old] = new
            while len(self.retagged) > RETAGGED_MAX:
                del self.retagged[next(iter(self.retagged))]

    def open_pages(self, etag: str | None) -> PageUse:
        """How a handle of version `etag` uses the kernel's page cache of this file (counted in
        `page_handles` unless AROUND). That cache is one per inode, shared by all its handles and
        filled by whichever reads first: so only handles of one version read through it at a
        time, and its pages of another version are dropped before they do. `etag` None: this
        mount's staged bytes, which every handle reads; the version cached is unknown from then on."""
        if etag is None:
            self.page_handles += 1
            self.page_etag, self.pages_filled = None, True
            return PageUse.STAGED
        if self.page_handles > 0:
            if self.page_etag != etag:
                return PageUse.AROUND
            self.page_handles += 1
            return PageUse.KEEP
        self.page_handles = 1
        stale = self.pages_filled and self.page_etag != etag
        self.page_etag, self.pages_filled = etag, True
        return PageUse.CLEAR if stale else PageUse.KEEP

    def close_pages(self) -> None:
        """A handle that read through the page cache was released."""
        self.page_handles = max(0, self.page_handles - 1)

    @property
    def path_key(self) -> tuple[int, str, bool]:
        return (id(self.mount), self.key, self.is_dir)


class InodeTable:
    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {}
        self._by_path: dict[tuple[int, str, bool], Node] = {}
        self._next_inode = ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self._nodes)

    def get(self, inode: int) -> Node | None:
        return self._nodes.get(inode)

    def add_pinned(self, node: Node) -> Node:
        node.pinned = True
        self._nodes[node.inode] = node
        if node.mount is not None:
            self._by_path[node.path_key] = node
        return node

    def allocate(self) -> int:
        inode = self._next_inode
        self._next_inode += 1
        return inode

    def find_or_create(self, parent: Node, name: bytes, is_dir: bool, key: str,
                       meta: ObjectMeta | None, mtime_ns: int) -> Node:
        """The node for an entry of an object directory; reuses the inode the kernel knows."""
        assert parent.mount is not None
        path_key = (id(parent.mount), key, is_dir)
        node = self._by_path.get(path_key)
        if node is None:
            node = Node(self.allocate(), parent.inode, name, is_dir, parent.mount, key, meta,
                        mtime_ns=mtime_ns)
            self._nodes[node.inode] = node
            self._by_path[path_key] = node
        elif meta is not None:
            node.set_meta(meta)
        return node

    def by_path(self, mount: MountRoot, key: str, is_dir: bool) -> Node | None:
        return self._by_path.get((id(mount), key, is_dir))

    def unlink(self, node: Node) -> None:
        """`node` left the tree: a new entry of its name gets a new inode; it lives until forgotten."""
        if self._by_path.get(node.path_key) is node:
            del self._by_path[node.path_key]
        node.unlinked = True
        self.discard_if_unused(node)

    def move(self, node: Node, parent: Node, name: bytes, key: str) -> None:
        """`node` is now `name` in `parent` with object key (or prefix) `key`; what had that name
        before is unlinked. Descendants of a directory are moved by `move_prefix`."""
        if self._by_path.get(node.path_key) is node:
            del self._by_path[node.path_key]
        node.parent, node.name, node.key = parent.inode, name, key
        replaced = self._by_path.get(node.path_key)
        if replaced is not None and replaced is not node:
            self.unlink(replaced)
        self._by_path[node.path_key] = node

    def move_prefix(self, mount: MountRoot, old: str, new: str) -> None:
        """Every known node strictly below directory `old` (a prefix) gets its key under `new`."""
        moving = [n for (m, key, _), n in self._by_path.items()
                  if m == id(mount) and key.startswith(old) and key != old]
        for node in moving:
            del self._by_path[node.path_key]
        for node in moving:
            node.key = new + node.key[len(old):]
            replaced = self._by_path.get(node.path_key)
            if replaced is not None and replaced is not node:
                self.unlink(replaced)
            self._by_path[node.path_key] = node

    def below(self, mount: MountRoot, prefix: str) -> list[Node]:
        """Known nodes strictly below directory `prefix`."""
        return [n for (m, key, _), n in self._by_path.items()
                if m == id(mount) and key.startswith(prefix) and key != prefix]

    def remember(self, node: Node, count: int = 1) -> None:
        node.lookups += count

    def forget(self, inode: int, count: int) -> None:
        node = self._nodes.get(inode)
        if node is None:
            log.warning("forget of unknown inode %d", inode)
            return
        node.lookups -= count
        if node.lookups < 0:
            log.warning("lookup count of inode %d went below zero", inode)
            node.lookups = 0
        self.discard_if_unused(node)

    def discard_if_unused(self, node: Node) -> None:
        if node.lookups == 0 and not node.pinned:
            del self._nodes[node.inode]
            if self._by_path.get(node.path_key) is node:
                del self._by_path[node.path_key]
