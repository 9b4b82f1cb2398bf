"""Azure Blob Storage, and Azurite, through azure-storage-blob.

Versions: the blob's ETag (without its quotes) is `ObjectMeta.etag`. A read pinned to it sends
If-Match, which Azure answers with 412 (Stale) when the blob changed; the ETag the download
reports is compared as well.

Listing: `walk_blobs` (with a delimiter) or `list_blobs` (without), one page of at most `max_keys`
entries (prefixes count, as on S3) per call; the continuation token is Azure's marker.

Multipart uploads are staged blocks plus one commit, Azure's own way to build a block blob from
parts sent in any order and in parallel:
- a part is `stage_block` under a block id derived from the upload id, the part number and the
  MD5 of the data: one fixed-width text, `<16 hex>-<5 digits>-<32 hex>` (55 bytes; Azure allows 64,
  and every id of a blob must have the same length), which the SDK sends base64-encoded; the part's
  ETag is that MD5, so a replaced part has another block id and `commit_block_list` takes exactly
  the blocks named by the parts it is given (an unknown one is InvalidBlockList: NotFound);
- Azure has no upload ids, uncommitted blocks belong to the blob name: an upload is made real by
  a marker blob `.mountfs-uploads/<id>` (holding the key in its metadata), which `upload_part`
  checks after staging and `complete_multipart`/`abort_multipart` delete. The prefix is left out
  of every listing this adapter answers. Blocks of an aborted upload cannot be deleted one by one:
  Azure drops them at the blob's next commit or after a week.

`copy` is a server-side copy within the account, polled until it is done; it keeps the metadata.
`delete` of a missing blob is not an error.

Modification times: an mtime set through the mount is blob metadata "mtime" (RFC 3339, as rclone
writes it; see `mountfs.backends.mtime`), shown by HEAD and by listings (which ask for the metadata).
`set_blob_metadata` replaces the whole set, so `set_mtime` reads it first and writes it back merged,
pinned to the ETag it read; Azure gives the blob a new ETag for it (the bytes stay). Uploads carry
it from the start: `put` as the blob's metadata, a multipart upload in its commit.

Credentials: an account key (AzureNamedKeyCredential), a SAS, or a Microsoft Entra ID identity made
here from the settings: ClientSecretCredential for a service principal, DefaultAzureCredential for
the chain (environment, managed identity, az CLI). azure-identity is imported only then.

azure-core's retry policy is off (`retry_total=0`): `retry.call_with_retry` retries every adapter
the same way. SAS signatures are cut out of every message (connection errors quote request URLs),
and azure-core's per-request INFO log lines are silenced.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import functools
import hashlib
import logging
import os
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import requests.adapters
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential, TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobBlock, BlobPrefix, BlobServiceClient, ContainerClient
from urllib3.util.retry import Retry

from mountfs.backends import mtime
from mountfs.backends.base import ListPage, ObjectMeta, ObjectStore, UploadPart
from mountfs.backends.retry import ACCESS_CHECK_RETRY, call_with_retry, refused_for_good, root_cause
from mountfs.config import RetryConfig
from mountfs.config.azure import AzureSettings, Identity
from mountfs.errors import (
    AccessDenied,
    MountfsError,
    NameTooLong,
    NotFound,
    Rejected,
    Stale,
    StoreUnavailable,
    Throttled,
    Transient,
    Unsupported,
)

log = logging.getLogger(__name__)
# azure-core logs every request and response at INFO: far too much for a mount's log.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

T = TypeVar("T")

UPLOADS = ".mountfs-uploads/"
MAX_BLOCKS = 50_000
MAX_NAME_CHARS = 1024
MAX_SEGMENTS = 254
_UPLOAD_ID = re.compile(r"[0-9a-f]{16}")
_MD5 = re.compile(r"[0-9a-f]{32}")
_SIGNATURE = re.compile(r"(sig=)[^&\s'\"]+", re.IGNORECASE)
NOT_FOUND_CODES = {"BlobNotFound", "ContainerNotFound", "ResourceNotFound", "CannotVerifyCopySource"}
PART_CODES = {"InvalidBlockList", "InvalidBlockId"}
STALE_CODES = {"ConditionNotMet", "TargetConditionNotMet", "SourceConditionNotMet"}
DENIED_CODES = {"AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
                "AuthorizationResourceTypeMismatch", "AuthorizationServiceMismatch",
                "AuthorizationSourceIPMismatch", "AuthorizationProtocolMismatch",
                "InsufficientAccountPermissions", "AccountIsDisabled"}
TRANSIENT_CODES = {"ServerBusy", "InternalError", "OperationTimedOut", "IngressOverAccountLimit",
                   "EgressOverAccountLimit", "TooManyRequests"}
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
THROTTLED_STATUS = {429, 503}  # the store asks to slow down: never an instant retry
TRANSIENT_EXCEPTIONS = (ServiceRequestError, ServiceResponseError, requests.exceptions.ConnectionError,
                        requests.exceptions.Timeout, ConnectionError, TimeoutError)

_clients: dict[tuple[Any, ...], BlobServiceClient] = {}
_clients_lock = threading.Lock()


def scrub(text: str) -> str:
    """`text` without SAS signatures (request URLs in connection errors carry the SAS)."""
    return _SIGNATURE.sub(r"\1REDACTED", text)


class _PooledTransport(RequestsTransport):  # type: ignore[misc]
    """azure-core's requests transport, with as many pooled connections as there are worker threads
    (its own adapter keeps 10, and drops the others' connections after each request)."""

    def __init__(self, pool: int, **kwargs: Any) -> None:
        self._pool = pool
        super().__init__(**kwargs)

    def _init_session(self, session: requests.Session) -> None:
        super()._init_session(session)
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=self._pool, pool_maxsize=self._pool,
            max_retries=Retry(total=False, redirect=False, raise_on_status=False))
        for protocol in self._protocols:
            session.mount(protocol, adapter)


