"""An in-process object store for unit tests: S3 semantics, plus faults, latency and counters.

As on S3, an mtime kept in an object's metadata (`set_mtime`, or given to `put`/`create_multipart`)
shows in `head` but not in listings, which carry the time of the last write; a copy keeps it.

It shares the listing and paging code with `LocalStore`, so both list exactly as S3 does, and a
test can make any call fail (`inject`), slow down (`latency`) or count it (`calls`, `bytes_read`).
"""

from __future__ import annotations

import bisect
import builtins
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from typing import NamedTuple

from mountfs.backends.base import ListPage, ObjectMeta, ObjectStore, UploadPart
from mountfs.backends.local import (
    MAX_PART_NUMBER,
    Entry,
    check_list_args,
    iter_sorted_keys,
    key_bytes,
    key_str,
    make_page,
    md5_hex,
)
from mountfs.errors import NotFound, Stale

OPS = frozenset({
    "head", "get_range", "list", "check_access", "put", "create_multipart", "upload_part",
    "complete_multipart", "abort_multipart", "multipart_uploads", "multipart_parts", "delete", "copy",
    "set_mtime",
})
"""Operation names that `inject` and `calls` use: the `ObjectStore` method names."""


class StoredObject(NamedTuple):
    data: bytes
    etag: str
    mtime_ns: int  # of the last write (S3's LastModified)
    user_mtime_ns: int | None = None  # kept in the object's metadata


class _Upload(NamedTuple):
    key: str
    parts: dict[int, tuple[bytes, str]]  # number -> (data, etag)
    mtime_ns: int | None  # metadata is fixed when the upload is created, as on S3
    created: float = 0.0


