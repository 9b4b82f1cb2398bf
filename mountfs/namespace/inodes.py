"""Inode numbers and the kernel's lookup counts.

An inode lives while the kernel holds a reference to it (its lookup count) or while it is a
fixed part of the tree (the root, the directories of each mount). Inode numbers are never
reused within one mount, so generation numbers are not needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyfuse3

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.base import ObjectMeta

log = logging.getLogger(__name__)

ROOT_INODE = int(pyfuse3.ROOT_INODE)


@dataclass
class MountRoot:
    """One `[[mount]]` entry as the namespace sees it."""

    path: str
    store: AsyncStore
    prefix: str  # "" or ending in "/"
    read_only: bool


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
    opened_etag: str | None = None  # the ETag at the last open, to keep the kernel's pages
    pinned: bool = False  # part of the fixed tree: never forgotten
    children: dict[bytes, Node] = field(default_factory=dict)  # virtual directories only

    @property
    def size(self) -> int:
        return self.meta.size if self.meta else 0

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
            node.meta = meta
            node.mtime_ns = mtime_ns
        return node

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
