"""Which endpoint, credentials and options one s3:// URL gets, most specific first.

Credentials, as ClearML users expect: the `[[s3.credentials]]` entry for the bucket (on that host,
when the entry names one), then the entry for the host, then the `[s3]` defaults, then boto3's own
chain (environment, AWS_PROFILE and shared files, container and instance roles) when
`use_credentials_chain` is set or no key is given anywhere.

Endpoint, decided once per store so that every request of a mount (boto3's HEAD, PUT, COPY, ...
and mountfs's own GETs and LISTs) goes to the same server: the URL's `host:port`, the entry's
`endpoint`, `[s3] endpoint`, then what botocore itself would use (`AWS_ENDPOINT_URL_S3`,
`AWS_ENDPOINT_URL`, the profile's `endpoint_url` or its services section), else AWS. Region and
addressing style likewise: the entry, `[s3]`, then the environment and the profile as botocore reads
them (`AWS_REGION` first, which botocore ignores but other AWS SDKs honour).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import botocore
import botocore.config
import botocore.exceptions
import botocore.session

from mountfs.config import importers
from mountfs.config.model import Config, S3Boto3, S3Config, S3Credentials, S3ExtraArgs, StoreUrl
from mountfs.config.reader import ABSENT, Reader, Table
from mountfs.config.toml_text import Path, dotted
from mountfs.config.urls import (
    check_addressing_style,
    check_endpoint,
    check_host_port,
    check_plain_name,
)
from mountfs.config.values import connections
from mountfs.errors import StoreUnavailable

DEFAULT_REGION = "us-east-1"
AWS = "AWS default"  # the endpoint source when no endpoint is configured anywhere
AddressingStyle = Literal["auto", "path", "virtual"]
_OWN_SOURCES = ("URL", "[[s3.credentials]]", "[s3] endpoint")  # endpoints named in mountfs's config
OWN_HINT = "set key and secret in [s3] or [[s3.credentials]], or AWS_ACCESS_KEY_ID / AWS_PROFILE"


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    endpoint_url: str | None  # None: AWS itself
    region: str
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    verify: bool | str = True  # an https:// URL is fetched when the store is opened (see ca_dir)
    multipart: bool = True
    extra_args: S3ExtraArgs = field(default_factory=S3ExtraArgs)
    pool_connections: int = 32
    addressing_style: AddressingStyle = "auto"  # "auto": botocore decides (path on own endpoints)
    endpoint_source: str = AWS  # where endpoint_url came from, for `mountfs status` and messages
    role_arn: str | None = None  # assumed (STS) with the credentials above, or the chain's
    external_id: str | None = field(default=None, repr=False)
    role_session_name: str | None = None
    ask_region: bool = False  # no region configured, AWS: the bucket's own, asked when the store opens
    ca_dir: str | None = None  # where a CA bundle named by URL is saved (under the cache dir)
    upload_concurrency: int | None = None  # parts in flight; None: [write] max_concurrency
    credentials_hint: str = field(default=OWN_HINT, compare=False)  # what to set when none are found

    @property
    def uses_chain(self) -> bool:
        return self.key is None

    @property
    def kms_key_id(self) -> str | None:
        return self.extra_args.sse_kms_key_id

    def describe(self) -> str:
        """Where this is, for messages; never a secret."""
        if self.endpoint_url is None:
            return f"s3://{self.bucket} at AWS {self.region}"
        source = "" if self.endpoint_source == "URL" else f" (from {self.endpoint_source})"
        return f"s3://{self.bucket} at {self.endpoint_url}{source}"


def _entry_for(bucket: str, host: str | None, entries: tuple[S3Credentials, ...]) -> S3Credentials | None:
    for entry in entries:  # a bucket entry wins over a host entry
        if entry.bucket == bucket and entry.host in (None, host):
            return entry
    for entry in entries:
        if entry.bucket is None and entry.host is not None and entry.host == host:
            return entry
    return None


def resolve(url: StoreUrl, config: Config) -> S3Settings:
    s3 = config.s3
    entry = _entry_for(url.bucket, url.host, s3.credentials)
    session = botocore.session.Session()  # AWS_PROFILE, AWS_CONFIG_FILE and the environment, read now
    try:

        def configured_region(entry: S3Credentials | None) -> str | None:
            return (entry.region if entry else None) or s3.region

        def region_of(entry: S3Credentials | None) -> str:
            return (
                configured_region(entry)
                or os.environ.get("AWS_REGION")
                or session.get_config_variable("region")
                or DEFAULT_REGION
            )

        endpoint, source = _endpoint(url, entry, config, session, region_of(entry))
        if url.host is None and endpoint is not None:  # the entries for the endpoint's host:port apply too
            entry = _entry_for(url.bucket, urllib.parse.urlsplit(endpoint).netloc, s3.credentials)
        region = region_of(entry)
        profile_s3: dict[str, Any] = session.get_scoped_config().get("s3") or {}
    except (botocore.exceptions.BotoCoreError, ValueError) as exc:  # no such profile, a bad endpoint
        hint = (
            " (see AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL and the profile's endpoint_url)"
            if isinstance(exc, ValueError)
            else ""
        )
        raise StoreUnavailable(
            f"s3://{url.bucket}: the AWS configuration cannot be used: {exc}{hint}"
        ) from None
    key = secret = token = None
    if not (s3.use_credentials_chain or (entry is not None and entry.use_credentials_chain)):
        if entry is not None and entry.key:
            key, secret, token = entry.key, entry.secret, entry.token
        elif s3.key:
            key, secret, token = s3.key, s3.secret, s3.token
    # the profile's style is for the profile's endpoints: one named in mountfs's config is path-style
    # unless the config says otherwise, as every S3-compatible server serves it
    own = source in _OWN_SOURCES
    style = (
        (entry.addressing_style if entry else None)
        or s3.addressing_style
        or ("path" if own else str(profile_s3.get("addressing_style") or "auto"))
    )
    settings = S3Settings(
        bucket=url.bucket,
        endpoint_url=endpoint,
        region=region,
        key=key,
        secret=secret,
        token=token,
        verify=entry.verify if entry else True,
        multipart=entry.multipart if entry else True,
        extra_args=extra_args_of(entry, s3),
        pool_connections=s3.boto3.pool_connections,
        addressing_style=cast(AddressingStyle, style) if style in ("path", "virtual") else "auto",
        endpoint_source=source,
        ask_region=endpoint is None and configured_region(entry) is None,
        ca_dir=os.path.join(config.cache.dir, "ca-bundles"),
        upload_concurrency=s3.boto3.max_multipart_concurrency,
        credentials_hint=_credentials_hint(url, config, entry, endpoint),
        **_role(entry, s3),
    )
    if not url.bucket:  # a whole endpoint, to list its buckets: no bucket URL to decide
        return settings
    try:
        bucket_url(settings)  # the bucket's URL, decided now: a bad endpoint fails the mount, not a read
    except (botocore.exceptions.BotoCoreError, ValueError) as exc:
        raise StoreUnavailable(f"{settings.describe()}: the endpoint cannot be used: {exc}") from None
    return settings


def _credentials_hint(url: StoreUrl, config: Config, entry: S3Credentials | None,
                      endpoint: str | None) -> str:
    """What to set when no credentials are found, in the keys of the file the settings came from."""
    index = next((i for i, e in enumerate(config.s3.credentials) if e is entry), None)
    host = url.host or (urllib.parse.urlsplit(endpoint).netloc if endpoint else None)
    where = dataclasses.replace(url, host=host)
    return importers.credentials_hint("s3", config, where, index, OWN_HINT)


def extra_args_of(entry: S3Credentials | None, s3: S3Config) -> S3ExtraArgs:
    """The entry's extra_args (a table there replaces [s3]'s whole), its kms_key_id set over them."""
    args = entry.extra_args if entry is not None and entry.extra_args is not None else s3.extra_args
    if entry is not None and entry.kms_key_id:
        args = dataclasses.replace(args, server_side_encryption="aws:kms", sse_kms_key_id=entry.kms_key_id)
    return args


def _role(entry: S3Credentials | None, s3: S3Config) -> dict[str, str | None]:
    """The role to assume, with the external id and session name given beside it."""
    source: S3Credentials | S3Config = entry if entry is not None and entry.role_arn else s3
    return {
        "role_arn": source.role_arn,
        "external_id": source.external_id,
        "role_session_name": source.role_session_name,
    }


def _endpoint(
    url: StoreUrl, entry: S3Credentials | None, config: Config, session: botocore.session.Session, region: str
) -> tuple[str | None, str]:
    """(endpoint URL or None for AWS, where it came from)."""
    if url.host:
        scheme = "https" if (entry.secure if entry else True) else "http"
        return f"{scheme}://{url.host}", "URL"
    if entry is not None and entry.endpoint:
        return entry.endpoint, "[[s3.credentials]]"
    if config.s3.endpoint:
        return config.s3.endpoint, "[s3] endpoint"
    configured = _client(session, None, region, "auto").meta.endpoint_url
    unconfigured = _client(session, None, region, "auto", ignore_configured=True).meta.endpoint_url
    if configured == unconfigured:
        return None, AWS
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name, "").strip() == configured:
            return configured, name
    return configured, f"AWS profile {session.profile or 'default'}"


def _client(
    session: botocore.session.Session,
    endpoint_url: str | None,
    region: str,
    style: AddressingStyle,
    *,
    ignore_configured: bool = False,
) -> Any:
    """An unsigned client that is never sent anywhere: botocore's own view of the endpoint."""
    config = botocore.config.Config(  # type: ignore[call-arg]  # the stubs lack the endpoint switch
        signature_version=botocore.UNSIGNED,
        ignore_configured_endpoint_urls=ignore_configured or None,
        s3={"addressing_style": style},
    )
    return session.create_client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


