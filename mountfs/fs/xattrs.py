"""Read-only extended attributes that say where a file comes from and how much of it is local:
`getfattr -d FILE` shows them, so an operator can tell a cached file from a direct one or find the
object behind a path without reading the config.

    user.mountfs.url      the object's full URL (after path substitution: the URL it is served from)
    user.mountfs.etag     the version this mount knows (files in the store only)
    user.mountfs.cached   bytes of this version in the cache dir
    user.mountfs.direct   "true" for direct-access files, else "false"
    user.mountfs.pending  bytes staged here and not yet in the store

Directories have a URL only. Nothing can be set or removed (the handlers answer ENOTSUP).
"""

from __future__ import annotations

import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.cache.index import block_key
from mountfs.namespace.inodes import MountRoot, Node

PREFIX = "user.mountfs."
URL, ETAG, CACHED, DIRECT, PENDING = (PREFIX + n for n in ("url", "etag", "cached", "direct", "pending"))


class Xattrs:
    def __init__(self, cache: BlockCache) -> None:
        self.cache = cache
        self.mount_urls: dict[str, str] = {}  # mount path -> the URL it is served from (set by the daemon)

    def url(self, node: Node) -> str | None:
        root = node.mount
        if root is None:
            return None
        base = self.mount_urls.get(root.path) or _fallback_url(root)
        relative = node.key[len(root.prefix):] if node.key.startswith(root.prefix) else node.key
        return base.rstrip("/") + "/" + relative  # a folder's ends in "/", the mount's own too

    def _known(self, node: Node) -> dict[str, str]:
        """Every attribute but CACHED (which asks the index): what has a value. A file not in the
        store yet has no ETag; a directory has only a URL."""
        out: dict[str, str] = {}
        url = self.url(node)
        if url is not None:
            out[URL] = url
        if not _is_file(node):
            return out
        assert node.mount is not None
        out[DIRECT] = "true" if node.mount.is_direct(node.key) else "false"
        meta = node.meta
        if meta is not None and meta.etag:
            out[ETAG] = meta.etag
        staged = node.live_staged()
        out[PENDING] = str(staged.size if staged is not None and staged.dirty else 0)
        return out

    def names(self, node: Node) -> list[str]:
        names = list(self._known(node))
        return [*names, CACHED] if _is_file(node) else names

    async def get(self, node: Node, name: str) -> str | None:
        if name == CACHED and _is_file(node):
            assert node.mount is not None
            return "0" if node.mount.is_direct(node.key) else str(await self.cached_bytes(node))
        return self._known(node).get(name)

    async def cached_bytes(self, node: Node) -> int:
        """Bytes of the node's current version that the cache dir holds (blocks in the index)."""
        meta, root = node.meta, node.mount
        if meta is None or not meta.etag or root is None or meta.size <= 0:
            return 0
        await self.cache.totals()  # blocks fetched a moment ago are recorded first
        obj = root.store.store.object_id(meta)
        size = self.cache.block_size
        keys = [block_key(obj, size, index) for index in range(-(-meta.size // size))]
        index = self.cache.index

        def count() -> int:
            total = 0
            for key in keys:
                record = index.lookup(key)
                if record is not None:
                    total += record.stored  # a partial block: the bytes its file holds
            return total

        return await trio.to_thread.run_sync(count)


def _is_file(node: Node) -> bool:
    return node.mount is not None and not node.is_dir and node.link is None


def _fallback_url(root: MountRoot) -> str:
    """A mount the daemon gave no URL for (tests that build roots by hand)."""
    return f"{root.store.store_id}/{root.store.bucket}/{root.prefix}"
