"""The contract every store adapter fulfils, in the vocabulary of object storage.

Calls are synchronous and may block: callers above this layer run them in worker threads
(`mountfs.concurrency.run_blocking`). Keys are `str`; a key never starts with "/".
"""

from __future__ import annotations

import abc
import builtins
from dataclasses import dataclass, field

from mountfs.buffers import Piece
from mountfs.errors import NameTooLong, Unsupported


@dataclass(frozen=True)
class ObjectMeta:
    """What a HEAD or a listing says about one object.

    `mtime_ns` is the object's own modification time when its metadata carries one (set through
    `set_mtime` or an upload, or by rclone; see `mountfs.backends.mtime`), else the store's time of
    its last write.
    """

    key: str
    size: int
    etag: str
    mtime_ns: int
    last_modified_only: bool = field(default=False, compare=False)
    """From a listing that cannot carry metadata (S3's ListObjectsV2): `mtime_ns` is the store's
    last-modified time even when a HEAD would show an mtime kept in the object's metadata."""
    link: str | None = None
    """A symlink of a `file://` folder, not an object: its target as stored (`size` is the target's
    length, as lstat gives it). No store follows one; the mount shows it as a symlink."""


@dataclass(frozen=True)
class ObjectId:
    """Names one version of one object; the cache keys every block by it."""

    store: str
    bucket: str
    key: str
    etag: str


@dataclass(frozen=True)
class ListPage:
    """One page of a listing. `prefixes` are common prefixes ending in the delimiter.

    `next_token` is None on the last page; otherwise pass it back as `token`.
    """

    objects: list[ObjectMeta] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    next_token: str | None = None


@dataclass(frozen=True)
class UploadPart:
    """A part already uploaded in a multipart upload."""

    number: int
    etag: str


