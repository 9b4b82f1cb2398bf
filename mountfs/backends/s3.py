"""Amazon S3 and S3-compatible servers (MinIO, SeaweedFS, ...) through boto3.

botocore's own retries are off: `retry.call_with_retry` retries every adapter the same way, and
a ranged GET is retried whole, body included, since a reset mid-body is as transient as a 503.
Reads are pinned with If-Match to the ETag seen at open, so a changed object is ESTALE, never a
mix of two versions.

Modification times: an mtime set through the mount is kept as user metadata (`X-Amz-Meta-Mtime`,
decimal seconds, as rclone writes it; see `mountfs.backends.mtime`) and HEAD shows it. Listings
cannot: ListObjectsV2 carries no metadata, so what a listing shows is LastModified (flagged
`last_modified_only`). `set_mtime` copies the object onto itself with the new metadata (CopyObject,
MetadataDirective REPLACE, keeping content type and encoding, cache control and the other user
metadata); above 5 GiB, the limit of one CopyObject, it is a multipart copy (UploadPartCopy), still
server-side. A copy resets the object's ACL to the bucket's default, as every S3 copy does.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime
import email.utils
import functools
import hashlib
import http.client
import logging
import os
import ssl
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.session
import botocore.utils

from mountfs.backends import mtime
from mountfs.backends.base import ListPage, ObjectMeta, ObjectStore, UploadPart
from mountfs.backends.retry import ACCESS_CHECK_RETRY, call_translated, refused_for_good, root_cause
from mountfs.backends.s3_get import Credentials, S3Error, S3Reads, object_url
from mountfs.buffers import Piece
from mountfs.config import RetryConfig
from mountfs.config.s3 import OWN_HINT, S3Settings
from mountfs.errors import (
    AccessDenied,
    Misconfigured,
    NoCredentials,
    NotFound,
    Rejected,
    Stale,
    StoreUnavailable,
    Throttled,
    Transient,
    Unsupported,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchUpload", "InvalidPart"}
DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem"}
STALE_CODES = {"412", "PreconditionFailed"}
TRANSIENT_CODES = {"500", "502", "503", "504", "429", "SlowDown", "InternalError", "ServiceUnavailable",
                   "RequestTimeout", "RequestTimeTooSkewed", "Throttling", "ThrottlingException",
                   "RequestLimitExceeded", "BandwidthLimitExceeded", "OperationAborted",
                   "IncompleteBody", "BadDigest", "XAmzContentSHA256Mismatch"}  # 400s: hurt in transit
THROTTLED_CODES = {"503", "429", "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                   "BandwidthLimitExceeded"}
TRANSIENT_EXCEPTIONS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.HTTPClientError,
    ConnectionError,  # also the ranged GETs of s3_get (http1): resets, short bodies, bad answers
    TimeoutError,
)

_clients: dict[tuple[Any, ...], S3Client] = {}
_readers: dict[tuple[Any, ...], S3Reads] = {}
_clients_lock = threading.Lock()


def fast_timestamp(text: str) -> datetime.datetime:
    """S3 timestamps without dateutil: botocore's default parser cost a third of every LIST.

    Listings carry ISO 8601 ("2026-11-22T00:54:55.000Z"), HEAD answers RFC 1123 dates; anything
    else goes to botocore's own parser.
    """
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        parsed: datetime.datetime = botocore.utils.parse_timestamp(text)
        return parsed


def client_for(settings: S3Settings, timeout: float) -> S3Client:
    """One thread-safe client per endpoint and credentials in each process (made anew after fork).
    The endpoint, region and addressing style are the ones `s3_settings.resolve` decided, given
    explicitly: botocore must not decide them again differently from mountfs's own GETs."""
    ident = (os.getpid(), settings.endpoint_url, settings.region, settings.key, settings.secret,
             settings.token, settings.verify, settings.pool_connections, settings.addressing_style, timeout,
             settings.role_arn, settings.external_id, settings.role_session_name)
    with _clients_lock:
        client = _clients.get(ident)
        if client is None:
            if settings.role_arn:  # the role's refreshing credentials, shared with mountfs's own GETs
                session = boto3.session.Session(botocore_session=_session_with(
                    _role_credentials(settings, timeout)), region_name=settings.region)
            else:
                session = boto3.session.Session(
                    aws_access_key_id=settings.key, aws_secret_access_key=settings.secret,
                    aws_session_token=settings.token, region_name=settings.region)
            session._session.get_component("response_parser_factory").set_parser_defaults(
                timestamp_parser=fast_timestamp)
            client = session.client(
                "s3", endpoint_url=settings.endpoint_url, verify=settings.verify,
                config=botocore.config.Config(
                    max_pool_connections=settings.pool_connections,
                    # total_max_attempts, not max_attempts (which counts retries): one try
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=timeout, read_timeout=timeout,
                    signature_version="s3v4",
                    s3={"addressing_style": settings.addressing_style}))
            _clients[ident] = client
    return client