class MemoryStore(ObjectStore):
    """Objects in a dict behind one lock: callers run it from worker threads, as a real store.

    Test helpers `put_object` / `remove_object` play "another client" changing the bucket: they
    bypass faults, latency and counters.
    """

    max_key_bytes = 1024  # as S3
    lists_multipart_uploads = True

    def __init__(self, bucket: str = "mem", store_id: str = "memory") -> None:
        self.store_id = store_id
        self.bucket = bucket
        self.latency: float = 0.0
        self.calls: Counter[str] = Counter()
        self.bytes_read: int = 0
        self._lock = threading.Lock()
        self._objects: dict[str, StoredObject] = {}
        self._sorted: builtins.list[bytes] = []  # key_bytes of every key, kept sorted for listings
        self._uploads: dict[str, _Upload] = {}
        self._faults: dict[str, deque[BaseException]] = {}
        self._generation = 0

    # --- test controls ---------------------------------------------------------------------------

    def inject(self, op: str, error: BaseException, times: int = 1) -> None:
        """Make the next `times` calls of `op` raise `error` (after counting them and sleeping)."""
        if op not in OPS:
            raise ValueError(f"unknown operation {op!r}; one of {sorted(OPS)}")
        if times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        with self._lock:
            self._faults.setdefault(op, deque()).extend([error] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.bytes_read = 0

    def put_object(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
        """Create or replace `key` as another client would: no fault, latency or count."""
        with self._lock:
            return self._store(key, bytes(data), mtime_ns)

    def remove_object(self, key: str) -> None:
        with self._lock:
            if key not in self._objects:
                raise NotFound(f"{key}: no such object in {self.bucket}")
            self._drop(key)

    def keys(self) -> builtins.list[str]:
        """Every key, in S3 order."""
        with self._lock:
            return [key_str(k) for k in self._sorted]

    # --- internals (call with the lock held) -----------------------------------------------------

    def _enter(self, op: str) -> None:
        """Count the call, sleep the latency (without the lock, so calls overlap), raise a fault."""
        with self._lock:
            self.calls[op] += 1
            queue = self._faults.get(op)
            fault = queue.popleft() if queue else None
        if self.latency > 0:
            time.sleep(self.latency)
        if fault is not None:
            raise fault

    def _store(self, key: str, data: bytes, mtime_ns: int | None,
               user_mtime_ns: int | None = None) -> ObjectMeta:
        if not key:
            raise ValueError("an object key cannot be empty")
        raw = key_bytes(key)  # UnicodeEncodeError (a ValueError) for keys S3 could not carry
        self._generation += 1
        etag = f"{md5_hex(data)}-{self._generation}"  # new on every write, even of equal bytes
        obj = StoredObject(data, etag, time.time_ns() if mtime_ns is None else mtime_ns, user_mtime_ns)
        if key not in self._objects:
            bisect.insort(self._sorted, raw)
        self._objects[key] = obj
        return self._meta(key, obj)

    def _drop(self, key: str) -> None:
        del self._objects[key]
        raw = key_bytes(key)
        del self._sorted[bisect.bisect_left(self._sorted, raw)]

    @staticmethod
    def _meta(key: str, obj: StoredObject) -> ObjectMeta:
        """What a HEAD shows: the metadata's mtime if there is one."""
        mtime = obj.mtime_ns if obj.user_mtime_ns is None else obj.user_mtime_ns
        return ObjectMeta(key, len(obj.data), obj.etag, mtime)

    @staticmethod
    def _listed_meta(key: str, obj: StoredObject) -> ObjectMeta:
        """What a listing shows: the time of the last write, as S3's ListObjectsV2."""
        return ObjectMeta(key, len(obj.data), obj.etag, obj.mtime_ns, last_modified_only=True)

    def _get(self, key: str) -> StoredObject:
        obj = self._objects.get(key)
        if obj is None:
            raise NotFound(f"{key}: no such object in {self.bucket}")
        return obj

    def _upload(self, key: str, upload_id: str) -> _Upload:
        upload = self._uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise NotFound(f"no multipart upload {upload_id!r} for {key!r} in {self.bucket}")
        return upload

    # --- reads -----------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectMeta:
        self._enter("head")
        with self._lock:
            return self._meta(key, self._get(key))

    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"bad range start={start} length={length}")
        self._enter("get_range")
        with self._lock:
            obj = self._get(key)
            if etag is not None and obj.etag != etag:
                raise Stale(f"{key}: changed since it was opened (etag {etag} expected, {obj.etag} found)")
            data = obj.data[start:start + length]
            self.bytes_read += len(data)
        return data

    def list(self, prefix: str, delimiter: str | None = "/", token: str | None = None,
             max_keys: int = 1000) -> ListPage:
        delimiter = check_list_args(delimiter, max_keys)
        self._enter("list")
        try:
            raw_prefix = key_bytes(prefix)
        except UnicodeEncodeError:
            return ListPage()
        raw_delim = None if delimiter is None else key_bytes(delimiter)
        raw_token = None if token is None else key_bytes(token)
        with self._lock:
            return make_page(self._entries(raw_prefix, raw_delim, raw_token), max_keys)

    def _entries(self, prefix: bytes, delimiter: bytes | None, token: bytes | None) -> Iterator[Entry]:
        for raw, is_prefix in iter_sorted_keys(self._sorted, prefix, delimiter, token):
            name = key_str(raw)
            yield (name, None) if is_prefix else (name, self._listed_meta(name, self._objects[name]))

    def check_access(self) -> None:
        self._enter("check_access")

    # --- writes ----------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
        self._enter("put")
        with self._lock:
            return self._store(key, bytes(data), None, mtime_ns)

    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error (S3 semantics)."""
        self._enter("delete")
        with self._lock:
            if key in self._objects:
                self._drop(key)

    def copy(self, src_key: str, dst_key: str) -> ObjectMeta:
        self._enter("copy")
        with self._lock:
            source = self._get(src_key)
            return self._store(dst_key, source.data, None, source.user_mtime_ns)

    def set_mtime(self, key: str, mtime_ns: int) -> ObjectMeta:
        """A copy in place with new metadata, as on S3: a new ETag and time of last write."""
        self._enter("set_mtime")
        with self._lock:
            obj = self._get(key)
            if obj.user_mtime_ns == mtime_ns:
                return self._meta(key, obj)
            return self._store(key, obj.data, None, mtime_ns)

    def create_multipart(self, key: str, mtime_ns: int | None = None) -> str:
        self._enter("create_multipart")
        if not key:
            raise ValueError("an object key cannot be empty")
        upload_id = uuid.uuid4().hex
        with self._lock:
            self._uploads[upload_id] = _Upload(key, {}, mtime_ns, time.time())
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> UploadPart:
        if not 1 <= number <= MAX_PART_NUMBER:
            raise ValueError(f"part number must be in 1..{MAX_PART_NUMBER}, not {number}")
        self._enter("upload_part")
        data = bytes(data)
        etag = md5_hex(data)
        with self._lock:
            self._upload(key, upload_id).parts[number] = (data, etag)
        return UploadPart(number, etag)

    def complete_multipart(self, key: str, upload_id: str, parts: builtins.list[UploadPart],
                           mtime_ns: int | None = None) -> ObjectMeta:
        """`mtime_ns` is ignored: as on S3, the object gets what `create_multipart` was given."""
        self._enter("complete_multipart")
        ordered = sorted(parts, key=lambda p: p.number)
        if len({p.number for p in ordered}) != len(ordered):
            raise ValueError("duplicate part numbers in complete_multipart")
        with self._lock:
            upload = self._upload(key, upload_id)
            staged = upload.parts
            chunks: builtins.list[bytes] = []
            for part in ordered:
                found = staged.get(part.number)
                if found is None or found[1] != part.etag:
                    raise NotFound(f"part {part.number} (etag {part.etag}) of upload {upload_id} "
                                   "was never uploaded")
                chunks.append(found[0])
            del self._uploads[upload_id]
            return self._store(key, b"".join(chunks), None, upload.mtime_ns)

    def multipart_uploads(self, key: str) -> builtins.list[tuple[str, float]]:
        self._enter("multipart_uploads")
        with self._lock:
            return [(upload_id, upload.created) for upload_id, upload in self._uploads.items()
                    if upload.key == key]

    def multipart_parts(self, key: str, upload_id: str) -> builtins.list[tuple[UploadPart, int]]:
        self._enter("multipart_parts")
        with self._lock:
            parts = self._upload(key, upload_id).parts
            return [(UploadPart(number, etag), len(data)) for number, (data, etag) in sorted(parts.items())]

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._enter("abort_multipart")
        with self._lock:
            self._upload(key, upload_id)
            del self._uploads[upload_id]
