"""A store seen through a list of its keys (`[[mount]] objects = [...]`, a Supervisely links file):
only those objects and the folders above them exist; nothing can be written.

It wraps the real store, so the cache, readahead and retries work as for any mount: object ids are the
real store's, and every byte still comes from it. A listing asks the store about the listed objects
only (a HEAD each, a page at a time, several at once), never lists the bucket, which may hold millions
of objects beside the few linked; a listed object that no longer exists is left out of the listing,
and opening it gives the store's own answer.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from mountfs.backends.base import ListPage, ObjectMeta, ObjectStore
from mountfs.buffers import Piece
from mountfs.errors import NotFound, ReadOnly

HEADS_AT_ONCE = 8
"""HEADs in flight while one page of a listing is filled (about what one store takes from one reader)."""


class ListedStore(ObjectStore):
    """`inner` with only `keys` (full keys in the bucket) visible, read-only."""

    def __init__(self, inner: ObjectStore, keys: Iterable[str]) -> None:
        self.inner = inner
        self.store_id = inner.store_id
        self.bucket = inner.bucket
        self.former_ids = inner.former_ids
        self.endpoint = inner.endpoint
        self.endpoint_source = inner.endpoint_source
        self.max_key_bytes = inner.max_key_bytes
        self.keys = frozenset(keys)
        # folder ("" or "a/b/") -> the objects right in it, and its subfolders ("a/b/c/"), sorted
        objects: dict[str, set[str]] = {}
        folders: dict[str, set[str]] = {"": set()}
        for key in self.keys:
            parent = key.rpartition("/")[0]
            folder = parent + "/" if parent else ""
            objects.setdefault(folder, set()).add(key)
            while folder:
                above = folder[:-1].rpartition("/")[0]
                above = above + "/" if above else ""
                folders.setdefault(folder, set())
                if folder in folders.setdefault(above, set()):
                    break
                folders[above].add(folder)
                folder = above
        self._objects = {f: sorted(keys) for f, keys in objects.items()}
        self._folders = {f: sorted(subs) for f, subs in folders.items()}

    @property
    def supports_multipart(self) -> bool:
        return False

    def _check(self, key: str) -> None:
        if key not in self.keys:
            raise NotFound(f"{key}: not one of the listed objects of this mount")

    def head(self, key: str) -> ObjectMeta:
        self._check(key)
        return self.inner.head(key)

    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        self._check(key)
        return self.inner.get_range(key, start, length, etag)

    def get_pieces(self, key: str, start: int, length: int, piece: int,
                   etag: str | None = None) -> builtins.list[Piece]:
        self._check(key)
        return self.inner.get_pieces(key, start, length, piece, etag)

    def check_access(self) -> None:
        self.inner.check_access()

    def list(self, prefix: str, delimiter: str | None = "/", token: str | None = None,
             max_keys: int = 1000) -> ListPage:
        if delimiter != "/":  # every listed key under the prefix, as one flat listing
            keys = sorted(k for k in self.keys if k.startswith(prefix))
            prefixes: builtins.list[str] = []
        else:
            keys = self._objects.get(prefix, [])
            prefixes = self._folders.get(prefix, []) if token is None else []
        start = int(token) if token and token.isdigit() else 0
        page = keys[start:start + max(max_keys, 1)]
        end = start + len(page)
        return ListPage(self._heads(page), prefixes, str(end) if end < len(keys) else None)

    def _heads(self, keys: builtins.list[str]) -> builtins.list[ObjectMeta]:
        """The metadata of those of `keys` that exist, in key order."""

        def head(key: str) -> ObjectMeta | None:
            try:
                return self.inner.head(key)
            except NotFound:
                return None

        if len(keys) <= 1:
            found = [head(k) for k in keys]
        else:
            with ThreadPoolExecutor(min(HEADS_AT_ONCE, len(keys))) as pool:
                found = builtins.list(pool.map(head, keys))
        return [meta for meta in found if meta is not None]

    # --- writes: refused, this is a list of links ------------------------------------------------------

    def _refuse(self) -> ReadOnly:
        return ReadOnly("a mount of listed objects is read-only")

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
        raise self._refuse()

    def create_multipart(self, key: str, mtime_ns: int | None = None) -> str:
        raise self._refuse()

    def delete(self, key: str) -> None:
        raise self._refuse()

    def copy(self, src_key: str, dst_key: str) -> ObjectMeta:
        raise self._refuse()

    def set_mtime(self, key: str, mtime_ns: int) -> ObjectMeta:
        raise self._refuse()