class _Captured(Exception):
    """Not an error: carries a request's URL out of botocore."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


@functools.lru_cache(maxsize=64)
def bucket_url(settings: S3Settings) -> tuple[str, str, str]:
    """(base "scheme://host:port", Host header, path of the bucket without a trailing "/") of the
    bucket's requests, exactly as boto3 sends them with these settings: botocore builds a
    ListObjectsV2 request, which is caught before it is signed or sent."""
    client = _client(
        botocore.session.Session(), settings.endpoint_url, settings.region, settings.addressing_style
    )

    def capture(request: Any, **_: Any) -> None:
        raise _Captured(request.url)

    client.meta.events.register("before-sign.s3.ListObjectsV2", capture)
    try:
        client.list_objects_v2(Bucket=settings.bucket)
    except _Captured as done:
        parts = urllib.parse.urlsplit(done.url)
    else:  # pragma: no cover -- botocore always signs before sending
        raise AssertionError("the ListObjectsV2 request was not captured")
    host = parts.netloc
    if (parts.scheme, parts.port) in (("http", 80), ("https", 443)):
        host = parts.hostname or host  # as botocore signs it: no default port
    return f"{parts.scheme}://{parts.netloc}", host, parts.path.rstrip("/")


# ---------------------------------------------------------------------------------------------------------
# The [s3] section of a config file

_ROLE_KEYS = ("role_arn", "external_id", "role_session_name")
_S3_KEYS = (
    "key", "secret", "token", "region", "endpoint", "addressing_style", "use_credentials_chain",
    "credentials", "boto3", "extra_args", *_ROLE_KEYS,
)  # fmt: skip
_S3_CRED_KEYS = (
    "host", "bucket", "key", "secret", "token", "region", "endpoint", "addressing_style", "secure", "verify",
    "multipart", "kms_key_id", "extra_args", "use_credentials_chain", *_ROLE_KEYS,
)  # fmt: skip

# boto3's upload ExtraArgs a mount honours: the same for every object it writes
EXTRA_ARGS = ("ServerSideEncryption", "SSEKMSKeyId", "StorageClass", "ACL", "Metadata")
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
_PER_FILE = ("ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage", "CacheControl",
             "Expires", "WebsiteRedirectLocation")  # fmt: skip
_WHY_NOT = {
    **{name: "it describes one file, not every file of a mount" for name in _PER_FILE},
    **{name: "reads would need the key too, and mountfs's reads do not send it"
       for name in ("SSECustomerAlgorithm", "SSECustomerKey", "SSECustomerKeyMD5")},
}  # fmt: skip
_METADATA_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an HTTP header token
_METADATA_LIMIT = 2048  # bytes of user metadata S3 keeps per object, names and values


@functools.lru_cache(maxsize=4)
def _s3_enum(shape: str) -> tuple[str, ...]:
    """The values botocore's S3 model allows for `shape` (e.g. StorageClass, ObjectCannedACL)."""
    model = botocore.session.get_session().get_service_model("s3")
    return tuple(model.shape_for(shape).enum)  # type: ignore[attr-defined]