class ObjectStore(abc.ABC):
    """One bucket (or container, or folder) of one store.

    `store_id` names the endpoint (e.g. "file", "s3://host:9000"); with `bucket` it is what
    makes an `ObjectId` unique across every store in a mount.
    """

    store_id: str
    bucket: str
    former_ids: tuple[str, ...] = ()
    """What earlier versions of mountfs called this store: upload journal records staged under
    one of these names are still this store's."""
    endpoint = ""
    """Where its requests go, as a URL (for `mountfs status`); "" for a local folder."""
    endpoint_source = ""
    """Where `endpoint` was configured (a config key, an environment variable, a profile)."""
    max_key_bytes: int | None = None
    """The longest key the store takes, in bytes of UTF-8 (None: no limit of its own)."""
    real_folders = False
    """Folders exist on their own (a local folder): one stays when its last file goes, and a
    directory marker ("dir/") is the folder itself. Object stores only imply prefixes."""

    lists_multipart_uploads = False
    """`multipart_uploads` works: recovery can find an upload a dead process never journalled."""

    upload_concurrency: int | None = None
    """Parts of uploads in flight at once that the store's own settings ask for (None: [write]'s)."""

    @property
    def supports_multipart(self) -> bool:
        """False when multipart uploads are switched off for this store (`multipart = false`)."""
        return True

    def check_key(self, key: str) -> None:
        """NameTooLong for a key the store would refuse for its length, before anything is staged
        under it (a refused upload could only be kept, never sent)."""
        size = len(key.encode("utf-8", "surrogateescape"))
        if self.max_key_bytes is not None and size > self.max_key_bytes:
            raise NameTooLong(f"{key[:60]}...: a key of {size} bytes; {type(self).__name__} takes at "
                              f"most {self.max_key_bytes}")

    def object_id(self, meta: ObjectMeta) -> ObjectId:
        return ObjectId(self.store_id, self.bucket, meta.key, meta.etag)

    # --- reads -------------------------------------------------------------------------

    @abc.abstractmethod
    def head(self, key: str) -> ObjectMeta:
        """Metadata of `key`; NotFound when absent."""

    @abc.abstractmethod
    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        """`length` bytes from `start` (fewer at end of object).

        With `etag`, the read is pinned to that version: Stale if the object changed.
        """

    def get_pieces(self, key: str, start: int, length: int, piece: int,
                   etag: str | None = None) -> builtins.list[Piece]:
        """`get_range` as consecutive `piece`-byte parts (the last may be shorter): one request
        fills several cache blocks, each its own buffer. Adapters that can stream override this
        to avoid the copy made here."""
        data = self.get_range(key, start, length, etag)
        if len(data) <= piece:
            return [data] if data else []
        return [data[i:i + piece] for i in range(0, len(data), piece)]

    @abc.abstractmethod
    def list(self, prefix: str, delimiter: str | None = "/", token: str | None = None,
             max_keys: int = 1000) -> ListPage:
        """Objects and common prefixes under `prefix`, in key order, one page at a time."""

    def check_access(self) -> None:
        """Fail fast (NotFound, AccessDenied, StoreUnavailable) when the bucket is not usable."""
        self.list("", "/", None, 1)

    def prepare(self) -> None:
        """Make ready what the first request would otherwise wait for (an SDK client, its service
        model, a CA bundle), in the daemon that will send it. Blocking; a failure is left for that
        request to meet and report. Nothing, for a store with nothing to make ready."""
        return

    # --- writes ------------------------------------------------------------------------
    # `mtime_ns` on an upload: the object carries that modification time from the start (a file
    # whose mtime was set while it was still staged), with no second request. Stores fix metadata
    # at different moments: S3 when a multipart upload is created, the others when it completes;
    # callers give the same value to both, and the meta returned by completion says what it got.

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
        raise Unsupported(f"{type(self).__name__} does not write yet")

    def put_etag(self, key: str, data: bytes) -> str:
        """One PUT, answering only the new object's ETag: for a writer that needs nothing else (a
        cache's block). Adapters whose `put` needs a second request for its metadata skip it here."""
        return self.put(key, data).etag

    def create_multipart(self, key: str, mtime_ns: int | None = None) -> str:
        raise Unsupported(f"{type(self).__name__} does not write yet")

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> UploadPart:
        raise Unsupported(f"{type(self).__name__} does not write yet")

    def complete_multipart(self, key: str, upload_id: str, parts: builtins.list[UploadPart],
                           mtime_ns: int | None = None) -> ObjectMeta:
        raise Unsupported(f"{type(self).__name__} does not write yet")

    def abort_multipart(self, key: str, upload_id: str) -> None:
        raise Unsupported(f"{type(self).__name__} does not write yet")

    def multipart_uploads(self, key: str) -> builtins.list[tuple[str, float]]:
        """The multipart uploads of exactly `key` still in progress, as (upload id, time it was
        created in seconds since the epoch by the store's clock), so that recovery can find one a
        dead process created but never journalled. Unsupported where the store cannot list them."""
        raise Unsupported(f"{type(self).__name__} cannot list multipart uploads")

    def multipart_parts(self, key: str, upload_id: str) -> builtins.list[tuple[UploadPart, int]]:
        """The parts the store holds for multipart upload `upload_id` of `key`, with their sizes: after
        a crash, a part whose answer never reached the journal can still be reused. NotFound when the
        upload is gone; Unsupported where the store cannot list them."""
        raise Unsupported(f"{type(self).__name__} cannot list the parts of a multipart upload")

    def delete(self, key: str) -> None:
        raise Unsupported(f"{type(self).__name__} does not write yet")

    def copy(self, src_key: str, dst_key: str) -> ObjectMeta:
        """A server-side copy; the copy keeps the source's user metadata, its mtime included."""
        raise Unsupported(f"{type(self).__name__} does not write yet")

    def set_mtime(self, key: str, mtime_ns: int) -> ObjectMeta:
        """Keep `mtime_ns` as the object's modification time, in its metadata, without sending its
        bytes again; the object's meta afterwards. The ETag may change (an S3 copy in place, an
        Azure metadata write, a local file's ETag), the bytes never do. NotFound when absent."""
        raise Unsupported(f"{type(self).__name__} cannot keep a modification time")
