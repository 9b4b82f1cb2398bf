"""Changes made through the mount: files written, created and truncated; entries made, removed and
renamed. The FUSE handlers call these; the upload layer does the uploading.

After every change the namespace (cached listings, negative cache, inode table) shows what the store
now holds, so the tree the mount shows is the store's. A file being written is the staged file's,
in size and bytes, for every reader in this mount until its upload settles.

Directories follow POSIX as far as the store allows: a directory made by `mkdir` is a marker object
("dir/"), and a directory this mount empties (unlink, rmdir or rename of its last entry) gets one, so
directories disappear only by `rmdir`. Renames are a server-side copy and a delete per object; a
directory is renamed key by key, and a rename that cannot finish says how far it got.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TypeVar

import pyfuse3
import trio

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.base import ObjectMeta
from mountfs.backends.local import LocalStore
from mountfs.buffers import Piece
from mountfs.cache.block_cache import BlockCache
from mountfs.concurrency import BlockingRunner, gather
from mountfs.errors import (
    CrossDevice,
    Exists,
    InvalidArgument,
    IsADirectory,
    MountfsError,
    NameTooLong,
    NoSpace,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    ReadOnly,
    StoreUnavailable,
)
from mountfs.namespace.inodes import MountRoot, Node
from mountfs.namespace.tree import Namespace, staged_meta
from mountfs.upload.staging import Reader
from mountfs.upload.uploader import StagedUpload, Uploader

log = logging.getLogger(__name__)

COPY_CONCURRENCY = 8  # server-side copies (and deletes) in flight during a directory rename
NAME_MAX = 255  # bytes in one path component, as statfs says (and as SeaweedFS and file systems take)
ROOM_TRIES = 8  # a staged change that found the cache disk full is tried again at most this often

T = TypeVar("T")


class RenameIncomplete(StoreUnavailable):
    """A directory rename stopped half way; the message says what is where (EIO)."""


def _reader(store: AsyncStore, cache: BlockCache, meta: ObjectMeta) -> Reader:
    """Reads the object's version `meta` through the block cache (blocks cached stay cached)."""
    obj = store.store.object_id(meta)
    block_size = cache.block_size

    async def fetch(start: int, length: int) -> list[Piece]:
        return await store.get_pieces(obj.key, start, length, block_size, obj.etag)

    async def read(offset: int, length: int) -> bytes | memoryview:
        data = await cache.read(obj, meta.size, offset, length, fetch)
        return data if not isinstance(data, bytearray) else bytes(data)

    return read