def _extra_args(r: Reader, tbl: Table, path: Path) -> S3ExtraArgs | None:
    """An `extra_args` table: boto3's names, each checked; None when there is none."""
    value = r.raw(tbl, path, "extra_args")
    if value is ABSENT:
        return None
    epath = (*path, "extra_args")
    if not isinstance(value, dict):
        r.type_error(epath, "a table such as { ServerSideEncryption = \"AES256\" }", value)
        return None
    accepted = "accepted: " + ", ".join(EXTRA_ARGS)
    for name in value:
        if name not in EXTRA_ARGS:
            why = _WHY_NOT.get(name, "mountfs does not pass it on")
            r.error((*epath, name), f"not accepted: {why}", accepted)

    def enum(name: str, allowed: tuple[str, ...]) -> str | None:
        text = r.str_(value, epath, name)
        if text is not None and text not in allowed:
            r.error((*epath, name), f"unknown value {text!r}", "one of " + ", ".join(allowed))
            return None
        return text

    sse = enum("ServerSideEncryption", SSE_MODES)
    kms_key = r.str_(value, epath, "SSEKMSKeyId")
    if kms_key is not None and sse is None and "ServerSideEncryption" not in value:
        sse = "aws:kms"  # a KMS key says which encryption, as kms_key_id does
    elif kms_key is not None and sse == "AES256":
        r.error((*epath, "SSEKMSKeyId"), "a KMS key goes with ServerSideEncryption = \"aws:kms\"",
                "drop SSEKMSKeyId, or set ServerSideEncryption = \"aws:kms\"")
    storage_class = enum("StorageClass", _s3_enum("StorageClass")) if "StorageClass" in value else None
    acl = enum("ACL", _s3_enum("ObjectCannedACL")) if "ACL" in value else None
    return S3ExtraArgs(sse, kms_key, storage_class, acl, _metadata(r, value, epath))