def reads_for(settings: S3Settings, timeout: float) -> S3Reads:
    """One pool of GET and LIST connections per endpoint and credentials in each process, signing
    with the credentials boto3 resolves (so the chain's refreshable ones refresh)."""
    ident = ("get", os.getpid(), settings, timeout)
    with _clients_lock:
        reads = _readers.get(ident)
        if reads is None:
            reads = _readers[ident] = S3Reads(settings, _credentials_source(settings, timeout), timeout)
    return reads


_roles: dict[tuple[Any, ...], botocore.credentials.Credentials] = {}


def _role_credentials(settings: S3Settings, timeout: float) -> botocore.credentials.Credentials:
    """The assumed role's credentials, one set per process: botocore's AssumeRole fetcher, called
    on first use and again before they expire. STS is asked at the store's own endpoint when it has
    one (MinIO, moto, ...; AWS_ENDPOINT_URL_STS still wins), else at AWS."""
    ident = (os.getpid(), settings.role_arn, settings.external_id, settings.role_session_name,
             settings.endpoint_url, settings.region, settings.key, settings.secret, settings.token,
             settings.verify, timeout)
    with _roles_lock:
        found = _roles.get(ident)
        if found is not None:
            return found
        if settings.uses_chain:
            source = botocore.session.Session().get_credentials()
            if source is None:
                raise botocore.exceptions.NoCredentialsError()
        else:
            source = botocore.credentials.Credentials(
                settings.key or "", settings.secret or "", settings.token)
        sts_endpoint = None if os.environ.get("AWS_ENDPOINT_URL_STS") else settings.endpoint_url
        config = botocore.config.Config(connect_timeout=timeout, read_timeout=timeout)

        def sts_client(service: str, **credentials: Any) -> Any:
            return botocore.session.Session().create_client(
                service, region_name=settings.region, endpoint_url=sts_endpoint, verify=settings.verify,
                config=config, **credentials)

        extra: dict[str, str] = {}
        if settings.external_id:
            extra["ExternalId"] = settings.external_id
        if settings.role_session_name:
            extra["RoleSessionName"] = settings.role_session_name
        fetcher = botocore.credentials.AssumeRoleCredentialFetcher(
            sts_client, source, settings.role_arn or "", extra_args=extra)
        found = _roles[ident] = botocore.credentials.DeferredRefreshableCredentials(
            fetcher.fetch_credentials, "assume-role")
        return found


_roles_lock = threading.Lock()


def _session_with(credentials: botocore.credentials.Credentials) -> botocore.session.Session:
    """A botocore session whose only credentials are these."""

    class Given(botocore.credentials.CredentialProvider):
        METHOD = "mountfs"

        def load(self) -> botocore.credentials.Credentials:
            return credentials

    session = botocore.session.Session()
    session.register_component("credential_provider", botocore.credentials.CredentialResolver([Given()]))
    return session


def _credentials_source(settings: S3Settings, timeout: float) -> Callable[[], Credentials]:
    if settings.role_arn:
        resolved: botocore.credentials.Credentials | None = _role_credentials(settings, timeout)
    elif not settings.uses_chain:
        fixed = Credentials(settings.key or "", settings.secret or "", settings.token)
        return lambda: fixed
    else:
        resolved = boto3.session.Session(region_name=settings.region).get_credentials()

    def current() -> Credentials:
        frozen = resolved.get_frozen_credentials() if resolved is not None else None
        if frozen is None or frozen.access_key is None or frozen.secret_key is None:
            raise botocore.exceptions.NoCredentialsError()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    return current


MAX_CA_BUNDLE = 4 << 20  # bytes: certifi's whole bundle is a tenth of it


def _is_url(verify: bool | str) -> bool:
    return isinstance(verify, str) and verify.lower().startswith("https://")