class Writes:
    def __init__(self, namespace: Namespace, cache: BlockCache, *, recovering: bool = False) -> None:
        self.namespace = namespace
        self.cache = cache
        self._local_io = BlockingRunner(4)  # renames in direct-access folders
        self.ready = trio.Event()  # set once recovery is done: no write is accepted before
        if not recovering:
            self.ready.set()
        self._holds: dict[str, int] = {}  # staged id -> write handles open on it
        self.refused: str | None = None  # why no new data is taken (the cache dir is gone), if so
        self._locks: dict[tuple[int, str], tuple[trio.Lock, list[int]]] = {}
        for mount in namespace.mounts:
            if mount.uploader is not None:
                mount.uploader.on_uploaded = partial(self._uploaded, mount)

    # --- checks ----------------------------------------------------------------------------

    @staticmethod
    def _writable(node: Node) -> tuple[MountRoot, Uploader]:
        mount = node.mount
        if mount is None:
            raise ReadOnly("the directories above the mounts cannot change")
        if mount.read_only or mount.uploader is None:
            raise ReadOnly(f"{mount.path or 'the mount'} is read-only")
        return mount, mount.uploader

    def refuse(self, reason: str) -> None:
        """Take no new data from now on (EROFS): staging it where it would be lost is worse."""
        self.refused = reason

    def _accepting(self) -> None:
        if self.refused is not None:
            raise ReadOnly(self.refused)

    @staticmethod
    def _check_name(mount: MountRoot, name: bytes, key: str) -> None:
        """ENAMETOOLONG for a name the store cannot hold, before anything is made under it: a file
        created under it could be written but never uploaded."""
        if len(name) > NAME_MAX:
            raise NameTooLong(f"{os.fsdecode(name)[:60]}...: a name of {len(name)} bytes; at most {NAME_MAX}")
        mount.store.store.check_key(key)

    def _writable_dir(self, parent: Node) -> tuple[MountRoot, Uploader]:
        if not parent.is_dir:
            raise NotADirectory(f"inode {parent.inode} is not a directory")
        return self._writable(parent)

    @contextlib.asynccontextmanager
    async def _exclusive(self, mount: MountRoot, key: str) -> AsyncIterator[None]:
        """One change at a time per key (two opens must not stage the same file twice)."""
        slot = (id(mount), key)
        lock, users = self._locks.get(slot) or self._locks.setdefault(slot, (trio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[slot]

    async def _with_room(self, needed: int, change: Callable[[], Awaitable[T]]) -> T:
        """Make a change that stages data on the cache disk. Staged data is what must not be lost,
        cached blocks can be fetched again: when the disk is full, clean blocks give way at once
        and the change is tried again. NoSpace stands only once no block is left to evict."""
        for _ in range(ROOM_TRIES):
            try:
                return await change()
            except NoSpace:
                if not await self.cache.make_room(needed):
                    raise
        return await change()

    # --- files -----------------------------------------------------------------------------

    async def open_for_write(self, node: Node, *, truncate: bool) -> StagedUpload:
        """The staged upload of `node`, shared by every write handle on it, counted as one more
        handle. An existing object is staged from the block cache first unless truncated."""
        mount, uploader = self._writable(node)
        self._accepting()
        if node.is_dir:
            raise IsADirectory(node.key)
        await self.ready.wait()
        async with self._exclusive(mount, node.key):
            staged = self.namespace.staged_of(node)
            if staged is not None and staged.released and not uploader.reopen(staged):
                staged = None
            if staged is None:
                base = node.meta if node.meta is not None and node.meta.etag else None
                read = None if truncate or base is None else _reader(mount.store, self.cache, base)
                staged = await self._with_room(base.size if read is not None and base is not None else 0,
                                               partial(uploader.open_staged, node.key, base, read=read))
                node.staged = staged
                self._hold(staged)
            else:
                # Held before anything awaits: the last close of another handle may be on its way
                # (FUSE sends release after close returns), and must not release what this open
                # takes over, or the upload of its data drops the file under this handle.
                node.staged = staged
                self._hold(staged)
                if truncate and staged.size:
                    try:
                        await self._with_room(0, partial(uploader.truncate, staged, 0))
                    except BaseException:
                        with trio.CancelScope(shield=True):
                            await self.release(node, staged)
                        raise
        if truncate:
            self._touch(node)
        return staged

    async def create(self, parent: Node, name: bytes) -> tuple[Node, StagedUpload]:
        """A new, empty file `name` in `parent`, open for writing (one handle)."""
        mount, uploader = self._writable_dir(parent)
        self._accepting()
        await self.ready.wait()
        key = parent.key + os.fsdecode(name)
        self._check_name(mount, name, key)
        async with self._exclusive(mount, key):
            old = self.namespace.staged_at(mount, key)
            if old is not None:  # lost a race with another create of the name: start afresh
                await uploader.discard(old)
            staged = await self._with_room(0, partial(uploader.open_staged, key, None))
            node = self.namespace.add_entry(parent, name, False, staged_meta(staged))
            node.staged = staged
            self._hold(staged)
        self._touch(node)
        return node, staged

    async def write(self, node: Node, staged: StagedUpload, offset: int, data: bytes) -> int:
        _mount, uploader = self._writable(node)
        self._accepting()
        written = await self._with_room(len(data), partial(uploader.write, staged, offset, data))
        self.cache.staged(written)
        self._touch(node)
        return written

    async def flush(self, node: Node, staged: StagedUpload) -> None:
        """Upload what changed (flush, fsync): UploadFailed (EIO) when the store does not take it;
        the data stays staged and is retried in the background."""
        _mount, uploader = self._writable(node)
        await uploader.flush(staged)

    async def release(self, node: Node, staged: StagedUpload) -> None:
        """One write handle closed; the last one releases the staged file to the uploader."""
        left = self._holds.get(staged.id, 1) - 1
        if left > 0:
            self._holds[staged.id] = left
            return
        self._holds.pop(staged.id, None)
        _mount, uploader = self._writable(node)
        await uploader.release(staged)

    def _hold(self, staged: StagedUpload) -> None:
        self._holds[staged.id] = self._holds.get(staged.id, 0) + 1

    @staticmethod
    def _touch(node: Node) -> None:
        node.mtime_ns = time.time_ns()
        node.mtime_pin = None

    async def truncate(self, node: Node, size: int, staged: StagedUpload | None) -> None:
        """setattr(size): through the handle's staged file when there is one; a path truncate stages,
        truncates and uploads at once (truncate(2) returns with the change in the store)."""
        _mount, uploader = self._writable(node)
        self._accepting()
        if node.is_dir:
            raise IsADirectory(node.key)
        if staged is not None:
            await self._with_room(0, partial(uploader.truncate, staged, size))
        else:
            staged = await self.open_for_write(node, truncate=size == 0)
            try:
                await self._with_room(0, partial(uploader.truncate, staged, size))
                await uploader.flush(staged)
            finally:
                await self.release(node, staged)
        self._touch(node)

    async def set_mtime(self, node: Node, mtime_ns: int) -> None:
        """utimens. A file's mtime is kept in its object's metadata, so that other mounts, and this
        one after a remount, see it: a file settled in the store gets it at once (`set_mtime` of the
        store: a metadata patch, or a copy in place; an error is EIO and the old mtime stays); a file
        still staged carries it with its upload (`Uploader.set_mtime`).

        A directory's mtime stays in this mount's memory only, until the mount forgets the
        directory: object stores keep no times for prefixes or markers."""
        mount, uploader = self._writable(node)
        if node.is_dir or node.unlinked:  # (an unlinked file's object is gone, or is another file's)
            node.mtime_ns = mtime_ns
            return
        await self.ready.wait()
        async with self._exclusive(mount, node.key):
            staged = self.namespace.staged_of(node)
            if staged is not None:
                node.mtime_ns = mtime_ns  # shown at once: the upload, or its retry, brings it to the store
                await uploader.set_mtime(staged, mtime_ns)
                return
            old = node.meta
            meta = await mount.store.set_mtime(node.key, mtime_ns)
            if old is not None and old.etag:  # the same bytes: its handles and cached pages follow
                node.retag(old.etag, meta.etag)
                if node.page_etag == old.etag:
                    node.page_etag = meta.etag
            self.namespace.set_file_meta(mount, node.key, meta)

    def check_attributes(self, node: Node) -> None:
        """chmod and chown: accepted and ignored on a writable mount (owner and mode come from the
        mount options), EROFS on a read-only one."""
        self._writable(node)

    def _uploaded(self, mount: MountRoot, staged: StagedUpload) -> None:
        """An upload reached the store (flush or background retry): its version replaces the old."""
        meta = staged.meta
        if meta is None:
            return
        try:
            node = self.namespace.inodes.by_path(mount, staged.key, False)
            if node is not None:
                node.written_etag = meta.etag
            self.namespace.set_file_meta(mount, staged.key, meta)
        except Exception:  # never fail the upload for the bookkeeping
            log.exception("could not record the upload of %s", staged.key)

    # --- names -----------------------------------------------------------------------------

    async def unlink(self, parent: Node, name: bytes) -> None:
        mount, uploader = self._writable_dir(parent)
        await self.ready.wait()
        node = await self.namespace.child(parent, name)
        if node.is_dir:
            raise IsADirectory(node.key)
        async with self._exclusive(mount, node.key):
            staged = self.namespace.staged_of(node)
            if staged is not None:  # nothing of it may reach the store now; open handles keep it
                await uploader.discard(staged)
            await mount.store.delete(node.key)
        self.namespace.remove_entry(parent, name, node)
        await self._keep_directory(parent)

    async def mkdir(self, parent: Node, name: bytes) -> Node:
        mount, _uploader = self._writable_dir(parent)
        await self.ready.wait()
        key = parent.key + os.fsdecode(name) + "/"
        self._check_name(mount, name, key)
        with contextlib.suppress(NotFound):
            await self.namespace.child(parent, name)
            raise Exists(parent.key + os.fsdecode(name))
        await mount.store.put(key, b"")
        node = self.namespace.add_entry(parent, name, True, None, new_dir=True)
        node.mtime_ns = time.time_ns()
        return node

    async def rmdir(self, parent: Node, name: bytes) -> None:
        mount, _uploader = self._writable_dir(parent)
        await self.ready.wait()
        node = await self.namespace.child(parent, name)
        if not node.is_dir:
            raise NotADirectory(node.key)
        if node.pinned:
            raise NotPermitted(f"{node.key}: the root of a mount cannot be removed")
        await self._check_empty(mount, node.key)
        await mount.store.delete(node.key)  # the marker, if there is one
        self.namespace.remove_entry(parent, name, node)
        await self._keep_directory(parent)

    async def _check_empty(self, mount: MountRoot, prefix: str) -> None:
        """NotEmpty unless directory `prefix` has no entry: staged, cached or in the store."""
        if self.namespace.staged_under(mount, prefix):
            raise NotEmpty(prefix)
        listing = self.namespace.fresh_listing(mount, prefix)
        if listing is not None and listing.entries:
            raise NotEmpty(prefix)
        page = await mount.store.list(prefix, "/", None, 2)  # the store has the last word
        if page.prefixes or any(meta.key != prefix for meta in page.objects):
            raise NotEmpty(prefix)

    async def _keep_directory(self, directory: Node) -> None:
        """`directory` may have lost its last entry: give it a marker so that it stays, unless it
        has one, still has entries, or the store keeps folders by itself."""
        mount = directory.mount
        if (mount is None or directory.pinned or directory.unlinked or directory.key == mount.prefix
                or mount.store.store.real_folders):
            return
        listing = self.namespace.fresh_listing(mount, directory.key)
        if listing is not None:
            if listing.entries or listing.has_marker:
                return
        else:
            if self.namespace.staged_under(mount, directory.key):
                return
            page = await mount.store.list(directory.key, "/", None, 1)
            if page.objects or page.prefixes:  # entries, or the marker itself
                return
        await mount.store.put(directory.key, b"")
        self.namespace.note_marker(mount, directory.key)

    # --- rename ----------------------------------------------------------------------------

    async def rename(self, old_parent: Node, old_name: bytes, new_parent: Node, new_name: bytes,
                     flags: int) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise InvalidArgument("RENAME_EXCHANGE is not supported")
        mount, _uploader = self._writable_dir(old_parent)
        new_mount, _ = self._writable_dir(new_parent)
        if mount is not new_mount:
            raise CrossDevice("a rename between two mounts is a copy: mv does it")
        await self.ready.wait()
        node = await self.namespace.child(old_parent, old_name)
        if node.pinned:
            raise NotPermitted(f"{node.key}: the root of a mount cannot be renamed")
        new_key = new_parent.key + os.fsdecode(new_name) + ("/" if node.is_dir else "")
        if new_key == node.key:
            return
        self._check_name(mount, new_name, new_key)
        try:
            target: Node | None = await self.namespace.child(new_parent, new_name)
        except NotFound:
            target = None
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise Exists(new_key)
            if target.pinned:
                raise NotPermitted(f"{target.key}: the root of a mount cannot be replaced")
            if node.is_dir and not target.is_dir:
                raise NotADirectory(f"{target.key}: cannot replace a file with a directory")
            if not node.is_dir and target.is_dir:
                raise IsADirectory(f"{target.key}: cannot replace a directory with a file")
        meta: ObjectMeta | None = None
        copies: dict[str, ObjectMeta] = {}
        if node.is_dir and new_key.startswith(node.key):
            raise InvalidArgument(f"cannot move {node.key} into itself")
        if mount.direct and isinstance(mount.store.store, LocalStore):
            # direct access: the folder's own rename, atomic, and open files keep their descriptors
            if node.is_dir and target is not None:
                await self._check_empty(mount, target.key)
            meta = await self._local_io(mount.store.store.rename, node.key, new_key)
        elif node.is_dir:
            if new_key.startswith(node.key):
                raise InvalidArgument(f"cannot move {node.key} into itself")
            if target is not None:
                await self._check_empty(mount, target.key)
            copies = await self._move_directory(mount, node.key, new_key, (old_parent, new_parent))
        else:
            meta = await self._move_file(mount, node, new_key, (old_parent, new_parent))
        self.namespace.move_entry(node, old_parent, new_parent, new_name, meta)
        self._follow_copies(mount, copies)
        if old_parent is not new_parent:
            await self._keep_directory(old_parent)

    async def _move_file(self, mount: MountRoot, node: Node, new_key: str,
                         parents: tuple[Node, Node]) -> ObjectMeta:
        uploader = mount.uploader
        assert uploader is not None
        old_key = node.key
        async with self._exclusive(mount, old_key):
            replaced = self.namespace.staged_at(mount, new_key)
            if replaced is not None:  # being written under the new name: it is replaced
                await uploader.discard(replaced)
            staged = self.namespace.staged_of(node)
            # Still being written (or waiting for a retry): its data goes up under the new name,
            # unless its upload ended, and dropped it, while the rename waited for it.
            if staged is not None and await uploader.rename(staged, new_key):
                try:
                    await mount.store.delete(old_key)
                except MountfsError as exc:
                    log.error("renamed %s to %s, but the old object stays in the store: %s",
                              old_key, new_key, exc)
                    self.namespace.forget_listings(mount, parents[0].key)
                return staged_meta(staged)
            meta = await mount.store.copy(old_key, new_key)
            if node.meta is not None:  # the same bytes under the new name: open handles follow
                node.retag(node.meta.etag, meta.etag)
            try:
                await mount.store.delete(old_key)
            except MountfsError as exc:
                self.namespace.forget_listings(mount, parents[1].key)
                raise type(exc)(f"{old_key} was copied to {new_key} but could not be removed: {exc}") from exc
            return meta

    def _follow_copies(self, mount: MountRoot, copies: dict[str, ObjectMeta]) -> None:
        """The files a directory rename copied (by new key): known nodes take the copies' metadata,
        and handles open on the old versions read the copies (same bytes, maybe a new ETag)."""
        for key, meta in copies.items():
            moved = self.namespace.inodes.by_path(mount, key, False)
            if moved is not None and moved.meta is not None:
                moved.retag(moved.meta.etag, meta.etag)
            self.namespace.set_file_meta(mount, key, meta)

    async def _move_directory(self, mount: MountRoot, old: str, new: str,
                              parents: tuple[Node, Node]) -> dict[str, ObjectMeta]:
        """Every key below `old` copied under `new`, then deleted; staged files move with them.
        Returns the copies' metadata by new key."""
        uploader = mount.uploader
        assert uploader is not None
        store = mount.store
        objects, folders = await self._walk(store, old)
        staged_keys = [s.key for s in self.namespace.staged_under(mount, old)]
        for key in [*objects, *staged_keys]:  # every key must fit under the new name before one moves
            store.store.check_key(new + key[len(old):])
        occupied = {key[:cut + 1] for key in objects for cut in _slashes(key, len(old))}
        if objects:
            occupied.add(old)
        copied = 0
        copies: dict[str, ObjectMeta] = {}

        async def copy(key: str) -> None:
            nonlocal copied
            copies[new + key[len(old):]] = await store.copy(key, new + key[len(old):])
            copied += 1

        files = [key for key in objects if not key.endswith("/")]
        try:
            # Directory markers first, made anew (some servers cannot copy one), outermost first:
            # a server built on a file system (SeaweedFS) loses a marker made while files go in.
            for marker in sorted((key for key in objects if key.endswith("/")), key=len):
                await store.put(new + marker[len(old):], b"")
                copied += 1
            for batch in _batches(files, COPY_CONCURRENCY):
                await gather(*(partial(copy, key) for key in batch))
            # folders with nothing below them: a marker each, so empty directories move too
            empty = [folder for folder in folders if folder not in occupied and folder not in objects]
            if not objects and old not in empty:
                empty.append(old)
            for folder in empty:
                await store.put(new + folder[len(old):], b"")
        except MountfsError as exc:
            self._forget_listings(mount, new, parents)
            raise RenameIncomplete(
                f"rename of {old} to {new} stopped after copying {copied} of {len(objects)} objects "
                f"({exc}); nothing was removed: {old} is complete, {new} holds partial copies") from exc
        listed = set(objects)
        for staged in self.namespace.staged_under(mount, old):
            old_key, new_key = staged.key, new + staged.key[len(old):]
            if not await uploader.rename(staged, new_key) and staged.dropped and old_key not in listed:
                # its upload ended while the rename waited, after the walk: the object moves too
                try:
                    copies[new_key] = await store.copy(old_key, new_key)
                except MountfsError as exc:
                    self._forget_listings(mount, new, parents)
                    raise RenameIncomplete(f"rename of {old} to {new}: {old_key} could not be copied "
                                           f"({exc}); nothing was removed") from exc
                files.append(old_key)
                objects.append(old_key)
        deleted = 0

        async def delete(key: str) -> None:
            nonlocal deleted
            await store.delete(key)
            deleted += 1

        try:
            for batch in _batches(files, COPY_CONCURRENCY):
                await gather(*(partial(delete, key) for key in batch))
            # Then the markers and the emptied folders themselves, deepest first: a folder store
            # (file://) keeps folders, and so do S3 servers built on a file system (SeaweedFS lists
            # an empty folder as a prefix until its "dir/" key is deleted).
            for folder in sorted(set(folders) | set(objects) - set(files), key=len, reverse=True):
                await store.delete(folder)
                if folder in objects:
                    deleted += 1
        except MountfsError as exc:
            self._forget_listings(mount, old, parents)
            raise RenameIncomplete(
                f"rename of {old} to {new}: everything was copied, but {len(objects) - deleted} of "
                f"{len(objects)} objects could not be removed from {old} ({exc}); both hold them") from exc
        return copies

    def _forget_listings(self, mount: MountRoot, prefix: str, parents: tuple[Node, Node]) -> None:
        """After a directory rename stopped half way: list `prefix` and both parents afresh."""
        for key in (prefix, *(parent.key for parent in parents)):
            self.namespace.forget_listings(mount, key)

    @staticmethod
    async def _walk(store: AsyncStore, prefix: str) -> tuple[list[str], list[str]]:
        """Every object key below `prefix` (markers included) and every folder (prefix) on the way,
        listed one directory at a time so that empty folders are found too."""
        objects: list[str] = []
        folders: list[str] = []
        todo = [prefix]
        while todo:
            folder = todo.pop()
            folders.append(folder)
            token: str | None = None
            while True:
                page = await store.list(folder, "/", token, 1000)
                objects.extend(meta.key for meta in page.objects)
                todo.extend(page.prefixes)
                token = page.next_token
                if token is None:
                    break
        return objects, folders


def _slashes(key: str, start: int) -> list[int]:
    """Positions of the "/" in `key` from `start`: where its ancestor folders end."""
    return [i for i in range(start, len(key)) if key[i] == "/"]


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]

