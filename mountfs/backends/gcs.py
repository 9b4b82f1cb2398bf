"""Google Cloud Storage, and its emulators, through google-cloud-storage (the JSON API).

Versions: an object's generation plays the ETag's part (`ObjectMeta.etag` is `str(generation)`).
A read pinned to a generation sends `ifGenerationMatch`, which GCS answers with 412 (Stale) when
the object changed; the generation the response reports (x-goog-generation) is compared as well,
because fake-gcs-server ignores read preconditions, and the check costs nothing.

Listing: one JSON API page per call, with prefix and delimiter; on GCS, prefixes count towards
`maxResults` as on S3. fake-gcs-server returns every prefix on top of `maxResults` objects: such a
page is cut to `max_keys` entries in key order, and the token carries how many entries of that
same server page to skip next time, so callers see S3's paging whatever the server does.

Writes: `put` is one upload (the SDK turns uploads above 8 MiB into a resumable session, so large
writes go through resumable uploads). The multipart API maps to a parallel composite upload, as
gsutil and gcloud do them, because its contract (parts in any order, in parallel, replaceable,
resumable after a crash by upload id) cannot be met by a resumable session, which takes bytes
strictly in order and once:
- `create_multipart` writes a marker object `.mountfs-uploads/<id>/upload` (the upload id is a
  random 32-hex name);
- `upload_part` writes `.mountfs-uploads/<id>/part-<number>`; its ETag is that object's generation;
  the marker is checked before the write (an unknown upload, or one for another key, is NotFound)
  and after it (an upload aborted meanwhile: the part deletes itself, since the abort deletes the
  marker before it lists the parts);
- `complete_multipart` checks every part's generation against one listing (fake-gcs-server does
  not enforce compose preconditions; GCS does, and gets them too), composes the parts into the key,
  32 at a time (GCS's limit; more parts compose through intermediate objects), then deletes the
  upload's objects;
- `abort_multipart` deletes them.
The `.mountfs-uploads/` prefix is left out of every listing this adapter answers. On real GCS,
deleted part objects count towards the bucket's soft-delete retention, and the parts of an upload
nobody completes or aborts stay until deleted: a lifecycle rule deleting `.mountfs-uploads/`
objects older than a week bounds both. Composite objects carry a CRC32C but no MD5.

`copy` is a rewrite, repeated until GCS says it is done (large or cross-location copies take
several calls); it keeps the metadata. `delete` of a missing object is not an error.

Modification times: an mtime set through the mount is user metadata "mtime" (RFC 3339, as rclone
writes it; gsutil's "goog-reserved-file-mtime" is read too, see `mountfs.backends.mtime`), shown by
HEAD and by listings, which ask for the metadata. `set_mtime` patches the metadata: the bytes and
the generation (the ETag) stay, so cached blocks stay valid. Uploads carry it from the start:
`put` as the new object's metadata, a multipart upload in its final compose.

The SDK's own retries are off (`retry=None` on every call): `retry.call_with_retry` retries every
adapter the same way, and each request gives up after `request_timeout`.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import functools
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import google.auth.exceptions
import requests
import requests.adapters
import urllib3.exceptions
from google.api_core import exceptions as api_exceptions
from google.auth.transport.requests import AuthorizedSession
from google.cloud.storage import Client as StorageClient
from google.cloud.storage import exceptions as storage_exceptions

from mountfs.backends import mtime
from mountfs.backends.base import ListPage, ObjectMeta, ObjectStore, UploadPart
from mountfs.backends.retry import ACCESS_CHECK_RETRY, call_translated, refused_for_good, root_cause
from mountfs.config import RetryConfig
from mountfs.config.gcs import OWN_HINT, GcsSettings, load_credentials
from mountfs.errors import (
    AccessDenied,
    MountfsError,
    NoCredentials,
    NotFound,
    Rejected,
    Stale,
    StoreUnavailable,
    Throttled,
    Transient,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

UPLOADS = ".mountfs-uploads/"
COMPOSE_LIMIT = 32  # source objects per compose request
LIST_FIELDS = "items(name,size,generation,updated,metadata),prefixes,nextPageToken"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
THROTTLED_STATUS = {429, 503}  # the store asks to slow down: never an instant retry
TRANSIENT_EXCEPTIONS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    google.auth.exceptions.TransportError,
    storage_exceptions.DataCorruption,
    ConnectionError,
    TimeoutError,
)

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def client_for(settings: GcsSettings, timeout: float) -> Any:
    """One client per endpoint and credentials in each process (made anew after fork). Its HTTP
    session is shared by the worker threads, with a connection pool as large as their number."""
    ident = (os.getpid(), settings.endpoint, settings.project, settings.credentials_json,
             settings.anonymous, settings.pool_connections, timeout)
    with _clients_lock:
        client = _clients.get(ident)
        if client is None:
            credentials, key_project = load_credentials(settings)
            session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
            adapter = requests.adapters.HTTPAdapter(pool_connections=settings.pool_connections,
                                                    pool_maxsize=settings.pool_connections)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            options = {"api_endpoint": settings.endpoint} if settings.endpoint else None
            client = StorageClient(project=settings.project or key_project, credentials=credentials,
                                    client_options=options, _http=session)
            _clients[ident] = client
    return client


def translate(exc: Exception, what: str, credentials_hint: str = OWN_HINT) -> Exception:
    """The mountfs error for a google-cloud-storage / google-auth failure of the request `what`."""
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        status = exc.code if isinstance(exc.code, int) else 0
        message = str(exc.message or "").strip()
        detail = f"{status} {message}".strip()
        if status == 404:
            if "bucket does not exist" in message.lower():
                return NotFound(f"{what}: the bucket does not exist")
            return NotFound(f"{what}: not found")
        if status == 412:
            return Stale(f"{what}: the object changed ({detail})")
        if status in (401, 403):
            return AccessDenied(f"{what}: access denied ({detail}); check the credentials")
        if status in THROTTLED_STATUS:
            return Throttled(f"{what}: {detail}")
        if status in TRANSIENT_STATUS:
            return Transient(f"{what}: {detail}")
        if refused_for_good(status):
            return Rejected(f"{what}: refused by the store ({detail})")
        return StoreUnavailable(f"{what}: {detail}")
    if isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
        return NoCredentials(f"{what}: no Google credentials found ({credentials_hint})")
    if isinstance(exc, google.auth.exceptions.RefreshError):
        return AccessDenied(f"{what}: the credentials were refused: {exc}")
    if isinstance(exc, TRANSIENT_EXCEPTIONS):
        return Transient(f"{what}: {exc}")
    return exc


def list_buckets(settings: GcsSettings, retry: RetryConfig) -> builtins.list[str]:
    """The names of the buckets of the client's project, for a mount of a whole endpoint."""

    def do() -> builtins.list[str]:
        client = client_for(settings, retry.request_timeout)
        return [str(b.name) for b in client.list_buckets(timeout=retry.request_timeout, retry=None)]

    return call_translated(do, functools.partial(translate, credentials_hint=settings.credentials_hint),
                           retry, f"list buckets at {settings.endpoint or 'Google'}")


