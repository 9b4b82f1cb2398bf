"""The async face of an `ObjectStore`: calls go to worker threads, are counted, and fail fast
while the store is known to be down.

The counters are what `mountfs status` reports as store requests and bytes fetched, and what
the tests read to prove that a warm read did not touch the store.

Offline means consistently down, not merely flaky: OFFLINE_AFTER_FAILURES calls in a row have used
up their retries on transient failures, over at least OFFLINE_AFTER_SECONDS, with no answer from the
store in between (any answer, even an error such as NotFound, starts the count again). A store that
still answers now and then stays online, and each call keeps retrying on its own budget: one unlucky
call must not make every other call fail at once. Once offline, calls fail at once (EIO) instead of
each waiting out the retry budget, except one call every PROBE_INTERVAL, which goes through and
brings the store back when it gets an answer. Cached data and metadata keep being served meanwhile:
they never reach this layer.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from mountfs.backends.base import ListPage, ObjectMeta, ObjectStore, UploadPart
from mountfs.backends.retry import RetryCount, retries_counted_in
from mountfs.buffers import Piece
from mountfs.concurrency import BlockingRunner
from mountfs.errors import Offline, StoreUnavailable, Transient
from mountfs.latency import Latencies

log = logging.getLogger(__name__)

T = TypeVar("T")

PROBE_INTERVAL = 5.0  # seconds between calls let through to an offline store
OFFLINE_AFTER_FAILURES = 3  # calls in a row out of retries, with no answer in between...
OFFLINE_AFTER_SECONDS = 5.0  # ...over at least this long, before the store counts as offline


@dataclass
class StoreStats:
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bytes_fetched: int = 0
    bytes_uploaded: int = 0
    failed_fast: int = 0  # calls refused at once because the store was offline
    latency: Latencies = field(default_factory=Latencies)  # seconds per call, retries included, by op
    retries: RetryCount = field(default_factory=RetryCount)  # requests sent again after a transient failure


class AsyncStore:
    def __init__(self, store: ObjectStore, threads: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.stats = StoreStats()
        self._run = BlockingRunner(threads)
        self._clock = clock
        self.offline_since: float | None = None  # on self._clock
        self._next_probe = 0.0
        self._failures_in_row = 0  # calls out of retries since the last answer
        self._failing_since = 0.0  # when the first of them started (not before the last answer)
        self._last_answer = float("-inf")

    @property
    def store_id(self) -> str:
        return self.store.store_id

    @property
    def bucket(self) -> str:
        return self.store.bucket

    @property
    def former_ids(self) -> tuple[str, ...]:
        return self.store.former_ids

    @property
    def endpoint(self) -> str:
        return self.store.endpoint

    @property
    def endpoint_source(self) -> str:
        return self.store.endpoint_source

    @property
    def offline(self) -> bool:
        return self.offline_since is not None

    @property
    def offline_for(self) -> float:
        """Seconds since the store went offline (0 while it answers)."""
        return 0.0 if self.offline_since is None else max(0.0, self._clock() - self.offline_since)

    # --- reads -------------------------------------------------------------------------------

    async def head(self, key: str) -> ObjectMeta:
        return await self._counted("head", self.store.head, key)

    async def get_range(self, key: str, start: int, length: int, etag: str | None) -> bytes:
        data = await self._counted("get", self.store.get_range, key, start, length, etag)
        self.stats.bytes_fetched += len(data)
        return data

    async def get_pieces(self, key: str, start: int, length: int, piece: int,
                         etag: str | None) -> list[Piece]:
        pieces = await self._counted("get", self.store.get_pieces, key, start, length, piece, etag)
        self.stats.bytes_fetched += sum(map(len, pieces))
        return pieces

    async def list(self, prefix: str, delimiter: str | None = "/", token: str | None = None,
                   max_keys: int = 1000) -> ListPage:
        return await self._counted("list", self.store.list, prefix, delimiter, token, max_keys)

    async def check_access(self) -> None:
        await self._run(self.store.check_access)

    async def prepare(self) -> None:
        """The store's `prepare`, in a worker thread; a failure is only logged (at debug): the first
        request meets it again and reports it."""
        try:
            await self._run(self.store.prepare)
        except Exception as exc:
            log.debug("preparing %s: %s", self.store_id, exc)

    # --- writes: counted under the ObjectStore method names ------------------------------------

    async def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
        meta = await self._counted("put", self.store.put, key, data, mtime_ns)
        self.stats.bytes_uploaded += len(data)
        return meta

    async def create_multipart(self, key: str, mtime_ns: int | None = None) -> str:
        return await self._counted("create_multipart", self.store.create_multipart, key, mtime_ns)

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> UploadPart:
        part = await self._counted("upload_part", self.store.upload_part, key, upload_id, number, data)
        self.stats.bytes_uploaded += len(data)
        return part

    async def complete_multipart(self, key: str, upload_id: str, parts: builtins.list[UploadPart],
                                 mtime_ns: int | None = None) -> ObjectMeta:
        return await self._counted("complete_multipart", self.store.complete_multipart, key, upload_id, parts,
                                   mtime_ns)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._counted("abort_multipart", self.store.abort_multipart, key, upload_id)

    async def multipart_uploads(self, key: str) -> builtins.list[tuple[str, float]]:
        return await self._counted("multipart_uploads", self.store.multipart_uploads, key)

    async def multipart_parts(self, key: str, upload_id: str) -> builtins.list[tuple[UploadPart, int]]:
        return await self._counted("multipart_parts", self.store.multipart_parts, key, upload_id)

    async def delete(self, key: str) -> None:
        await self._counted("delete", self.store.delete, key)

    async def copy(self, src_key: str, dst_key: str) -> ObjectMeta:
        return await self._counted("copy", self.store.copy, src_key, dst_key)

    async def set_mtime(self, key: str, mtime_ns: int) -> ObjectMeta:
        return await self._counted("set_mtime", self.store.set_mtime, key, mtime_ns)

    # --- counting, and the offline state ---------------------------------------------------------

    async def _counted(self, op: str, fn: Callable[..., T], *args: object) -> T:
        self._refuse_while_offline(op)  # a refused call is no request: counted in failed_fast
        self.stats.requests[op] += 1
        started = self._clock()
        try:
            try:
                result: T = await self._run(partial(self._retries_counted, fn), *args)
            finally:
                self.stats.latency.observe(op, self._clock() - started)
        except StoreUnavailable as exc:
            self.stats.errors[op] += 1
            if isinstance(exc.__cause__, Transient):  # retries used up: not a one-off refusal
                self._failed(started, exc)
            raise
        except Exception:
            self.stats.errors[op] += 1
            self._answered()  # NotFound, AccessDenied, Stale...: the store is there
            raise
        self._answered()
        return result

    def _retries_counted(self, fn: Callable[..., T], *args: object) -> T:
        with retries_counted_in(self.stats.retries):
            return fn(*args)

    def _refuse_while_offline(self, op: str) -> None:
        if self.offline_since is None:
            return
        now = self._clock()
        if now >= self._next_probe:
            self._next_probe = now + PROBE_INTERVAL  # this call is the probe
            return
        self.stats.failed_fast += 1
        self.stats.errors[op] += 1
        down = now - self.offline_since
        raise Offline(f"{self.store_id}/{self.bucket} is offline (no answer for {down:.0f} s); "
                      f"trying again every {PROBE_INTERVAL:.0f} s")

    def _failed(self, started: float, exc: StoreUnavailable) -> None:
        """One more call out of retries: offline once enough of them in a row span long enough."""
        now = self._clock()
        if self._failures_in_row == 0:
            self._failing_since = max(started, self._last_answer)
        self._failures_in_row += 1
        if self.offline_since is None:
            if (self._failures_in_row < OFFLINE_AFTER_FAILURES
                    or now - self._failing_since < OFFLINE_AFTER_SECONDS):
                return  # maybe only flaky: the next call retries on its own budget
            self.offline_since = self._failing_since
            log.warning("%s/%s is offline (%d calls in a row failed over %.0f s, none answered): %s; "
                        "cached data is still served", self.store_id, self.bucket, self._failures_in_row,
                        now - self._failing_since, exc)
        self._next_probe = now + PROBE_INTERVAL

    def _answered(self) -> None:
        self._failures_in_row = 0
        self._last_answer = self._clock()
        if self.offline_since is not None:
            log.warning("%s/%s answers again after %.0f s offline", self.store_id, self.bucket,
                        self._last_answer - self.offline_since)
            self.offline_since = None