def _metadata(r: Reader, tbl: Table, path: Path) -> tuple[tuple[str, str], ...]:
    value = r.raw(tbl, path, "Metadata")
    if value is ABSENT:
        return ()
    mpath = (*path, "Metadata")
    if not isinstance(value, dict):
        r.type_error(mpath, "a table of strings such as { team = \"vision\" }", value)
        return ()
    pairs: list[tuple[str, str]] = []
    for name, text in value.items():
        if not _METADATA_NAME.fullmatch(name):
            r.error((*mpath, name), "not a metadata name", "letters, digits and -_. only")
        elif name.lower() == "mtime":
            r.error((*mpath, name), "mountfs keeps each file's modification time under this name",
                    "choose another name")
        elif not isinstance(text, str):
            r.type_error((*mpath, name), "a string", text)
        elif not text.isascii() or not text.isprintable():
            r.error((*mpath, name), "S3 metadata values must be printable ASCII")
        else:
            pairs.append((name.lower(), text))
    if sum(len(n) + len(v) for n, v in pairs) > _METADATA_LIMIT - 32:  # room for mountfs's mtime
        r.error(mpath, f"more than S3's {_METADATA_LIMIT} bytes of user metadata per object")
    return tuple(pairs)
_S3_BOTO3_KEYS = ("pool_connections", "max_multipart_concurrency")


def s3_section(r: Reader, root: Table) -> S3Config:
    path, t = r.sub(root, (), "s3", _S3_KEYS)
    key, secret, token = (r.str_(t, path, k) for k in ("key", "secret", "token"))
    r.key_pair(t, path, key, secret, token)
    creds: list[S3Credentials] = []
    seen: dict[tuple[str | None, str | None], Path] = {}
    for ipath, c in r.tables(
        t.get("credentials", ABSENT), (*path, "credentials"), _S3_CRED_KEYS, "s3.credentials"
    ):
        host = r.checked_str(c, ipath, "host", check_host_port)
        bucket = r.checked_str(c, ipath, "bucket", check_plain_name)
        if "host" not in c and "bucket" not in c:
            r.error(
                ipath,
                "needs host or bucket (or both)",
                'add host = "minio.internal:9000" or bucket = "name"',
            )
            continue
        for name in ("host", "bucket"):
            if c.get(name) == "":  # an empty name would make the entry match every endpoint or bucket
                r.error((*ipath, name), "must not be empty", "leave it out, or name what it is for")
        if (host, bucket) in seen and (host or bucket):
            line = r.locator.line(seen[host, bucket])
            r.error(
                ipath,
                f"same host and bucket as {dotted(seen[host, bucket])}"
                + (f" at line {line}" if line is not None else ""),
            )
        seen.setdefault((host, bucket), ipath)
        ckey, csecret, ctoken = (r.str_(c, ipath, k) for k in ("key", "secret", "token"))
        endpoint = r.checked_str(c, ipath, "endpoint", check_endpoint)
        if endpoint is not None and host is not None:
            r.error(
                (*ipath, "endpoint"),
                "an entry for a host is for s3://host:port/... URLs, which name their endpoint",
                "drop host, or drop endpoint",
            )
        r.key_pair(c, ipath, ckey, csecret, ctoken)
        extra = _extra_args(r, c, ipath)
        creds.append(S3Credentials(
            host=host,
            bucket=bucket,
            key=ckey,
            secret=csecret,
            token=ctoken,
            region=r.str_(c, ipath, "region"),
            secure=r.bool_(c, ipath, "secure", True),
            verify=_verify(r, c, ipath),
            multipart=r.bool_(c, ipath, "multipart", True),
            kms_key_id=_kms_key_id(r, c, ipath, extra),
            endpoint=endpoint,
            addressing_style=r.checked_str(c, ipath, "addressing_style", check_addressing_style),
            extra_args=extra,
            use_credentials_chain=r.bool_(c, ipath, "use_credentials_chain", False),
            **_role_keys(r, c, ipath),
        ))  # fmt: skip
    bpath, b = r.sub(t, path, "boto3", _S3_BOTO3_KEYS)
    boto_default = S3Boto3()
    return S3Config(
        key=key,
        secret=secret,
        token=token,
        region=r.str_(t, path, "region"),
        endpoint=r.checked_str(t, path, "endpoint", check_endpoint),
        addressing_style=r.checked_str(t, path, "addressing_style", check_addressing_style),
        use_credentials_chain=r.bool_(t, path, "use_credentials_chain", False),
        credentials=tuple(creds),
        boto3=S3Boto3(
            pool_connections=r.int_(b, bpath, "pool_connections", boto_default.pool_connections, connections),
            max_multipart_concurrency=(
                r.int_(b, bpath, "max_multipart_concurrency", 1, connections)
                if "max_multipart_concurrency" in b else None
            ),
        ),
        extra_args=_extra_args(r, t, path) or S3ExtraArgs(),
        **_role_keys(r, t, path),
    )