def fetch_ca_bundle(url: str, directory: str, timeout: float) -> str:
    """The CA bundle at `url` (https), fetched now and saved in `directory`: the path of the copy.
    Raises Misconfigured naming the URL when it cannot be fetched or holds no certificate."""
    what = f"verify = {url!r}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            if not reply.geturl().lower().startswith("https://"):
                raise Misconfigured(f"{what}: redirected to a plain-http URL; the CA bundle is not fetched")
            data = reply.read(MAX_CA_BUNDLE + 1)
    except urllib.error.HTTPError as exc:
        raise Misconfigured(f"{what}: cannot fetch the CA bundle: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise Misconfigured(f"{what}: cannot fetch the CA bundle: {exc.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise Misconfigured(f"{what}: cannot fetch the CA bundle: {exc or type(exc).__name__}") from None
    if len(data) > MAX_CA_BUNDLE:
        raise Misconfigured(f"{what}: the CA bundle is larger than {MAX_CA_BUNDLE >> 20} MiB")
    try:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, hashlib.sha256(url.encode()).hexdigest()[:24] + ".pem")
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".fetch-", delete=False) as out:
            out.write(data)
        try:
            ssl.create_default_context(cafile=out.name)
        except ssl.SSLError:
            os.unlink(out.name)
            raise Misconfigured(f"{what}: what the URL serves is not a PEM CA bundle") from None
        os.replace(out.name, path)  # whole, even with another mount saving the same one
    except OSError as exc:
        raise Misconfigured(f"{what}: cannot save the CA bundle in {directory}: {exc.strerror}") from None
    return path


def _bucket_region(client: S3Client, bucket: str) -> str | None:
    """The region a bucket says it is in (HeadBucket's x-amz-bucket-region, which AWS sends with a
    redirect or a refusal too); None when there is no answer: the access check then says why."""
    try:
        headers = client.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]
    except botocore.exceptions.ClientError as exc:
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        log.debug("the region of s3://%s is not known: %s", bucket, exc)
        return None
    region = headers.get("x-amz-bucket-region")
    return str(region) if region else None


def store_id(settings: S3Settings) -> str:
    """The store's name in cache keys, upload journals and log lines: "s3://host:port" (the start
    of the object's s3:// URL) for an endpoint of its own, "s3://aws" for AWS."""
    if settings.endpoint_url is None:
        return "s3://aws"
    parts = urllib.parse.urlsplit(settings.endpoint_url)
    return f"s3://{parts.netloc}{parts.path.rstrip('/')}"


def _behind_proxy(settings: S3Settings) -> bool:
    base, host, _ = object_url(settings, None)
    proxies = urllib.request.getproxies()
    if base.partition("://")[0] not in proxies:
        return False
    return not urllib.request.proxy_bypass(urllib.parse.urlsplit(base).hostname or host)