class GcsStore(ObjectStore):
    max_key_bytes = 1024  # object names: 1-1024 bytes of UTF-8
    lists_multipart_uploads = True
    def __init__(self, settings: GcsSettings, retry: RetryConfig) -> None:
        self.settings = settings
        self.retry = retry
        self.bucket = settings.bucket
        self.store_id = f"gs://{settings.endpoint or 'google'}"
        self.endpoint = settings.endpoint or "https://storage.googleapis.com"

    @property
    def client(self) -> Any:
        return client_for(self.settings, self.retry.request_timeout)

    def _bucket(self) -> Any:
        return self.client.bucket(self.bucket)

    def _call(self, what: str, fn: Callable[[], T], retry: RetryConfig | None = None) -> T:
        hinted = functools.partial(translate, credentials_hint=self.settings.credentials_hint)
        return call_translated(fn, hinted, retry or self.retry, what)

    def _name(self, key: str) -> str:
        return f"gs://{self.bucket}/{key}"

    @property
    def _timeout(self) -> float:
        return self.retry.request_timeout

    # --- reads -------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectMeta:
        def do() -> ObjectMeta:
            blob = self._bucket().blob(key)
            blob.reload(retry=None, timeout=self._timeout)
            return _meta(blob)

        return self._call(f"HEAD {self._name(key)}", do)

    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        if length <= 0:
            return b""
        what = f"GET {self._name(key)} bytes {start}+{length}"
        generation = _generation(etag, what) if etag else None

        def do() -> bytes:
            blob = self._bucket().blob(key)
            try:
                data: bytes = blob.download_as_bytes(
                    start=start, end=start + length - 1, raw_download=True, checksum=None,
                    if_generation_match=generation, single_shot_download=True,
                    retry=None, timeout=self._timeout)
            except api_exceptions.RequestRangeNotSatisfiable:
                # the range starts at or past the end; the precondition still holds or fails
                if generation is not None:
                    blob.reload(retry=None, timeout=self._timeout)
                    _check_generation(blob, generation, what)
                return b""
            _check_generation(blob, generation, what)
            return data

        return self._call(what, do)

    def _page(self, prefix: str, delimiter: str | None, token: str | None,
              max_keys: int) -> tuple[list[ObjectMeta], list[str], str | None]:
        iterator = self.client.list_blobs(
            self.bucket, prefix=prefix or None, delimiter=delimiter or None, page_size=max_keys,
            page_token=token, fields=LIST_FIELDS, retry=None, timeout=self._timeout)
        page = next(iterator.pages)
        objects = [_meta(blob) for blob in page]
        prefixes = [str(p) for p in page.prefixes]
        next_token = iterator.next_page_token
        return objects, prefixes, str(next_token) if next_token else None

    def list(self, prefix: str, delimiter: str | None = "/", token: str | None = None,
             max_keys: int = 1000) -> ListPage:
        server_token, skip = _decode_token(token)
        kept: builtins.list[ObjectMeta | str] = []
        while True:
            fetch = functools.partial(self._page, prefix, delimiter, server_token, max_keys)
            objects, prefixes, next_server = self._call(f"LIST {self._name(prefix)}", fetch)
            merged: builtins.list[tuple[bytes, ObjectMeta | str]] = [
                (o.key.encode("utf-8", "surrogateescape"), o) for o in objects if not _hidden(o.key)]
            merged += [(p.encode("utf-8", "surrogateescape"), p) for p in prefixes if not _hidden(p)]
            merged.sort(key=lambda item: item[0])
            available = [entry for _, entry in merged[skip:]]
            room = max_keys - len(kept)
            if len(available) > room:  # more than asked for (an emulator): cut, and skip them next time
                kept += available[:room]
                next_token: str | None = _encode_token(server_token, skip + room)
                break
            kept += available
            next_token = _encode_token(next_server, 0) if next_server else None
            if next_token is None or len(kept) == max_keys:
                break
            server_token, skip = next_server, 0  # fill the page from the next one
        return ListPage([e for e in kept if isinstance(e, ObjectMeta)],
                        [e for e in kept if isinstance(e, str)], next_token)

    def check_access(self) -> None:
        def do() -> None:
            self._page("", "/", None, 1)

        try:
            self._call(f"LIST {self._name('')}", do, ACCESS_CHECK_RETRY)
        except NotFound as exc:
            raise NotFound(f"bucket {self.bucket} does not exist at "
                           f"{self.settings.endpoint or 'Google Cloud Storage'}") from exc
        except AccessDenied as exc:
            raise AccessDenied(f"{exc} (credentials: {self.settings.credentials_origin})") from exc
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"cannot reach {self.settings.describe()}: {root_cause(exc)}") from exc

    # --- writes ------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
        def do() -> ObjectMeta:
            blob = self._bucket().blob(key)
            if mtime_ns is not None:
                blob.metadata = _mtime_metadata(mtime_ns)
            blob.upload_from_string(data, content_type="application/octet-stream", checksum=None,
                                    retry=None, timeout=self._timeout)
            return _meta(blob)

        return self._call(f"PUT {self._name(key)}", do)

    def create_multipart(self, key: str, mtime_ns: int | None = None) -> str:
        """`mtime_ns` is ignored: the object gets the one `complete_multipart` is given."""
        upload_id = uuid.uuid4().hex

        def do() -> None:
            marker = self._bucket().blob(_marker(upload_id))
            marker.metadata = {"mountfs-key": key}
            marker.upload_from_string(b"", content_type="application/octet-stream", retry=None,
                                      timeout=self._timeout)

        self._call(f"CREATE MULTIPART {self._name(key)}", do)
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> UploadPart:
        what = f"UPLOAD PART {number} {self._name(key)}"
        _check_upload_id(upload_id, what)
        if self._marker_key(upload_id, what) != key:
            raise NotFound(f"{what}: no such upload")

        def do() -> UploadPart:
            blob = self._bucket().blob(_part(upload_id, number))
            blob.upload_from_string(data, content_type="application/octet-stream", checksum=None,
                                    retry=None, timeout=self._timeout)
            return UploadPart(number, str(blob.generation))

        part = self._call(what, do)
        if self._marker_key(upload_id, what) is None:  # aborted meanwhile: its cleanup may have missed us
            self._delete_quietly([_part(upload_id, number)])
            raise NotFound(f"{what}: no such upload")
        return part

    def _marker_key(self, upload_id: str, what: str) -> str | None:
        """The key the upload is for, or None when the upload does not exist (any more)."""
        def do() -> str | None:
            blob = self._bucket().blob(_marker(upload_id))
            try:
                blob.reload(retry=None, timeout=self._timeout)
            except api_exceptions.NotFound:
                return None
            return str((blob.metadata or {}).get("mountfs-key", ""))

        return self._call(f"{what}: HEAD upload", do)

    def multipart_uploads(self, key: str) -> builtins.list[tuple[str, float]]:
        """From the upload markers: each names the key it is for."""
        def do() -> builtins.list[tuple[str, float]]:
            blobs = self.client.list_blobs(self.bucket, prefix=UPLOADS, page_size=1000, retry=None,
                                           timeout=self._timeout)
            found: builtins.list[tuple[str, float]] = []
            for blob in blobs:
                upload_id, _, leaf = blob.name[len(UPLOADS):].partition("/")
                if (leaf == "upload" and _UPLOAD_ID.fullmatch(upload_id)
                        and (blob.metadata or {}).get("mountfs-key") == key):
                    created = blob.time_created or blob.updated
                    found.append((upload_id, created.timestamp() if created else 0.0))
            return found

        return self._call(f"LIST MULTIPART UPLOADS {self._name(key)}", do)

    def _upload_objects(self, upload_id: str, what: str) -> dict[str, Any]:
        """name -> blob of every object of the upload: its marker, parts and intermediates."""
        def do() -> dict[str, Any]:
            blobs = self.client.list_blobs(self.bucket, prefix=f"{UPLOADS}{upload_id}/", page_size=1000,
                                           retry=None, timeout=self._timeout)
            return {blob.name: blob for blob in blobs}

        return self._call(f"{what}: LIST upload", do)

    def complete_multipart(self, key: str, upload_id: str, parts: builtins.list[UploadPart],
                           mtime_ns: int | None = None) -> ObjectMeta:
        what = f"COMPLETE MULTIPART {self._name(key)}"
        _check_upload_id(upload_id, what)
        found = self._upload_objects(upload_id, what)
        marker = found.get(_marker(upload_id))
        if marker is None or (marker.metadata or {}).get("mountfs-key") != key:
            raise NotFound(f"{what}: no such upload")
        sources: builtins.list[tuple[str, int]] = []
        for part in sorted(parts, key=lambda p: p.number):
            blob = found.get(_part(upload_id, part.number))
            if blob is None or str(blob.generation) != part.etag:
                raise NotFound(f"{what}: part {part.number} was not uploaded, or not with that ETag")
            sources.append((blob.name, int(blob.generation)))
        if not sources:
            meta = self.put(key, b"", mtime_ns)
        else:
            created: builtins.list[str] = []  # intermediate composites, when there are over 32 parts
            level = 0
            while len(sources) > COMPOSE_LIMIT:
                grouped = []
                for i in range(0, len(sources), COMPOSE_LIMIT):
                    name = f"{UPLOADS}{upload_id}/compose-{level}-{i // COMPOSE_LIMIT:05d}"
                    grouped.append((name, int(self._compose(name, sources[i:i + COMPOSE_LIMIT], what).etag)))
                    created.append(name)
                sources = grouped
                level += 1
            meta = self._compose(key, sources, what, mtime_ns)
            self._delete_quietly(created)
        self._delete_quietly(sorted(found))
        return meta

    def _compose(self, name: str, sources: builtins.list[tuple[str, int]], what: str,
                 mtime_ns: int | None = None) -> ObjectMeta:
        def do() -> ObjectMeta:
            bucket = self._bucket()
            target = bucket.blob(name)
            target.content_type = "application/octet-stream"
            if mtime_ns is not None:
                target.metadata = _mtime_metadata(mtime_ns)
            target.compose([bucket.blob(source) for source, _ in sources],
                           if_source_generation_match=[generation for _, generation in sources],
                           retry=None, timeout=self._timeout)
            return _meta(target)

        try:
            return self._call(f"{what}: COMPOSE {len(sources)} parts", do)
        except Stale as exc:
            raise NotFound(f"{what}: a part changed while composing") from exc

    def abort_multipart(self, key: str, upload_id: str) -> None:
        what = f"ABORT MULTIPART {self._name(key)}"
        _check_upload_id(upload_id, what)
        if self._marker_key(upload_id, what) != key:
            raise NotFound(f"{what}: no such upload")
        # the marker first: a part upload that sees it gone deletes its own part; then the rest
        self._delete_quietly([_marker(upload_id)])
        self._delete_quietly(sorted(self._upload_objects(upload_id, what)))

    def _delete_quietly(self, names: builtins.list[str]) -> None:
        """Delete objects in parallel; failures are logged, not raised (they are only leftovers)."""
        def delete(name: str) -> None:
            try:
                self.delete(name)
            except MountfsError as exc:
                log.warning("could not delete %s: %s", self._name(name), exc)

        if len(names) <= 1:
            for name in names:
                delete(name)
            return
        with ThreadPoolExecutor(min(16, len(names))) as pool:
            list(pool.map(delete, names))

    def delete(self, key: str) -> None:
        def do() -> None:
            with contextlib.suppress(api_exceptions.NotFound):
                self._bucket().blob(key).delete(retry=None, timeout=self._timeout)

        self._call(f"DELETE {self._name(key)}", do)

    def copy(self, src_key: str, dst_key: str) -> ObjectMeta:
        def do() -> ObjectMeta:
            bucket = self._bucket()
            source, target = bucket.blob(src_key), bucket.blob(dst_key)
            token, _, _ = target.rewrite(source, retry=None, timeout=self._timeout)
            while token is not None:
                token, _, _ = target.rewrite(source, token=token, retry=None, timeout=self._timeout)
            return _meta(target)

        return self._call(f"COPY {self._name(src_key)} to {dst_key}", do)

    def set_mtime(self, key: str, mtime_ns: int) -> ObjectMeta:
        """One metadata PATCH, which GCS merges into the object's other metadata keys."""
        def do() -> ObjectMeta:
            blob = self._bucket().blob(key)
            blob.metadata = _mtime_metadata(mtime_ns)
            blob.patch(retry=None, timeout=self._timeout)
            return _meta(blob)

        return self._call(f"SET MTIME {self._name(key)}", do)


