"""The async face of an `ObjectStore`: calls go to worker threads and are counted.

The counters are what `mountfs status` reports as store requests and bytes fetched, and what
the tests read to prove that a warm read did not touch the store.
"""

from __future__ import annotations

import builtins
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from mountfs.backends.base import ListPage, ObjectMeta, ObjectStore, UploadPart
from mountfs.concurrency import BlockingRunner

T = TypeVar("T")


@dataclass
class StoreStats:
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bytes_fetched: int = 0
    bytes_uploaded: int = 0


class AsyncStore:
    def __init__(self, store: ObjectStore, threads: int) -> None:
        self.store = store
        self.stats = StoreStats()
        self._run = BlockingRunner(threads)

    @property
    def store_id(self) -> str:
        return self.store.store_id

    @property
    def bucket(self) -> str:
        return self.store.bucket

    async def head(self, key: str) -> ObjectMeta:
        self.stats.requests["head"] += 1
        try:
            return await self._run(self.store.head, key)
        except Exception:
            self.stats.errors["head"] += 1
            raise

    async def get_range(self, key: str, start: int, length: int, etag: str | None) -> bytes:
        self.stats.requests["get"] += 1
        try:
            data = await self._run(self.store.get_range, key, start, length, etag)
        except Exception:
            self.stats.errors["get"] += 1
            raise
        self.stats.bytes_fetched += len(data)
        return data

    async def get_pieces(self, key: str, start: int, length: int, piece: int,
                         etag: str | None) -> list[bytes]:
        self.stats.requests["get"] += 1
        try:
            pieces = await self._run(self.store.get_pieces, key, start, length, piece, etag)
        except Exception:
            self.stats.errors["get"] += 1
            raise
        self.stats.bytes_fetched += sum(map(len, pieces))
        return pieces

    async def list(self, prefix: str, delimiter: str | None = "/", token: str | None = None,
                   max_keys: int = 1000) -> ListPage:
        self.stats.requests["list"] += 1
        try:
            return await self._run(self.store.list, prefix, delimiter, token, max_keys)
        except Exception:
            self.stats.errors["list"] += 1
            raise

    async def check_access(self) -> None:
        await self._run(self.store.check_access)

    # --- writes: counted under the ObjectStore method names ------------------------------------

    async def _counted(self, op: str, fn: Callable[..., T], *args: object) -> T:
        self.stats.requests[op] += 1
        try:
            return await self._run(fn, *args)
        except Exception:
            self.stats.errors[op] += 1
            raise

    async def put(self, key: str, data: bytes) -> ObjectMeta:
        meta = await self._counted("put", self.store.put, key, data)
        self.stats.bytes_uploaded += len(data)
        return meta

    async def create_multipart(self, key: str) -> str:
        return await self._counted("create_multipart", self.store.create_multipart, key)

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> UploadPart:
        part = await self._counted("upload_part", self.store.upload_part, key, upload_id, number, data)
        self.stats.bytes_uploaded += len(data)
        return part

    async def complete_multipart(self, key: str, upload_id: str,
                                 parts: builtins.list[UploadPart]) -> ObjectMeta:
        return await self._counted("complete_multipart", self.store.complete_multipart, key, upload_id, parts)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._counted("abort_multipart", self.store.abort_multipart, key, upload_id)

    async def delete(self, key: str) -> None:
        await self._counted("delete", self.store.delete, key)

    async def copy(self, src_key: str, dst_key: str) -> ObjectMeta:
        return await self._counted("copy", self.store.copy, src_key, dst_key)