def translate(exc: Exception, what: str, credentials_hint: str = OWN_HINT) -> Exception:
    """The mountfs error for a boto3/botocore (or s3_get) failure of the request `what`;
    `credentials_hint` says what to set when no credentials are found (the settings' own keys)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return _answer_error(str(error.get("Code", "")), status, str(error.get("Message", "")), what)
    if isinstance(exc, S3Error):
        return _answer_error(exc.code, str(exc.status), exc.message, what)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return NoCredentials(f"{what}: no credentials found ({credentials_hint})")
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return AccessDenied(f"{what}: {exc} (check AWS_PROFILE and the shared credentials file)")
    if isinstance(exc, ssl.SSLCertVerificationError):  # retrying cannot help: say what to set
        return Misconfigured(f"{what}: the server's TLS certificate is not trusted "
                                f"({exc.verify_message}); name its CA bundle with verify = \"/path/ca.pem\" "
                                f"in its [[s3.credentials]] entry (or verify = false)")
    if isinstance(exc, (botocore.exceptions.SSLError, ssl.SSLError)) and _not_tls(exc):
        return Misconfigured(f"{what}: the server does not answer in TLS (https); for a plain-http "
                                "endpoint set secure = false in its [[s3.credentials]] entry (or name it "
                                "http://host:port in endpoint or AWS_ENDPOINT_URL)")
    if isinstance(exc, botocore.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return Misconfigured(f"{what}: the server's TLS certificate is not trusted; name its CA "
                                "bundle with verify = \"/path/ca.pem\" in its [[s3.credentials]] entry "
                                "(or verify = false)")
    if isinstance(exc, (*TRANSIENT_EXCEPTIONS, ssl.SSLError, botocore.exceptions.SSLError)):
        return Transient(f"{what}: {exc}")
    return exc


def _translate_for(settings: S3Settings) -> Callable[[Exception, str], Exception]:
    return functools.partial(translate, credentials_hint=settings.credentials_hint)


def _not_tls(exc: Exception) -> bool:
    """A TLS handshake answered by a server speaking plain HTTP: retrying cannot help."""
    text = str(exc)
    return "WRONG_VERSION_NUMBER" in text or "wrong version number" in text or (
        isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) == "WRONG_VERSION_NUMBER")


def _answer_error(code: str, status: str, message: str, what: str) -> Exception:
    detail = f"{code or status} {message}".strip()
    if code == "NoSuchBucket":
        return NotFound(f"{what}: the bucket does not exist")
    if code in NOT_FOUND_CODES or status == "404":
        return NotFound(f"{what}: not found")
    if code in STALE_CODES or status == "412":
        return Stale(f"{what}: the object changed ({detail})")
    if code in DENIED_CODES or status == "403":
        return AccessDenied(f"{what}: access denied ({code or status}); check the credentials")
    if code in THROTTLED_CODES or status in THROTTLED_CODES:
        return Throttled(f"{what}: {detail}")
    if code in TRANSIENT_CODES or status in TRANSIENT_CODES:
        return Transient(f"{what}: {detail}")
    if status.isdigit() and refused_for_good(int(status)):
        return Rejected(f"{what}: refused by the store ({detail})")
    return StoreUnavailable(f"{what}: {detail}")


def list_buckets(settings: S3Settings, retry: RetryConfig, *,
                 regions: bool = False) -> builtins.list[tuple[str, str | None]]:
    """The buckets the credentials see at the endpoint (ListBuckets), for a mount of a whole
    endpoint: (name, region or None). `regions`: each bucket's region, as AWS's answer says it, else
    asked of the bucket (GetBucketLocation), several at once."""
    where = settings.endpoint_url or f"AWS {settings.region}"
    client = client_for(settings, retry.request_timeout)

    def do() -> builtins.list[tuple[str, str | None]]:
        reply = client.list_buckets()
        return [(str(b["Name"]), b.get("BucketRegion") or None) for b in reply.get("Buckets", [])
                if b.get("Name")]

    found = call_translated(do, _translate_for(settings), retry, f"ListBuckets at {where}")
    if not regions:
        return found

    def region_of(item: tuple[str, str | None]) -> tuple[str, str | None]:
        name, region = item
        if region:
            return item

        def ask() -> str | None:
            # None means us-east-1, and the old "EU" means eu-west-1
            location = client.get_bucket_location(Bucket=name).get("LocationConstraint")
            return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)

        try:
            return name, call_translated(ask, translate, retry, f"GetBucketLocation {name}")
        except (AccessDenied, Rejected, NotFound):  # not ours to ask: the configured region it is
            return name, None

    with ThreadPoolExecutor(8) as pool:
        return builtins.list(pool.map(region_of, found))


class S3Store(ObjectStore):
    max_key_bytes = 1024
    lists_multipart_uploads = True

    def __init__(self, settings: S3Settings, retry: RetryConfig) -> None:
        self.settings = settings
        self.retry = retry
        self.bucket = settings.bucket
        self.store_id = store_id(settings)
        self.endpoint = settings.endpoint_url or object_url(settings, None)[0]
        self.endpoint_source = settings.endpoint_source
        old_id = f"s3://{settings.endpoint_url or 'aws'}"  # up to this version: "s3://http://host:port"
        self.former_ids = (old_id,) if settings.endpoint_source == "URL" else ()
        # GETs and LISTs go out over mountfs's own connections, which know no proxies: through
        # an HTTP(S)_PROXY (that NO_PROXY does not exempt) they go with botocore, as it would.
        self.proxied = _behind_proxy(settings)
        self.upload_concurrency = settings.upload_concurrency
        self._opened = not (_is_url(settings.verify) or settings.ask_region)
        self._open_lock = threading.Lock()

    @property
    def supports_multipart(self) -> bool:
        return self.settings.multipart

    @property
    def client(self) -> S3Client:
        self._open()
        return client_for(self.settings, self.retry.request_timeout)

    def _open(self) -> None:
        """What the store needs once before its first request: the CA bundle named by URL, fetched
        and saved under the cache dir; the bucket's own region when none is configured (AWS)."""
        if self._opened:
            return
        with self._open_lock:
            if self._opened:
                return
            settings = self.settings
            if isinstance(settings.verify, str) and _is_url(settings.verify):
                bundle = fetch_ca_bundle(settings.verify, settings.ca_dir or tempfile.gettempdir(),
                                         self.retry.request_timeout)
                settings = dataclasses.replace(settings, verify=bundle)
            if settings.ask_region:
                region = _bucket_region(client_for(settings, self.retry.request_timeout), self.bucket)
                if region and region != settings.region:
                    log.info("s3://%s is in %s", self.bucket, region)
                    settings = dataclasses.replace(settings, region=region)
                settings = dataclasses.replace(settings, ask_region=False)
            self.settings = settings
            self.endpoint = settings.endpoint_url or object_url(settings, None)[0]  # the region's
            self._opened = True

    def _reads(self) -> S3Reads:
        self._open()
        return reads_for(self.settings, self.retry.request_timeout)

    def _call(self, what: str, fn: Callable[[], T], retry: RetryConfig | None = None) -> T:
        return call_translated(fn, _translate_for(self.settings), retry or self.retry, what)

    def _name(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _sse(self) -> dict[str, Any]:
        """What every object written carries besides metadata: encryption, storage class, ACL."""
        return self.settings.extra_args.request_args()

    def _metadata(self, mtime_ns: int | None, kept: dict[str, str] | None = None) -> dict[str, Any]:
        """The user metadata of an object written, as keyword arguments: `kept` (an earlier
        version's), the configured metadata over it, and the modification time."""
        metadata = dict(kept or {}) | dict(self.settings.extra_args.metadata)
        if mtime_ns is not None:
            metadata[mtime.MTIME_KEY] = mtime.format_seconds(mtime_ns)
        return {"Metadata": metadata} if metadata else {}

    # --- reads -------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectMeta:
        return _head_meta(key, self._head(key))

    def _head(self, key: str) -> dict[str, Any]:
        def do() -> dict[str, Any]:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))

        return self._call(f"HEAD {self._name(key)}", do)

    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        pieces = self.get_pieces(key, start, length, max(length, 1), etag)
        return bytes(pieces[0]) if pieces else b""

    def get_pieces(self, key: str, start: int, length: int, piece: int,
                   etag: str | None = None) -> builtins.list[Piece]:
        if length <= 0:
            return []

        def do() -> builtins.list[Piece]:
            if self.proxied:
                return self._get_with_sdk(key, start, length, piece, etag)
            reads = self._reads()
            return reads.get_pieces(key, start, length, piece, etag)

        return self._call(f"GET {self._name(key)} bytes {start}+{length}", do)

    def _get_with_sdk(self, key: str, start: int, length: int, piece: int,
                      etag: str | None) -> builtins.list[Piece]:
        """A ranged GET through botocore: for endpoints reached through an HTTP proxy."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key,
                                "Range": f"bytes={start}-{start + length - 1}"}
        if etag:
            args["IfMatch"] = f'"{etag}"'
        try:
            body = self.client.get_object(**args)["Body"]
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")) == "416":
                return []  # the range starts at or past the end of the object
            raise
        pieces: builtins.list[Piece] = []
        while chunk := body.read(piece):
            while len(chunk) < piece and (more := body.read(piece - len(chunk))):
                chunk += more
            pieces.append(chunk)
        return pieces

    def list(self, prefix: str, delimiter: str | None = "/", token: str | None = None,
             max_keys: int = 1000) -> ListPage:
        def do() -> ListPage:
            if self.proxied:
                return self._list_with_sdk(prefix, delimiter, token, max_keys)
            page = self._reads().list_page(
                prefix, delimiter, token, max_keys)
            objects = [ObjectMeta(o.key, o.size, _etag(o.etag),
                                  _ns(fast_timestamp(o.last_modified).timestamp()), last_modified_only=True)
                       for o in page.objects]
            return ListPage(objects, page.prefixes, page.next_token)

        return self._call(f"LIST {self._name(prefix)}", do)

    def _list_with_sdk(self, prefix: str, delimiter: str | None, token: str | None,
                       max_keys: int) -> ListPage:
        """A listing through botocore: for endpoints reached through an HTTP proxy."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            args["Delimiter"] = delimiter
        if token:
            args["ContinuationToken"] = token
        reply = self.client.list_objects_v2(**args)
        objects = [ObjectMeta(o["Key"], o["Size"], _etag(o.get("ETag", "")),
                              _ns(o["LastModified"].timestamp()), last_modified_only=True)
                   for o in reply.get("Contents", [])]
        prefixes = [p["Prefix"] for p in reply.get("CommonPrefixes", [])]
        more = reply.get("IsTruncated") and reply.get("NextContinuationToken")
        return ListPage(objects, prefixes, str(more) if more else None)

    def prepare(self) -> None:
        """boto3's client: loading its service model costs about 0.15 s of CPU, which the first
        HEAD after a mount waited for."""
        self.client  # noqa: B018 (made and kept for this process)

    def check_access(self) -> None:
        self._open()

        def do() -> None:
            self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)

        try:
            self._call(f"LIST {self._name('')}", do, ACCESS_CHECK_RETRY)
        except NotFound as exc:
            where = self.settings.describe().partition(" at ")[2]
            raise NotFound(f"bucket {self.bucket} does not exist at {where}") from exc
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"cannot reach {self.settings.describe()}: {root_cause(exc)}") from exc

    # --- writes ------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, mtime_ns: int | None = None) -> ObjectMeta:
        def do() -> None:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **self._metadata(mtime_ns),
                                   **self._sse())

        self._call(f"PUT {self._name(key)}", do)
        return self.head(key)  # a PUT answer has no Last-Modified; HEAD is what readers will see

    def put_etag(self, key: str, data: bytes) -> str:
        """The PUT's own answer carries the ETag: no HEAD."""
        def do() -> str:
            reply = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **self._sse())
            return _etag(reply["ETag"])

        return self._call(f"PUT {self._name(key)}", do)

    def create_multipart(self, key: str, mtime_ns: int | None = None) -> str:
        if not self.settings.multipart:
            raise Unsupported(f"multipart uploads are off for {self.settings.describe()}")

        def do() -> str:
            return self.client.create_multipart_upload(Bucket=self.bucket, Key=key,
                                                       **self._metadata(mtime_ns), **self._sse())["UploadId"]

        return self._call(f"CREATE MULTIPART {self._name(key)}", do)

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> UploadPart:
        def do() -> UploadPart:
            reply = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                            PartNumber=number, Body=data)
            return UploadPart(number, _etag(reply["ETag"]))

        return self._call(f"UPLOAD PART {number} {self._name(key)}", do)

    def complete_multipart(self, key: str, upload_id: str, parts: builtins.list[UploadPart],
                           mtime_ns: int | None = None) -> ObjectMeta:
        """`mtime_ns` is ignored: S3 gives the object the metadata of `create_multipart`."""
        def do() -> None:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'}
                                           for p in sorted(parts, key=lambda p: p.number)]})

        self._call(f"COMPLETE MULTIPART {self._name(key)}", do)
        return self.head(key)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        def do() -> None:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

        self._call(f"ABORT MULTIPART {self._name(key)}", do)

    def multipart_uploads(self, key: str) -> builtins.list[tuple[str, float]]:
        def do() -> builtins.list[tuple[str, float]]:
            if self.proxied:
                return self._multipart_uploads_with_sdk(key)
            reads = self._reads()
            found: builtins.list[tuple[str, float]] = []
            key_marker: str | None = None
            upload_marker: str | None = None
            while True:
                page = reads.list_uploads_page(key, key_marker, upload_marker)
                found.extend((upload_id, fast_timestamp(initiated).timestamp())
                             for name, upload_id, initiated in page.uploads
                             if name == key and upload_id and initiated)
                if page.next_key_marker is None and page.next_upload_id_marker is None:
                    return found
                key_marker, upload_marker = page.next_key_marker, page.next_upload_id_marker

        return self._call(f"LIST MULTIPART UPLOADS {self._name(key)}", do)

    def multipart_parts(self, key: str, upload_id: str) -> builtins.list[tuple[UploadPart, int]]:
        def do() -> builtins.list[tuple[UploadPart, int]]:
            found: builtins.list[tuple[UploadPart, int]] = []
            pages = self.client.get_paginator("list_parts")
            for page in pages.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                found.extend((UploadPart(p["PartNumber"], _etag(p["ETag"])), p["Size"])
                             for p in page.get("Parts", [])
                             if "PartNumber" in p and "ETag" in p and "Size" in p)
            return found

        return self._call(f"LIST PARTS {self._name(key)}", do)

    def _multipart_uploads_with_sdk(self, key: str) -> builtins.list[tuple[str, float]]:
        """The uploads of `key` listed through botocore: for endpoints reached through an HTTP proxy."""
        found: builtins.list[tuple[str, float]] = []
        pages = self.client.get_paginator("list_multipart_uploads")
        for page in pages.paginate(Bucket=self.bucket, Prefix=key):
            found.extend((u["UploadId"], u["Initiated"].timestamp()) for u in page.get("Uploads", [])
                         if u.get("Key") == key and "UploadId" in u and "Initiated" in u)
        return found

    def delete(self, key: str) -> None:
        def do() -> None:
            self.client.delete_object(Bucket=self.bucket, Key=key)

        self._call(f"DELETE {self._name(key)}", do)

    def copy(self, src_key: str, dst_key: str) -> ObjectMeta:
        """A server-side copy, written as an upload would be (extra_args). One CopyObject copies at
        most 5 GiB: a larger source is copied in parts, with its metadata and content headers (the
        first answer says so: no HEAD first). With configured metadata, the source's is read first
        and the copy REPLACEs it with both."""
        if self.settings.extra_args.metadata:
            source = self._head(src_key)
            meta = _head_meta(src_key, source)
            metadata = self._metadata(None, source.get("Metadata"))["Metadata"]
            if meta.size > self.copy_limit:
                self._copy_in_parts(src_key, meta.size, f'"{meta.etag}"', metadata,
                                    self._kept_on_copy(source), dst_key=dst_key)
            else:
                self._copy_in_place(src_key, f'"{meta.etag}"', metadata, self._kept_on_copy(source),
                                    dst_key=dst_key)
            return self.head(dst_key)

        def do() -> bool:
            try:
                self.client.copy_object(Bucket=self.bucket, Key=dst_key, **self._sse(),
                                        CopySource={"Bucket": self.bucket, "Key": src_key})
            except botocore.exceptions.ClientError as exc:
                if _too_large_to_copy(exc):
                    return False
                raise
            return True

        if not self._call(f"COPY {self._name(src_key)} to {dst_key}", do):
            source = self._head(src_key)
            meta = _head_meta(src_key, source)
            self._copy_in_parts(src_key, meta.size, f'"{meta.etag}"', dict(source.get("Metadata") or {}),
                                self._kept_on_copy(source), dst_key=dst_key)
        return self.head(dst_key)

    # --- modification time: a copy in place with new metadata -------------------------------

    copy_limit = 5 << 30  # the largest object one CopyObject copies

    def _kept_on_copy(self, head: dict[str, Any]) -> dict[str, Any]:
        """What a copy that sets its own metadata (REPLACE, or a multipart copy) must repeat from
        the source's HEAD: content headers, storage class and SSE-KMS key."""
        kept: dict[str, Any] = {field: head[field] for field in _KEPT_ON_COPY if head.get(field)}
        if head.get("StorageClass") not in (None, "STANDARD"):
            kept["StorageClass"] = head["StorageClass"]
        kept |= self._sse()
        if "ServerSideEncryption" not in kept and head.get("ServerSideEncryption") == "aws:kms":
            kept |= {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": head.get("SSEKMSKeyId")}
        return kept
    copy_part_size = 512 << 20  # parts of a multipart copy above it
    copy_concurrency = 8

    def set_mtime(self, key: str, mtime_ns: int) -> ObjectMeta:
        name = self._name(key)
        for attempt in (1, 2):
            reply = self._head(key)
            meta = _head_meta(key, reply)
            if mtime.from_metadata(reply.get("Metadata")) == mtime_ns:
                return meta  # already there (a retried request that had gone through)
            metadata = self._metadata(mtime_ns, mtime.without_mtime(reply.get("Metadata")))["Metadata"]
            kept = self._kept_on_copy(reply)
            if_match = f'"{meta.etag}"'
            try:
                if meta.size > self.copy_limit:
                    etag = self._copy_in_parts(key, meta.size, if_match, metadata, kept)
                else:
                    etag = self._copy_in_place(key, if_match, metadata, kept)
            except Stale:
                if attempt == 2:
                    raise
                log.info("%s changed while its mtime was set; once more on the new version", name)
                continue
            return ObjectMeta(key, meta.size, etag or self.head(key).etag, mtime_ns)
        raise AssertionError("unreachable")

    def _copy_in_place(self, key: str, if_match: str, metadata: dict[str, str], kept: dict[str, Any],
                       *, dst_key: str | None = None) -> str:
        """One CopyObject of `key` (onto itself by default) with `metadata` in place of its own."""
        label = "SET MTIME (COPY)" if dst_key is None else f"COPY TO {dst_key}"

        def do() -> str:
            reply = self.client.copy_object(
                Bucket=self.bucket, Key=key if dst_key is None else dst_key,
                CopySource={"Bucket": self.bucket, "Key": key},
                CopySourceIfMatch=if_match, MetadataDirective="REPLACE", Metadata=metadata, **kept)
            return _etag(reply.get("CopyObjectResult", {}).get("ETag", ""))

        return self._call(f"{label} {self._name(key)}", do)

    def _copy_in_parts(self, key: str, size: int, if_match: str, metadata: dict[str, str],
                       kept: dict[str, Any], *, dst_key: str | None = None) -> str:
        """A multipart copy of `key` (onto itself by default) with `metadata`, parts copied in
        parallel on the server; the upload is aborted if any part fails."""
        name = self._name(key)
        label = "SET MTIME" if dst_key is None else f"COPY TO {dst_key}"
        source, key = key, dst_key if dst_key is not None else key
        part_size = max(self.copy_part_size, -(-size // 10_000))
        ranges = [(start, min(size, start + part_size) - 1) for start in range(0, size, part_size)]

        def create() -> str:
            return self.client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=metadata,
                                                       **kept)["UploadId"]

        upload_id = self._call(f"{label} (CREATE MULTIPART COPY) {name}", create)

        def copy_part(number: int) -> CompletedPartTypeDef:
            first, last = ranges[number - 1]

            def do() -> CompletedPartTypeDef:
                reply = self.client.upload_part_copy(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": source}, CopySourceIfMatch=if_match,
                    CopySourceRange=f"bytes={first}-{last}")
                return {"PartNumber": number, "ETag": reply["CopyPartResult"]["ETag"]}

            return self._call(f"{label} (COPY PART {number}) {name}", do)

        try:
            with ThreadPoolExecutor(min(self.copy_concurrency, len(ranges))) as pool:
                parts = list(pool.map(copy_part, range(1, len(ranges) + 1)))

            def complete() -> str:
                reply = self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
                return _etag(reply.get("ETag", ""))

            return self._call(f"{label} (COMPLETE MULTIPART COPY) {name}", complete)
        except BaseException:
            try:
                self.abort_multipart(key, upload_id)
            except Exception as exc:  # a leftover upload: a lifecycle rule or the next abort removes it
                log.warning("could not abort the multipart copy %s of %s: %s", upload_id, name, exc)
            raise


# What a copy with MetadataDirective REPLACE would otherwise drop (HEAD names them as CopyObject does);
# the storage class and SSE-KMS key are kept too (a copy would otherwise take the bucket's defaults).
_KEPT_ON_COPY = ("ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage", "CacheControl",
                 "Expires", "WebsiteRedirectLocation")


def _too_large_to_copy(exc: botocore.exceptions.ClientError) -> bool:
    """Is this CopyObject's refusal of a source above 5 GiB (AWS: InvalidRequest, "larger than the
    maximum allowable size for a copy source")?"""
    error = exc.response.get("Error", {})
    message = str(error.get("Message", "")).lower()
    return error.get("Code") in ("InvalidRequest", "EntityTooLarge") and "copy source" in message


def _head_meta(key: str, reply: dict[str, Any]) -> ObjectMeta:
    kept = mtime.from_metadata(reply.get("Metadata"))
    return ObjectMeta(key, reply["ContentLength"], _etag(reply["ETag"]),
                      _ns(reply["LastModified"].timestamp()) if kept is None else kept)


def _etag(raw: str) -> str:
    return raw.strip('"')


def _ns(timestamp: float) -> int:
    return int(timestamp * 1_000_000_000)
