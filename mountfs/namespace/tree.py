"""The directory tree the kernel sees: virtual directories above the mounts, implicit
directories from key prefixes below them, with metadata cached for a TTL.

Listing a directory fills the cache of its entries, so the lookups and stats that follow
(`ls -l`, `find`) cost no request each; a miss is remembered for a shorter negative TTL.

Offline: when the HEAD or LIST that would refresh an expired entry or listing finds the store
unavailable (its retries used up, or refused at once while it is offline), what is cached keeps
being served for up to `offline_grace` past its TTL; a name a complete stale listing lacks is
ENOENT. Past the grace, or with nothing cached, the error goes to the caller (EIO).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import trio

from mountfs.backends.base import ListPage, ObjectMeta
from mountfs.concurrency import gather
from mountfs.errors import NotADirectory, NotFound, StoreUnavailable
from mountfs.namespace.inodes import ROOT_INODE, InodeTable, MountRoot, Node
from mountfs.namespace.listing import PAGE_SIZE, DirEntry, DirSnapshot, entries_from_page
from mountfs.upload.uploader import StagedUpload

K = TypeVar("K")
V = TypeVar("V")

log = logging.getLogger(__name__)

PENDING_ETAG = ""
"""The ETag of a file written in this mount that the store does not have yet."""


def staged_meta(staged: StagedUpload) -> ObjectMeta:
    """What a listing shows of a staged file: its last uploaded version, else a pending one."""
    if staged.meta is not None and staged.meta.key == staged.key:
        return staged.meta
    return ObjectMeta(staged.key, staged.size, PENDING_ETAG, time.time_ns())


@dataclass
class _DirListing:
    """What listings have shown of one directory; `complete` once a listing reached the end."""

    entries: dict[bytes, DirEntry] = field(default_factory=dict)
    complete: bool = False
    expires: float = 0.0
    has_marker: bool = False  # a "dir/" object keeps the directory when it has no entries
    _order: dict[bytes, int] | None = None  # with _sequence, rebuilt on demand after a change
    _sequence: list[DirEntry] = field(default_factory=list)

    def put(self, entry: DirEntry) -> None:
        self.entries[entry.name] = entry
        self._order = None

    def remove(self, name: bytes) -> None:
        if self.entries.pop(name, None) is not None:
            self._order = None

    def position(self, name: bytes) -> int | None:
        """Where `name` stands in the listing (complete listings only)."""
        if self._order is None:
            self._order = {n: i for i, n in enumerate(self.entries)}
            self._sequence = list(self.entries.values())
        return self._order.get(name)

    def after(self, name: bytes, count: int, skip: int = 0) -> list[tuple[int, DirEntry]]:
        """The `count` entries that follow `name` in listing order, with their positions, leaving
        out the first `skip` (a slice: the open of every file of a 100,000-file directory must not
        walk the listing from its start)."""
        at = self.position(name)
        if at is None:
            return []
        first = at + 1 + max(0, skip)
        return list(enumerate(self._sequence[first:at + 1 + count], first))


# Listing a directory also lists up to this many of its subdirectories in the background, a few at
# a time, so that a walk (`find`, `du`, os.walk) finds each next directory already listed.
LOOKAHEAD_SUBDIRS = 64
MAX_LISTINGS = 20_000  # directories whose listing is remembered for the metadata TTL
MAX_PROBED = 50_000  # names found by a probe (HEAD + LIST) remembered for the metadata TTL
LOOKAHEAD_CONCURRENCY = 8


def _owner(mount: MountRoot, mounts: list[MountRoot]) -> MountRoot | None:
    """The mount whose directory holds `mount`'s path (the deepest one), if any."""
    owners = [m for m in mounts if m is not mount and m.path != mount.path
              and (m.path == "" or mount.path.startswith(m.path + "/"))]
    return max(owners, key=lambda m: len(m.path), default=None)


def _as_page(prefix: str, listing: _DirListing) -> ListPage:
    """A complete listing in the shape a store returns, for a snapshot to read."""
    objects = [entry.meta for entry in listing.entries.values() if entry.meta is not None]
    prefixes = [prefix + os.fsdecode(entry.name) + "/" for entry in listing.entries.values() if entry.is_dir]
    return ListPage(objects, prefixes, None)


def _bounded(entries: dict[K, V], limit: int, alive: Callable[[V], bool]) -> dict[K, V]:
    """`entries` (in insertion order) cut to `limit`: those not `alive` go first, then the oldest."""
    if len(entries) <= limit:
        return entries
    entries = {key: value for key, value in entries.items() if alive(value)}
    while len(entries) > limit:
        del entries[next(iter(entries))]
    return entries