def _kms_key_id(r: Reader, tbl: Table, path: Path, extra: S3ExtraArgs | None) -> str | None:
    """kms_key_id: extra_args' SSEKMSKeyId by its older name; the two must not disagree."""
    kms_key = r.str_(tbl, path, "kms_key_id")
    if kms_key is None or extra is None:
        return kms_key
    if extra.sse_kms_key_id not in (None, kms_key) or extra.server_side_encryption not in (None, "aws:kms"):
        r.error((*path, "kms_key_id"), "extra_args names another encryption",
                "keep one: extra_args.SSEKMSKeyId is the same as kms_key_id")
    return kms_key


def _role_keys(r: Reader, tbl: Table, path: Path) -> dict[str, str | None]:
    role = r.checked_str(tbl, path, "role_arn", _check_role_arn)
    for name in ("external_id", "role_session_name"):
        if role is None and name in tbl:
            r.error((*path, name), "goes with role_arn", "add role_arn, or drop it")
    return {
        "role_arn": role,
        "external_id": r.str_(tbl, path, "external_id"),
        "role_session_name": r.checked_str(tbl, path, "role_session_name", _check_session_name),
    }


def _check_role_arn(text: str) -> None:
    # any partition and account, as MinIO writes them too ("arn:minio:iam:::role/name")
    if not re.fullmatch(r"arn:[\w-]+:iam::[\w-]*:role/[\w+=,.@/-]+", text):
        raise ValueError('expected a role ARN such as "arn:aws:iam::123456789012:role/name"')


def _check_session_name(text: str) -> None:
    if not re.fullmatch(r"[\w+=,.@-]{2,64}", text):
        raise ValueError("2 to 64 letters, digits and +=,.@-_")


def _verify(r: Reader, tbl: Table, path: Path) -> bool | str:
    value = r.raw(tbl, path, "verify")
    if value is ABSENT:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value:
        if value.lower().startswith("https://"):
            if "@" in urllib.parse.urlsplit(value).netloc:
                r.error((*path, "verify"), "a CA bundle URL with a user or password cannot be fetched "
                        "(no credentials are sent for it)", "name a URL that needs no login, or a local copy")
                return True
            return value  # fetched when the store is opened, not by `config check`
        if value.strip().lower() in ("true", "false"):  # ${VAR} and env files give strings
            r.error((*path, "verify"), f'"{value}" is a string, not a file name',
                    f"write {value.strip().lower()} without quotes")
            return True
        if value.lower().startswith("http://"):
            r.error((*path, "verify"), "a CA bundle fetched over plain http could be swapped on the way",
                    "fetch it over https, or name a local copy")
            return True
        bundle = os.path.abspath(os.path.expanduser(value))
        if not os.path.isfile(bundle):
            r.error((*path, "verify"), f"no CA bundle file at {bundle}",
                    'name a PEM file, an https:// URL of one, true or false')
            return True
        return bundle
    r.type_error((*path, "verify"), "true, false, a CA bundle path or its https:// URL", value)
    return True
