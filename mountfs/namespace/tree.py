"""The directory tree the kernel sees: virtual directories above the mounts, implicit
directories from key prefixes below them, with metadata cached for a TTL.

Listing a directory fills the cache of its entries, so the lookups and stats that follow
(`ls -l`, `find`) cost no request each; a miss is remembered for a shorter negative TTL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mountfs.backends.base import ListPage, ObjectMeta
from mountfs.concurrency import gather
from mountfs.errors import NotADirectory, NotFound
from mountfs.namespace.inodes import ROOT_INODE, InodeTable, MountRoot, Node
from mountfs.namespace.listing import PAGE_SIZE, DirEntry, DirSnapshot, entries_from_page


@dataclass
class _DirListing:
    """What listings have shown of one directory; `complete` once a listing reached the end."""

    entries: dict[bytes, DirEntry] = field(default_factory=dict)
    complete: bool = False
    expires: float = 0.0


class Namespace:
    def __init__(self, mounts: list[MountRoot], metadata_ttl: float, negative_ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metadata_ttl = metadata_ttl
        self.negative_ttl = negative_ttl
        self.clock = clock
        self.mounts = list(mounts)
        self.mount_time_ns = time.time_ns()
        self.inodes = InodeTable()
        self._listings: dict[tuple[int, str], _DirListing] = {}
        self._negative: dict[tuple[int, str], float] = {}
        self.root = self._build_fixed_tree(mounts)

    # --- the fixed part: root, virtual directories, mount roots ------------------------

    def _build_fixed_tree(self, mounts: list[MountRoot]) -> Node:
        if len(mounts) == 1 and mounts[0].path == "":
            only = mounts[0]
            return self.inodes.add_pinned(Node(ROOT_INODE, ROOT_INODE, b"", True, only, only.prefix,
                                               mtime_ns=self.mount_time_ns))
        root = self.inodes.add_pinned(Node(ROOT_INODE, ROOT_INODE, b"", True, None, "",
                                           mtime_ns=self.mount_time_ns))
        for mount in mounts:
            parent = root
            parts = [os.fsencode(p) for p in mount.path.split("/")]
            for depth, name in enumerate(parts):
                child = parent.children.get(name)
                if child is None:
                    is_mount_root = depth == len(parts) - 1
                    child = self.inodes.add_pinned(Node(
                        self.inodes.allocate(), parent.inode, name, True,
                        mount if is_mount_root else None, mount.prefix if is_mount_root else "",
                        mtime_ns=self.mount_time_ns))
                    parent.children[name] = child
                parent = child
        return root

    # --- kernel-facing lookups -----------------------------------------------------------

    def node(self, inode: int) -> Node:
        node = self.inodes.get(inode)
        if node is None:
            raise NotFound(f"inode {inode} is not known")
        return node

    async def lookup(self, parent_inode: int, name: bytes) -> Node:
        """The child `name` of a directory, counted as one kernel reference."""
        parent = self.node(parent_inode)
        if not parent.is_dir:
            raise NotADirectory(f"inode {parent_inode} is not a directory")
        if name == b".":
            node = parent
        elif name == b"..":
            node = self.node(parent.parent)
        elif parent.mount is None:
            child = parent.children.get(name)
            if child is None:
                raise NotFound(os.fsdecode(name))
            node = child
        else:
            node = self._node_for(parent, await self._find_entry(parent, name))
        self.inodes.remember(node)
        return node

    async def attributes(self, inode: int) -> Node:
        """The node with metadata no older than the TTL (a file is re-HEADed when expired)."""
        node = self.node(inode)
        if node.is_dir or node.mount is None or node.meta_expires > self.clock():
            return node
        meta = await node.mount.store.head(node.key)
        self._set_meta(node, meta)
        return node

    def forget(self, inode: int, count: int) -> None:
        self.inodes.forget(inode, count)

    # --- directories ---------------------------------------------------------------------

    def open_dir(self, inode: int) -> DirSnapshot:
        node = self.node(inode)
        if not node.is_dir:
            raise NotADirectory(f"inode {inode} is not a directory")
        if node.mount is None:
            return DirSnapshot(entries=[DirEntry(name, True, None) for name in node.children])
        mount, prefix = node.mount, node.key
        cached = self._listings.get((id(mount), prefix))
        if cached is not None and cached.complete and cached.expires > self.clock():
            # Listed in full within the metadata TTL: `ls -lR` after `find` costs nothing.
            return DirSnapshot(prefix, entries=list(cached.entries.values()))
        listing = self._listing(mount, prefix, reset=True)

        async def list_page(token: str | None) -> ListPage:
            page = await mount.store.list(prefix, "/", token, PAGE_SIZE)
            for entry in entries_from_page(prefix, page):
                known = listing.entries.get(entry.name)
                if known is None or entry.is_dir:  # a directory shadows an object of its name
                    listing.entries[entry.name] = entry
            if page.next_token is None:
                listing.complete = True
                listing.expires = self.clock() + self.metadata_ttl
            return page

        return DirSnapshot(prefix, list_page)

    def entry_node(self, parent_inode: int, entry: DirEntry) -> Node:
        """The node for a readdir entry; the caller counts a reference only if the kernel took it."""
        parent = self.node(parent_inode)
        if parent.mount is None:
            return parent.children[entry.name]
        return self._node_for(parent, entry)

    # --- internals -----------------------------------------------------------------------

    def _node_for(self, parent: Node, entry: DirEntry) -> Node:
        key = parent.key + os.fsdecode(entry.name) + ("/" if entry.is_dir else "")
        mtime = entry.meta.mtime_ns if entry.meta else self.mount_time_ns
        node = self.inodes.find_or_create(parent, entry.name, entry.is_dir, key, entry.meta, mtime)
        if entry.meta is not None:
            self._set_meta(node, entry.meta)
        return node

    def _set_meta(self, node: Node, meta: ObjectMeta) -> None:
        node.meta = meta
        node.mtime_ns = meta.mtime_ns
        node.meta_expires = self.clock() + self.metadata_ttl

    def _listing(self, mount: MountRoot, prefix: str, reset: bool = False) -> _DirListing:
        slot = (id(mount), prefix)
        listing = self._listings.get(slot)
        if listing is None or reset or listing.expires < self.clock():
            listing = self._listings[slot] = _DirListing(expires=self.clock() + self.metadata_ttl)
        return listing

    async def _find_entry(self, parent: Node, name: bytes) -> DirEntry:
        assert parent.mount is not None
        mount = parent.mount
        now = self.clock()
        listing = self._listings.get((id(mount), parent.key))
        if listing is not None and listing.expires > now:
            entry = listing.entries.get(name)
            if entry is not None:
                return entry
            if listing.complete:
                raise NotFound(os.fsdecode(name))
        key = parent.key + os.fsdecode(name)
        slot = (id(mount), key)
        if self._negative.get(slot, 0.0) > now:
            raise NotFound(key)
        entry = await self._probe(mount, key, name)
        if entry is None:
            self._negative[slot] = now + self.negative_ttl
            if len(self._negative) > 100_000:
                self._negative = {k: t for k, t in self._negative.items() if t > now}
            raise NotFound(key)
        self._negative.pop(slot, None)
        return entry

    async def _probe(self, mount: MountRoot, key: str, name: bytes) -> DirEntry | None:
        """HEAD the key and LIST it as a prefix at once; the directory wins if both exist."""

        async def head() -> ObjectMeta | None:
            try:
                return await mount.store.head(key)
            except NotFound:
                return None

        async def list_as_prefix() -> ListPage:
            return await mount.store.list(key + "/", "/", None, 1)

        meta, page = await gather(head, list_as_prefix)
        if isinstance(page, ListPage) and (page.objects or page.prefixes):
            return DirEntry(name, True, None)
        if isinstance(meta, ObjectMeta):
            return DirEntry(name, False, meta)
        return None