class Namespace:
    def __init__(self, mounts: list[MountRoot], metadata_ttl: float, negative_ttl: float,
                 clock: Callable[[], float] = time.monotonic, *, offline_grace: float = 0.0) -> None:
        self.metadata_ttl = metadata_ttl
        self.negative_ttl = negative_ttl
        self.offline_grace = offline_grace  # how long past its TTL cached metadata serves an offline store
        self.stale_served = 0  # stats: expired entries and listings served because the store was down
        self.clock = clock
        self.mounts = list(mounts)
        self.mount_time_ns = time.time_ns()
        self.inodes = InodeTable()
        self._listings: dict[tuple[int, str], _DirListing] = {}
        self._negative: dict[tuple[int, str], float] = {}
        # What a probe found, kept for the metadata TTL apart from the node: the kernel forgets
        # inodes (memory pressure, drop_caches) and would otherwise cost a HEAD and a LIST per
        # name again, on every warm epoch over a folder that was never listed.
        self._probed: dict[tuple[int, str], tuple[float, DirEntry]] = {}
        self._grafts: dict[tuple[int, str], Node] = {}  # (id(owner mount), directory prefix) -> root
        self.root = self._build_fixed_tree(mounts)
        self.nursery: trio.Nursery | None = None  # set by the daemon; None turns look-ahead off
        self._lookahead = trio.CapacityLimiter(LOOKAHEAD_CONCURRENCY)
        self._lookahead_pending: dict[tuple[int, str], trio.Event] = {}

    # --- the fixed part: root, virtual directories, mount roots ------------------------

    def _build_fixed_tree(self, mounts: list[MountRoot]) -> Node:
        """The root, the virtual directories above the mounts and each mount's root. A mount whose
        path lies inside another mount (a [[path_substitution]] deeper than a mount's URL) is
        grafted onto that mount's directory of its name, which shadows whatever the store has there."""
        outer = [m for m in mounts if _owner(m, mounts) is None]
        if len(outer) == 1 and outer[0].path == "":
            only = outer[0]
            root = self.inodes.add_pinned(Node(ROOT_INODE, ROOT_INODE, b"", True, only, only.prefix,
                                               mtime_ns=self.mount_time_ns))
        else:
            root = self.inodes.add_pinned(Node(ROOT_INODE, ROOT_INODE, b"", True, None, "",
                                               mtime_ns=self.mount_time_ns))
        for mount in sorted(mounts, key=lambda m: len(m.path)):
            parent = root
            parts = [os.fsencode(p) for p in mount.path.split("/") if p]
            for depth, name in enumerate(parts):
                is_mount_root = depth == len(parts) - 1
                if parent.mount is not None:  # inside another mount: this is a graft
                    parent = self._graft_step(parent, name, mount if is_mount_root else None)
                    continue
                child = parent.children.get(name)
                if child is None:
                    child = self.inodes.add_pinned(Node(
                        self.inodes.allocate(), parent.inode, name, True,
                        mount if is_mount_root else None, mount.prefix if is_mount_root else "",
                        mtime_ns=self.mount_time_ns))
                    parent.children[name] = child
                parent = child
        return root

    def _graft_step(self, parent: Node, name: bytes, graft: MountRoot | None) -> Node:
        """One directory on the way to a graft, inside `parent`'s mount: the owner's own directory
        of that name (pinned, so it keeps its inode), or, at the end, the grafted mount's root."""
        owner = parent.mount
        assert owner is not None
        key = parent.key + os.fsdecode(name) + "/"
        known = self._grafts.get((id(owner), key))
        if known is not None:
            return known
        if graft is None:
            node = self.inodes.find_or_create(parent, name, True, key, None, self.mount_time_ns)
            node.pinned = True
            return node
        node = self.inodes.add_pinned(Node(self.inodes.allocate(), parent.inode, name, True, graft,
                                           graft.prefix, mtime_ns=self.mount_time_ns))
        self._grafts[(id(owner), key)] = node
        return node

    def _grafted_names(self, mount: MountRoot, prefix: str) -> list[str]:
        """The subdirectory prefixes of `prefix` that lead to a graft: shown even if the store
        has nothing there."""
        names = set()
        for m, key in self._grafts:
            if m == id(mount) and key.startswith(prefix) and key != prefix:
                names.add(prefix + key[len(prefix):].split("/", 1)[0] + "/")
        return sorted(names)

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

    async def child(self, parent: Node, name: bytes) -> Node:
        """The entry `name` of directory `parent`, not counted as a kernel reference."""
        if not parent.is_dir:
            raise NotADirectory(f"inode {parent.inode} is not a directory")
        if parent.mount is None:
            child = parent.children.get(name)
            if child is None:
                raise NotFound(os.fsdecode(name))
            return child
        return self._node_for(parent, await self._find_entry(parent, name))

    async def attributes(self, inode: int) -> Node:
        """The node with metadata no older than the TTL (a file is re-HEADed when expired). A file
        being written in this mount answers from its staged data; an unlinked one as it was."""
        node = self.node(inode)
        if (node.is_dir or node.mount is None or node.meta_expires > self.clock() or node.unlinked
                or self.staged_of(node) is not None):
            return node
        try:
            meta = await node.mount.store.head(node.key)
        except StoreUnavailable:
            if node.meta is not None and self._within_grace(node.meta_expires):
                self.stale_served += 1
                return node
            raise
        except NotFound:
            self._probed.pop((id(node.mount), node.key), None)
            raise
        self._set_meta(node, meta)
        self._probed.pop((id(node.mount), node.key), None)  # it found newer metadata than the probe
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
        slot = (id(mount), prefix)
        cached = self._fresh_listing(slot)
        if cached is not None:
            # Listed in full within the metadata TTL: `ls -lR` after `find` costs nothing.
            return DirSnapshot(prefix, entries=list(cached.entries.values()))
        stale = self._listings.get(slot)  # expired: served instead if the store is unavailable
        listing = _DirListing(expires=self.clock() + self.metadata_ttl)
        self._store_listing(slot, listing)
        lookahead = self._lookahead_pending.get(slot)

        async def list_page(token: str | None) -> ListPage:
            if token is None and lookahead is not None:
                # Being listed in the background right now: wait for that rather than list twice.
                await lookahead.wait()
                done = self._fresh_listing(slot)
                if done is not None:
                    return _as_page(prefix, done)
            try:
                page = await mount.store.list(prefix, "/", token, PAGE_SIZE)
            except StoreUnavailable:
                if (token is None and stale is not None and stale.complete
                        and self._within_grace(stale.expires)):
                    self.stale_served += 1
                    if self._listings.get(slot) is listing:  # lookups keep answering from it too
                        self._store_listing(slot, stale)
                    return _as_page(prefix, stale)
                raise
            self._record_page(listing, prefix, page, mount)
            self._look_ahead(mount, page.prefixes)
            if page.next_token is None:
                objects, prefixes = self._staged_overlay(mount, prefix)
                if objects or prefixes:
                    page = ListPage(page.objects + objects, page.prefixes + prefixes, None)
            return page

        return DirSnapshot(prefix, list_page)

    def _record_page(self, listing: _DirListing, prefix: str, page: ListPage, mount: MountRoot) -> None:
        for entry in entries_from_page(prefix, page):
            known = listing.entries.get(entry.name)
            if known is None or entry.is_dir:  # a directory shadows an object of its name
                listing.entries[entry.name] = entry
        if any(meta.key == prefix for meta in page.objects):
            listing.has_marker = True
        if page.next_token is None:
            objects, prefixes = self._staged_overlay(mount, prefix)
            for entry in entries_from_page(prefix, ListPage(objects, prefixes)):
                listing.entries.setdefault(entry.name, entry)
            listing.complete = True
            listing.expires = self.clock() + self.metadata_ttl
        listing._order = None

    def _look_ahead(self, mount: MountRoot, prefixes: list[str]) -> None:
        if self.nursery is None:
            return
        for prefix in prefixes[:LOOKAHEAD_SUBDIRS]:
            slot = (id(mount), prefix)
            if slot in self._lookahead_pending or self._fresh_listing(slot) is not None:
                continue
            self._lookahead_pending[slot] = trio.Event()
            self.nursery.start_soon(self._list_in_background, mount, prefix)

    async def _list_in_background(self, mount: MountRoot, prefix: str) -> None:
        slot = (id(mount), prefix)
        try:
            async with self._lookahead:
                listing = _DirListing()
                token: str | None = None
                while True:
                    page = await mount.store.list(prefix, "/", token, PAGE_SIZE)
                    self._record_page(listing, prefix, page, mount)
                    if page.next_token is None:
                        break
                    token = page.next_token
                current = self._listings.get(slot)
                if current is None or not current.complete or current.expires < listing.expires:
                    self._store_listing(slot, listing)
        except Exception as exc:  # only a guess failed: the real opendir will list and report
            log.debug("look-ahead listing of %s failed: %s", prefix, exc)
        finally:
            self._lookahead_pending.pop(slot).set()

    def _parent_listing(self, node: Node) -> _DirListing | None:
        """The complete, fresh listing of the directory `node` is in, if there is one."""
        parent = self.inodes.get(node.parent) if node.mount is not None else None
        return self._fresh_listing((id(node.mount), parent.key)) if parent is not None else None

    def position_in_parent(self, node: Node) -> int | None:
        """Where `node` stands in its directory's listing order."""
        listing = self._parent_listing(node)
        return listing.position(node.name) if listing is not None else None

    def files_after(self, node: Node, count: int, skip: int = 0) -> list[tuple[int, ObjectMeta]]:
        """The files among the next `count` entries after `node` in its directory's listing order
        (not the first `skip`), with their positions."""
        listing = self._parent_listing(node)
        entries = listing.after(node.name, count, skip) if listing is not None else []
        return [(at, entry.meta) for at, entry in entries if entry.meta is not None and entry.meta.etag]

    def entry_node(self, parent_inode: int, entry: DirEntry) -> Node:
        """The node for a readdir entry; the caller counts a reference only if the kernel took it."""
        parent = self.node(parent_inode)
        if parent.mount is None:
            return parent.children[entry.name]
        return self._node_for(parent, entry)

    # --- files written in this mount --------------------------------------------------------

    def staged_of(self, node: Node) -> StagedUpload | None:
        """The live staged upload of a file (its newest bytes), attached to the node when found."""
        staged = node.live_staged()
        if staged is None and not node.is_dir and not node.unlinked and node.mount is not None:
            staged = node.staged = self.staged_at(node.mount, node.key)
        return staged

    @staticmethod
    def staged_at(mount: MountRoot, key: str) -> StagedUpload | None:
        return mount.uploader.staged_for(key) if mount.uploader is not None else None

    @staticmethod
    def staged_under(mount: MountRoot, prefix: str) -> list[StagedUpload]:
        """Live staged uploads of keys below `prefix` (at any depth)."""
        if mount.uploader is None:
            return []
        return [s for s in mount.uploader.staged_uploads() if s.key.startswith(prefix) and s.key != prefix]

    def _staged_overlay(self, mount: MountRoot, prefix: str) -> tuple[list[ObjectMeta], list[str]]:
        """What staged files add to a listing of `prefix`: those directly in it, and the
        subdirectories of deeper ones (the store may not have them yet); also the directories
        that lead to a grafted mount."""
        objects: list[ObjectMeta] = []
        prefixes: set[str] = set()
        for staged in self.staged_under(mount, prefix):
            head, sep, _ = staged.key[len(prefix):].partition("/")
            if not head:
                continue
            if sep:
                prefixes.add(prefix + head + "/")
            else:
                objects.append(staged_meta(staged))
        prefixes.update(self._grafted_names(mount, prefix))
        return objects, sorted(prefixes)

    # --- changes made through this mount: the cached tree follows the store ---------------------

    def fresh_listing(self, mount: MountRoot, prefix: str) -> _DirListing | None:
        """The complete listing of directory `prefix` if it is within the metadata TTL."""
        return self._fresh_listing((id(mount), prefix))

    def add_entry(self, parent: Node, name: bytes, is_dir: bool, meta: ObjectMeta | None, *,
                  new_dir: bool = False) -> Node:
        """`name` now exists in `parent` (made by this mount): in its cached listing, no longer
        negative. `new_dir`: a directory just made, known to be empty (with its marker)."""
        mount = parent.mount
        assert mount is not None
        path = parent.key + os.fsdecode(name)
        entry = DirEntry(name, is_dir, None if is_dir else meta)
        listing = self._listings.get((id(mount), parent.key))
        if listing is not None:
            listing.put(entry)
        self._negative.pop((id(mount), path), None)
        self._probed.pop((id(mount), path), None)
        node = self._node_for(parent, entry)
        if new_dir:
            self._store_listing((id(mount), node.key), _DirListing(
                complete=True, expires=self.clock() + self.metadata_ttl, has_marker=True))
        return node

    def remove_entry(self, parent: Node, name: bytes, node: Node | None) -> None:
        """`name` is gone from `parent` (removed by this mount)."""
        mount = parent.mount
        assert mount is not None
        listing = self._listings.get((id(mount), parent.key))
        if listing is not None:
            listing.remove(name)
        self._negative[(id(mount), parent.key + os.fsdecode(name))] = self.clock() + self.negative_ttl
        self._probed.pop((id(mount), parent.key + os.fsdecode(name)), None)
        if node is not None:
            if node.is_dir:
                self.forget_listings(mount, node.key)
            self.inodes.unlink(node)

    def move_entry(self, node: Node, old_parent: Node, new_parent: Node, new_name: bytes,
                   meta: ObjectMeta | None) -> None:
        """`node` (and for a directory everything below it) moved; what had the new name is replaced."""
        mount = node.mount
        assert mount is not None
        old_key = node.key
        new_key = new_parent.key + os.fsdecode(new_name) + ("/" if node.is_dir else "")
        old_name = node.name
        listing = self._listings.get((id(mount), old_parent.key))
        if listing is not None:
            listing.remove(old_name)
        self._negative[(id(mount), old_parent.key + os.fsdecode(old_name))] = self.clock() + self.negative_ttl
        self._probed.pop((id(mount), old_parent.key + os.fsdecode(old_name)), None)
        self._probed.pop((id(mount), new_parent.key + os.fsdecode(new_name)), None)
        if node.is_dir:
            self.forget_listings(mount, old_key)
            self.forget_listings(mount, new_key)
            self.inodes.move_prefix(mount, old_key, new_key)
            for moved in self.inodes.below(mount, new_key):
                if moved.meta is not None and not moved.is_dir:
                    # Each file was copied to its new key, which a store may give a new ETag: what
                    # is known of it names the old key, so the next use asks the store again.
                    moved.meta = replace(moved.meta, key=moved.key)
                    moved.meta_expires = 0.0
            self._negative = {slot: t for slot, t in self._negative.items()
                              if slot[0] != id(mount) or not slot[1].startswith(new_key)}
        self.inodes.move(node, new_parent, new_name, new_key)
        if meta is not None:  # a copy keeps the source's metadata, its mtime with it
            self._set_meta(node, meta)
        listing = self._listings.get((id(mount), new_parent.key))
        if listing is not None:
            listing.put(DirEntry(new_name, node.is_dir, None if node.is_dir else (meta or node.meta)))
        self._negative.pop((id(mount), new_parent.key + os.fsdecode(new_name)), None)

    def forget_listings(self, mount: MountRoot, prefix: str) -> None:
        """Drop what is cached of directory `prefix` and everything below it: listed afresh next time."""
        for slot in [slot for slot in self._listings if slot[0] == id(mount) and slot[1].startswith(prefix)]:
            del self._listings[slot]
        for slot in [slot for slot in self._probed if slot[0] == id(mount) and slot[1].startswith(prefix)]:
            del self._probed[slot]

    def set_file_meta(self, mount: MountRoot, key: str, meta: ObjectMeta) -> None:
        """The store has a new version of `key`, written by this mount: the node and the cached
        listing show it, and later reads are pinned to its ETag."""
        node = self.inodes.by_path(mount, key, False)
        if node is not None:
            self._set_meta(node, meta)
        parent_prefix = key[:key.rfind("/") + 1]
        listing = self._listings.get((id(mount), parent_prefix))
        name = os.fsencode(key[len(parent_prefix):])
        if listing is not None:
            known = listing.entries.get(name)
            if known is None or not known.is_dir:
                listing.put(DirEntry(name, False, meta))
        self._negative.pop((id(mount), key), None)
        self._probed.pop((id(mount), key), None)

    def note_marker(self, mount: MountRoot, prefix: str) -> None:
        listing = self._listings.get((id(mount), prefix))
        if listing is not None:
            listing.has_marker = True

    # --- internals -----------------------------------------------------------------------

    def _node_for(self, parent: Node, entry: DirEntry) -> Node:
        key = parent.key + os.fsdecode(entry.name) + ("/" if entry.is_dir else "")
        assert parent.mount is not None
        graft = self._grafts.get((id(parent.mount), key)) if entry.is_dir else None
        if graft is not None:
            return graft
        mtime = entry.meta.mtime_ns if entry.meta else self.mount_time_ns
        node = self.inodes.find_or_create(parent, entry.name, entry.is_dir, key, entry.meta, mtime)
        if not entry.is_dir:
            self.staged_of(node)
        if entry.meta is not None:
            self._set_meta(node, entry.meta)
        return node

    def _within_grace(self, expires: float) -> bool:
        """Something cached that expired at `expires` may still be served while its store is down."""
        return expires > 0 and expires + self.offline_grace > self.clock()

    def _stale_entry(self, mount: MountRoot, listing: _DirListing | None, key: str,
                     name: bytes) -> DirEntry | None:
        """For a store that is unavailable: the entry `name` as last seen, if it expired less than
        offline_grace ago; NotFound if a complete listing within the grace lacks it; else None."""
        if listing is not None and self._within_grace(listing.expires):
            entry = listing.entries.get(name)
            if entry is not None:
                return entry
            if listing.complete:
                raise NotFound(key) from None
        node = self.inodes.by_path(mount, key, False)
        if node is not None and node.meta is not None and self._within_grace(node.meta_expires):
            return DirEntry(name, False, node.meta)
        known_dir = self._listings.get((id(mount), key + "/"))
        if (self.inodes.by_path(mount, key + "/", True) is not None and known_dir is not None
                and self._within_grace(known_dir.expires)):
            return DirEntry(name, True, None)
        return None

    def _set_meta(self, node: Node, meta: ObjectMeta) -> None:
        node.set_meta(meta)
        node.meta_expires = self.clock() + self.metadata_ttl

    def _fresh_listing(self, slot: tuple[int, str]) -> _DirListing | None:
        """The directory's listing if it is complete and within the metadata TTL."""
        listing = self._listings.get(slot)
        if listing is None or not listing.complete or listing.expires <= self.clock():
            return None
        return listing

    def _store_listing(self, slot: tuple[int, str], listing: _DirListing) -> None:
        """Keep at most MAX_LISTINGS directories' listings: expired ones go first, then the oldest."""
        self._listings.pop(slot, None)
        self._listings[slot] = listing
        now = self.clock()
        self._listings = _bounded(self._listings, MAX_LISTINGS, lambda kept: kept.expires > now)

    async def _find_entry(self, parent: Node, name: bytes) -> DirEntry:
        assert parent.mount is not None
        mount = parent.mount
        if self._grafts and parent.key + os.fsdecode(name) + "/" in self._grafted_names(mount, parent.key):
            return DirEntry(name, True, None)  # on the way to a grafted mount, whatever the store has
        now = self.clock()
        listing = self._listings.get((id(mount), parent.key))
        if listing is not None and listing.expires > now:
            entry = listing.entries.get(name)
            if entry is not None:
                return entry
            if listing.complete and self.staged_at(mount, parent.key + os.fsdecode(name)) is None:
                raise NotFound(os.fsdecode(name))
        key = parent.key + os.fsdecode(name)
        staged = self.staged_at(mount, key)
        if staged is not None:  # written in this mount, maybe not in the store yet
            return DirEntry(name, False, staged_meta(staged))
        slot = (id(mount), key)
        if self._negative.get(slot, 0.0) > now:
            raise NotFound(key)
        probed = self._probed.get(slot)
        if probed is not None and probed[0] > now:
            return probed[1]
        try:
            entry = await self._probe(mount, key, name)
        except StoreUnavailable:
            if self._within_grace(self._negative.get(slot, 0.0)):
                self.stale_served += 1  # it was missing a moment ago: still missing, for now
                raise NotFound(key) from None
            stale_entry = self._stale_entry(mount, listing, key, name)
            if stale_entry is None:
                raise
            self.stale_served += 1
            return stale_entry
        if entry is None and self.staged_under(mount, key + "/"):
            entry = DirEntry(name, True, None)  # only files written in this mount are in it yet
        if entry is None:
            self._negative[slot] = now + self.negative_ttl
            if len(self._negative) > 100_000:
                self._negative = {k: t for k, t in self._negative.items() if t > now}
            raise NotFound(key)
        self._negative.pop(slot, None)
        self._remember_probe(slot, entry, now)
        return entry

    def _remember_probe(self, slot: tuple[int, str], entry: DirEntry, now: float) -> None:
        """Keep at most MAX_PROBED names: expired ones go first, then the oldest."""
        self._probed.pop(slot, None)
        self._probed[slot] = (now + self.metadata_ttl, entry)
        self._probed = _bounded(self._probed, MAX_PROBED, lambda kept: kept[0] > now)

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
        if mount.store.store.real_folders:  # an empty folder lists nothing: it is its own marker
            try:
                await mount.store.head(key + "/")
            except NotFound:
                return None
            return DirEntry(name, True, None)
        return None