def _mtime_metadata(mtime_ns: int) -> dict[str, str]:
    return {mtime.MTIME_KEY: mtime.format_rfc3339(mtime_ns)}


def _hidden(name: str) -> bool:
    return name.startswith(UPLOADS)


def _marker(upload_id: str) -> str:
    return f"{UPLOADS}{upload_id}/upload"


def _part(upload_id: str, number: int) -> str:
    return f"{UPLOADS}{upload_id}/part-{number:05d}"


def _check_upload_id(upload_id: str, what: str) -> None:
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise NotFound(f"{what}: no such upload")


def _generation(etag: str, what: str) -> int:
    try:
        return int(etag)
    except ValueError:
        raise Stale(f"{what}: {etag!r} is not a generation of this object") from None


def _check_generation(blob: Any, expected: int | None, what: str) -> None:
    """Stale when the response reports another generation than the one the read is pinned to."""
    got = blob.generation
    if expected is not None and got is not None and int(got) != expected:
        raise Stale(f"{what}: the object changed (generation {got}, not {expected})")


def _meta(blob: Any) -> ObjectMeta:
    kept = mtime.from_metadata(blob.metadata, mtime.GSUTIL_MTIME_KEY)
    return ObjectMeta(str(blob.name), int(blob.size or 0), str(blob.generation),
                      _ns(blob.updated) if kept is None else kept)


def _ns(when: datetime.datetime | None) -> int:
    if when is None:
        return 0
    delta = when - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta // datetime.timedelta(microseconds=1)) * 1000


def _encode_token(server_token: str | None, skip: int) -> str:
    return f"{skip}:{server_token or ''}"


def _decode_token(token: str | None) -> tuple[str | None, int]:
    if not token:
        return None, 0
    skip, _, server = token.partition(":")
    return server or None, int(skip) if skip.isdigit() else 0
