"""Turning store listings into directory entries, and the per-opendir snapshot.

A snapshot is filled page by page as readdir asks for more, so a directory of a million keys
starts answering at once; offsets are indices into it, so they stay stable while it grows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from mountfs.backends.base import ListPage, ObjectMeta

log = logging.getLogger(__name__)

NAME_MAX = 255
PAGE_SIZE = 1000


@dataclass(frozen=True)
class DirEntry:
    name: bytes
    is_dir: bool
    meta: ObjectMeta | None  # files only


_warned: set[str] = set()


def entry_name(prefix: str, key: str) -> bytes | None:
    """The directory-entry name of `key` under `prefix`, or None if POSIX cannot show it."""
    rest = key[len(prefix):].rstrip("/") if key.endswith("/") else key[len(prefix):]
    try:
        name = os.fsencode(rest)
    except UnicodeEncodeError:  # a lone surrogate (a JSON listing may carry one): no bytes name it
        name = b""
    if not name or name in (b".", b"..") or b"/" in name or len(name) > NAME_MAX or b"\0" in name:
        if key not in _warned and key != prefix:
            _warned.add(key)
            log.warning("skipping key %r: it has no valid file name under %r", key, prefix)
        return None
    return name


def entries_from_page(prefix: str, page: ListPage) -> Iterator[DirEntry]:
    for sub in page.prefixes:
        name = entry_name(prefix, sub)
        if name is not None:
            yield DirEntry(name, True, None)
    for meta in page.objects:
        if meta.key == prefix:  # the "dir/" marker object of the directory itself
            continue
        name = entry_name(prefix, meta.key)
        if name is not None:
            yield DirEntry(name, meta.key.endswith("/"), None if meta.key.endswith("/") else meta)


ListFn = Callable[[str | None], Awaitable[ListPage]]
"""list_page(token) -> the next page of the directory's listing."""


class DirSnapshot:
    """The entries one opendir sees. A name that is both a prefix and an object is shown
    as the directory (the object is shadowed, as mountpoint-s3 does)."""

    def __init__(self, prefix: str = "", list_page: ListFn | None = None,
                 entries: list[DirEntry] | None = None) -> None:
        self.prefix = prefix
        self.entries: list[DirEntry] = []
        self._positions: dict[bytes, int] = {}
        self._list_page = list_page
        self._token: str | None = None
        self.done = list_page is None
        for entry in entries or ():
            self._add(entry)

    async def entry(self, position: int) -> DirEntry | None:
        """The entry at `position`, listing more pages as needed; None past the end."""
        while position >= len(self.entries) and not self.done:
            await self.next_page()
        return self.entries[position] if position < len(self.entries) else None

    async def next_page(self) -> list[DirEntry]:
        assert self._list_page is not None
        page = await self._list_page(self._token)
        added = [entry for entry in entries_from_page(self.prefix, page) if self._add(entry)]
        self._token = page.next_token
        self.done = page.next_token is None
        return added

    def _add(self, entry: DirEntry) -> bool:
        at = self._positions.get(entry.name)
        if at is None:
            self._positions[entry.name] = len(self.entries)
            self.entries.append(entry)
            return True
        if entry.is_dir and not self.entries[at].is_dir:
            log.warning("%r is both an object and a prefix: showing the directory", entry.name)
            self.entries[at] = entry
        return False