def client_for(settings: AzureSettings, timeout: float) -> BlobServiceClient:
    """One thread-safe client per account URL and credentials in each process (made anew after fork)."""
    ident = (os.getpid(), settings.account_url, settings.account, settings.account_key, settings.sas_token,
             settings.identity, settings.pool_connections, timeout)
    with _clients_lock:
        client = _clients.get(ident)
        if client is None:
            credential: AzureNamedKeyCredential | TokenCredential | str | None = None
            if settings.identity is not None:
                credential = identity_credential(settings.identity)
            elif settings.account_key:
                credential = AzureNamedKeyCredential(settings.account, settings.account_key)
            elif settings.sas_token:
                credential = settings.sas_token
            transport = _PooledTransport(settings.pool_connections, connection_timeout=timeout,
                                         read_timeout=timeout)
            client = BlobServiceClient(settings.account_url, credential=credential, retry_total=0,
                                       transport=transport)
            _clients[ident] = client
    return client


def identity_credential(identity: Identity) -> TokenCredential:
    """azure-identity's credential for `identity`: a service principal's, or the default chain."""
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    if identity.is_chain:
        return DefaultAzureCredential()
    assert identity.tenant_id and identity.client_id and identity.client_secret
    return ClientSecretCredential(identity.tenant_id, identity.client_id, identity.client_secret)


def _code(exc: HttpResponseError) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _reason(exc: HttpResponseError) -> str:
    message = str(getattr(exc, "message", "") or exc.reason or "")
    return scrub(message.strip().splitlines()[0] if message.strip() else "")


def translate(exc: Exception, what: str) -> Exception:
    """The mountfs error for an azure-storage-blob / azure-core failure of the request `what`."""
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        code = _code(exc)
        detail = f"{code or status} {_reason(exc)}".strip()
        if code == "ContainerNotFound":
            return NotFound(f"{what}: the container does not exist")
        if code == "InvalidResourceName":  # no container or blob can have that name: none is there
            return NotFound(f"{what}: Azure refuses the name ({code}: {_reason(exc)})")
        if code in PART_CODES:
            return NotFound(f"{what}: a part was not uploaded, or not with that ETag ({code})")
        if code in NOT_FOUND_CODES or status == 404:
            return NotFound(f"{what}: not found")
        if code in STALE_CODES or status == 412:
            return Stale(f"{what}: the object changed ({code or status})")
        if isinstance(exc, ClientAuthenticationError) and not status:  # the identity gave no token
            return AccessDenied(f"{what}: no access token from the identity: {_reason(exc)}")
        if isinstance(exc, ClientAuthenticationError) or code in DENIED_CODES or status in (401, 403):
            return AccessDenied(f"{what}: access denied ({code or status}); check the credentials")
        if code == "ServerBusy" or status in THROTTLED_STATUS:
            return Throttled(f"{what}: {detail}")
        if code in TRANSIENT_CODES or status in TRANSIENT_STATUS:
            return Transient(f"{what}: {detail}")
        if refused_for_good(status):
            return Rejected(f"{what}: refused by the store ({detail})")
        return StoreUnavailable(f"{what}: {detail}")
    if isinstance(exc, TRANSIENT_EXCEPTIONS):
        return Transient(f"{what}: {scrub(str(exc))}")
    return exc


