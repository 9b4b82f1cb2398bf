"""The async face of an `ObjectStore`: calls go to worker threads and are counted.

The counters are what `mountfs status` reports as store requests and bytes fetched, and what
the tests read to prove that a warm read did not touch the store.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mountfs.backends.base import ListPage, ObjectMeta, ObjectStore
from mountfs.concurrency import BlockingRunner


@dataclass
class StoreStats:
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bytes_fetched: int = 0


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