def list_buckets(settings: AzureSettings, retry: RetryConfig) -> builtins.list[str]:
    """The names of the account's containers, for a mount of a whole account."""

    def do() -> builtins.list[str]:
        try:
            client = client_for(settings, retry.request_timeout)
            return [str(c.name) for c in client.list_containers(timeout=int(retry.request_timeout))]
        except MountfsError:
            raise
        except Exception as exc:
            raise translate(exc, f"list containers at {settings.account_url}") from exc

    return call_with_retry(do, retry, f"list containers at {settings.account_url}")


class AzureStore(ObjectStore):
    lists_multipart_uploads = True

    def check_key(self, key: str) -> None:
        """Blob names: at most 1024 characters and 254 path segments."""
        segments = len(key.rstrip("/").split("/"))
        if len(key) > MAX_NAME_CHARS or segments > MAX_SEGMENTS:
            raise NameTooLong(f"{key[:60]}...: {len(key)} characters in {segments} segments; Azure takes "
                              f"at most {MAX_NAME_CHARS} characters and {MAX_SEGMENTS} segments")

    def __init__(self, settings: AzureSettings, retry: RetryConfig) -> None:
        self.settings = settings
        self.retry = retry
        self.bucket = settings.container
        self.store_id = f"az://{settings.account_url}"
        self.endpoint = settings.account_url
        self._container: tuple[BlobServiceClient, ContainerClient] | None = None

    @property
    def container(self) -> ContainerClient:
        client = client_for(self.settings, self.retry.request_timeout)
        cached = self._container
        if cached is None or cached[0] is not client:
            cached = self._container = (client, client.get_container_client(self.bucket))
        return cached[1]

    def _call(self, what: str, fn: Callable[[], T], retry: RetryConfig | None = None) -> T:
        def attempt() -> T:
            try:
                return fn()
            except MountfsError:
                raise
            except Exception as exc:
                translated = translate(exc, what)
                if translated is exc:
                    raise
                if scrub(str(exc)) != str(exc):  # no SAS in a chained traceback either
                    raise translated from None
                raise translated from exc

        return call_with_retry(attempt, retry or self.retry, what)

    def _name(self, key: str) -> str:
        return f"az://{self.bucket}@{self.settings.account}/{key}"

    @property
    def _timeout(self) -> int:
        return max(1, int(self.retry.request_timeout))

    # --- reads -------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectMeta:
        def do() -> ObjectMeta:
            return _meta(key, self._properties(key))

        return self._call(f"HEAD {self._name(key)}", do)

    def _properties(self, key: str) -> Any:
        props = self.container.get_blob_client(key).get_blob_properties(timeout=self._timeout)
        if (props.metadata or {}).get("hdi_isfolder") == "true":  # a folder of an ADLS Gen2 account
            raise NotFound(f"HEAD {self._name(key)}: a directory, not a blob")
        return props

    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        if length <= 0:
            return b""
        what = f"GET {self._name(key)} bytes {start}+{length}"

        def do() -> bytes:
            blob = self.container.get_blob_client(key)
            pinned: dict[str, Any] = {}
            if etag:
                pinned = {"etag": f'"{etag}"', "match_condition": MatchConditions.IfNotModified}
            try:
                download = blob.download_blob(offset=start, length=length, max_concurrency=1,
                                              timeout=self._timeout, **pinned)
                data: bytes = download.readall()
            except HttpResponseError as exc:
                if exc.status_code != 416:
                    raise
                # the range starts at or past the end; the precondition still holds or fails
                if etag:
                    _check_etag(blob.get_blob_properties(timeout=self._timeout).etag, etag, what)
                return b""
            if etag:
                _check_etag(download.properties.etag, etag, what)
            return data

        return self._call(what, do)

    def _page(self, prefix: str, delimiter: str | None, token: str | None,
              max_keys: int) -> tuple[list[ObjectMeta], list[str], str | None]:
        container = self.container
        pager: Any
        if delimiter:
            pager = container.walk_blobs(name_starts_with=prefix or None, delimiter=delimiter,
                                         include=["metadata"], results_per_page=max_keys,
                                         timeout=self._timeout)
        else:
            pager = container.list_blobs(name_starts_with=prefix or None, include=["metadata"],
                                         results_per_page=max_keys, timeout=self._timeout)
        pages: Any = pager.by_page(continuation_token=token)
        objects: list[ObjectMeta] = []
        prefixes: list[str] = []
        for item in next(pages):
            if isinstance(item, BlobPrefix):
                prefixes.append(str(item.name))
            else:
                objects.append(_meta(str(item.name), item))
        next_token = pages.continuation_token
        return objects, prefixes, str(next_token) if next_token else None

    def list(self, prefix: str, delimiter: str | None = "/", token: str | None = None,
             max_keys: int = 1000) -> ListPage:
        while True:
            fetch = functools.partial(self._page, prefix, delimiter, token, max_keys)
            objects, prefixes, next_token = self._call(f"LIST {self._name(prefix)}", fetch)
            objects = [o for o in objects if not o.key.startswith(UPLOADS)]
            prefixes = [p for p in prefixes if not p.startswith(UPLOADS)]
            if objects or prefixes or next_token is None:
                return ListPage(objects, prefixes, next_token)
            token = next_token  # a page of hidden entries only: read on

    def check_access(self) -> None:
        def do() -> None:
            self._page("", "/", None, 1)

        try:
            self._call(f"LIST {self._name('')}", do, ACCESS_CHECK_RETRY)
        except NotFound as exc:
            answer = str(exc).partition(": ")[2]
            said = "" if answer in ("the container does not exist", "not found") else f"; {answer}"
            raise NotFound(f"container {self.bucket} does not exist in account {self.settings.account} "
                           f"at {self.settings.account_url}{said}") from exc
        except AccessDenied as exc:
            raise AccessDenied(f"{exc} (credentials: {self.settings.credentials_origin})") from exc
        except StoreUnavailable as exc:
            raise StoreUnavailable(
                f"cannot reach {self.settings.describe()}: {scrub(str(root_cause(exc)))}") from None

    # --- writes ------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
        def do() -> ObjectMeta:
            reply = self.container.get_blob_client(key).upload_blob(
                data, overwrite=True, length=len(data), metadata=_mtime_metadata(mtime_ns),
                timeout=self._timeout)
            when = _ns(reply["last_modified"]) if mtime_ns is None else mtime_ns
            return ObjectMeta(key, len(data), _etag(reply["etag"]), when)

        return self._call(f"PUT {self._name(key)}", do)

    def create_multipart(self, key: str, mtime_ns: int | None = None) -> str:
        """`mtime_ns` is ignored: the blob gets the one `complete_multipart` is given."""
        upload_id = uuid.uuid4().hex[:16]

        def do() -> None:
            self.container.get_blob_client(_marker(upload_id)).upload_blob(
                b"", overwrite=True, metadata={"mountfs_key": urllib.parse.quote(key, safe="")},
                timeout=self._timeout)

        self._call(f"CREATE MULTIPART {self._name(key)}", do)
        return upload_id

    def _check_upload(self, key: str, upload_id: str, what: str) -> None:
        """NotFound unless `upload_id` is an upload of `key` that is neither complete nor aborted."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise NotFound(f"{what}: no such upload")

        def do() -> str:
            props = self.container.get_blob_client(_marker(upload_id)).get_blob_properties(
                timeout=self._timeout)
            return urllib.parse.unquote((props.metadata or {}).get("mountfs_key", ""))

        try:
            owner = self._call(f"{what}: HEAD upload", do)
        except NotFound:
            owner = None
        if owner != key:
            raise NotFound(f"{what}: no such upload")

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> UploadPart:
        what = f"UPLOAD PART {number} {self._name(key)}"
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise NotFound(f"{what}: no such upload")
        if not 1 <= number <= MAX_BLOCKS:
            raise Unsupported(f"{what}: Azure takes part numbers 1 to {MAX_BLOCKS}")
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()

        def do() -> None:
            self.container.get_blob_client(key).stage_block(
                _block_id(upload_id, number, md5), data, length=len(data), timeout=self._timeout)

        self._call(what, do)
        self._check_upload(key, upload_id, what)  # after staging: an abort may have raced it
        return UploadPart(number, md5)

    def complete_multipart(self, key: str, upload_id: str, parts: builtins.list[UploadPart],
                           mtime_ns: int | None = None) -> ObjectMeta:
        what = f"COMPLETE MULTIPART {self._name(key)}"
        self._check_upload(key, upload_id, what)
        for part in parts:
            if not _MD5.fullmatch(part.etag) or not 1 <= part.number <= MAX_BLOCKS:
                raise NotFound(f"{what}: part {part.number} was not uploaded with ETag {part.etag}")
        blocks = [BlobBlock(_block_id(upload_id, p.number, p.etag))
                  for p in sorted(parts, key=lambda p: p.number)]

        def do() -> None:
            self.container.get_blob_client(key).commit_block_list(
                blocks, metadata=_mtime_metadata(mtime_ns), timeout=self._timeout)

        self._call(what, do)
        self._forget_upload(upload_id)
        return self.head(key)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        what = f"ABORT MULTIPART {self._name(key)}"
        self._check_upload(key, upload_id, what)
        self._forget_upload(upload_id)

    def multipart_uploads(self, key: str) -> builtins.list[tuple[str, float]]:
        """From the upload markers: each names the key it is for."""
        quoted = urllib.parse.quote(key, safe="")

        def do() -> builtins.list[tuple[str, float]]:
            found: builtins.list[tuple[str, float]] = []
            for blob in self.container.list_blobs(name_starts_with=UPLOADS, include=["metadata"],
                                                  timeout=self._timeout):
                upload_id = blob.name[len(UPLOADS):]
                if _UPLOAD_ID.fullmatch(upload_id) and (blob.metadata or {}).get("mountfs_key") == quoted:
                    created = blob.creation_time or blob.last_modified
                    found.append((upload_id, created.timestamp() if created else 0.0))
            return found

        return self._call(f"LIST MULTIPART UPLOADS {self._name(key)}", do)

    def _forget_upload(self, upload_id: str) -> None:
        try:
            self.delete(_marker(upload_id))
        except MountfsError as exc:  # only a leftover: hidden, and harmless
            log.warning("could not delete upload marker %s: %s", self._name(_marker(upload_id)), exc)

    def delete(self, key: str) -> None:
        def do() -> None:
            with contextlib.suppress(ResourceNotFoundError):
                self.container.get_blob_client(key).delete_blob(timeout=self._timeout)

        self._call(f"DELETE {self._name(key)}", do)

    def copy(self, src_key: str, dst_key: str) -> ObjectMeta:
        what = f"COPY {self._name(src_key)} to {dst_key}"

        def do() -> None:
            container = self.container
            target = container.get_blob_client(dst_key)
            status = target.start_copy_from_url(container.get_blob_client(src_key).url,
                                                timeout=self._timeout).get("copy_status")
            pause, deadline = 0.05, time.monotonic() + self.retry.budget
            while status == "pending" and time.monotonic() < deadline:
                time.sleep(pause)
                pause = min(1.0, pause * 2)
                status = target.get_blob_properties(timeout=self._timeout).copy.status
            if status != "success":
                raise StoreUnavailable(f"{what}: the copy is {status}")

        self._call(what, do)
        return self.head(dst_key)

    def set_mtime(self, key: str, mtime_ns: int) -> ObjectMeta:
        what = f"SET MTIME {self._name(key)}"
        for attempt in (1, 2):
            props = self._call(f"HEAD {self._name(key)}", functools.partial(self._properties, key))
            if mtime.from_metadata(props.metadata) == mtime_ns:
                return _meta(key, props)  # already there (a retried request that had gone through)
            metadata = mtime.without_mtime(props.metadata) | _mtime_metadata(mtime_ns)

            def do(props: Any = props, metadata: dict[str, str] = metadata) -> str:
                reply = self.container.get_blob_client(key).set_blob_metadata(
                    metadata, etag=props.etag, match_condition=MatchConditions.IfNotModified,
                    timeout=self._timeout)
                return _etag(str(reply.get("etag") or ""))

            try:
                etag = self._call(what, do)
            except Stale:
                if attempt == 2:
                    raise
                log.info("%s changed while its mtime was set; once more on the new version", what)
                continue
            return ObjectMeta(key, int(props.size), etag, mtime_ns)
        raise AssertionError("unreachable")


def _meta(key: str, props: Any) -> ObjectMeta:
    """From blob properties (a HEAD, or a listing item with its metadata)."""
    kept = mtime.from_metadata(props.metadata)
    when = _ns(props.last_modified) if kept is None else kept
    return ObjectMeta(key, int(props.size), _etag(props.etag), when)


def _mtime_metadata(mtime_ns: int | None) -> dict[str, str]:
    return {} if mtime_ns is None else {mtime.MTIME_KEY: mtime.format_rfc3339(mtime_ns)}


def _marker(upload_id: str) -> str:
    return f"{UPLOADS}{upload_id}"


def _block_id(upload_id: str, number: int, md5: str) -> str:
    return f"{upload_id}-{number:05d}-{md5}"  # the SDK sends it base64-encoded


def _etag(raw: str | None) -> str:
    return (raw or "").strip('"')


def _check_etag(got: str | None, expected: str, what: str) -> None:
    if got is not None and _etag(got) != expected:
        raise Stale(f"{what}: the object changed (ETag {_etag(got)}, not {expected})")


def _ns(when: datetime.datetime | None) -> int:
    if when is None:
        return 0
    delta = when - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta // datetime.timedelta(microseconds=1)) * 1000
