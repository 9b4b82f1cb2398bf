"""What a loaded config is: frozen dataclasses, one per section, with the defaults a missing key takes.

Secrets never appear in a dataclass `repr()`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
PiB = 1024**5

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY


def default_cache_dir() -> str:
    """Root shares one system cache; users get the XDG per-user cache, so a non-root mount just works."""
    if os.geteuid() == 0:
        return "/var/cache/mountfs"
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore relative values
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mountfs")


@dataclass(frozen=True)
class StoreUrl:
    """Where one mount's objects live. `host` is "host:port" for S3-compatible endpoints and the account
    for Azure; for `file` the bucket is the absolute folder path."""

    scheme: str
    host: str | None
    bucket: str
    prefix: str
    raw: str


@dataclass(frozen=True)
class MinFree:
    """Free space the cache leaves on its disk, as bytes ("10GiB") or a percentage of the disk ("5%"):
    the cache shares its disk with staged uploads, logs and other programs, which must not fail first."""

    size: int = 0
    percent: float = 0.0

    def required(self, disk_size: int) -> int:
        """Bytes that must stay free on a disk of `disk_size` bytes."""
        return max(self.size, math.ceil(disk_size * self.percent / 100))


@dataclass(frozen=True)
class CacheConfig:
    dir: str = field(default_factory=default_cache_dir)
    max_size: int = 200 * GiB
    max_files: int = 1_000_000
    expiry: float = 7 * DAY
    block_size: int = 4 * MiB
    min_free: MinFree = field(default_factory=lambda: MinFree(percent=5.0))


@dataclass(frozen=True)
class ReadConfig:
    metadata_ttl: float = 60.0
    negative_ttl: float = 5.0
    # Store requests in flight (each up to 16 MiB when reading ahead): enough for a reader of
    # many ranges at once (a parquet reader's column chunks) to fill a link with tens of ms of
    # latency; many more threads only fight over the GIL.
    max_concurrency: int = 16
    readahead_max: int = 256 * MiB
    max_memory: int = 192 * MiB  # block bytes the daemon holds in memory, all handles together
    kernel_readahead: int = 8 * MiB  # the mount's read_ahead_kb, set when running as root
    # While a store is unreachable, cached metadata past its TTL is still served for this long.
    offline_grace: float = 3600.0
    # What a read that is not part of a sequential stream fetches (the chunks it touches, rounded
    # up to this), instead of whole blocks: a power of two, whole 16 KiB chunks, at most a block.
    random_fetch: int = 64 * KiB


@dataclass(frozen=True)
class WriteConfig:
    part_size: int = 16 * MiB
    max_concurrency: int = 8
    drain_timeout: float = 300.0  # how long unmount/SIGTERM waits for pending uploads


@dataclass(frozen=True)
class RetryConfig:
    """How store calls are retried on transient failures (throttling, 5xx, resets, timeouts):
    jittered exponential backoff from base_delay up to max_delay, at most `attempts` tries and no
    longer than `budget` in all; each request gives up after `request_timeout`."""

    attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 5.0
    budget: float = 60.0
    request_timeout: float = 30.0


@dataclass(frozen=True)
class MountConfig:
    """One directory under the mount point; path "" puts the store at the mount point itself."""

    path: str
    url: StoreUrl
    read_only: bool = False
    substituted_for: str | None = None
    """The URL [[path_substitution]] replaced by `url` (a registered prefix, or one under it):
    direct-access globs match it too, so a glob may name a bucket's mirrored part."""
    objects: tuple[str, ...] | None = None
    """Only these keys (under the URL's prefix) are shown, read-only: a list of links, not a bucket."""
    optional: bool = False
    """A bucket that does not exist is left out of the tree, with one warning naming it and the
    store's answer, rather than failing the whole mount (a list of buckets, one since deleted)."""


@dataclass(frozen=True)
class DirectAccess:
    """A URL glob (e.g. "file:///mnt/nfs/*") and/or a content-type glob (e.g. "video/*") whose
    matches bypass the cache; with both, both must match. At least one is set."""

    url: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class PathSubstitution:
    registered_prefix: str
    local_prefix: str


@dataclass(frozen=True)
class S3ExtraArgs:
    """What every object written to the store carries (boto3's ExtraArgs of the same names): each
    upload, single PUT or multipart, and each copy that rewrites an object (rename, mtime)."""

    server_side_encryption: str | None = None  # "AES256", "aws:kms" or "aws:kms:dsse"
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    acl: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # user metadata, as (name, value) pairs

    def request_args(self) -> dict[str, str]:
        """The arguments of a PutObject, CreateMultipartUpload or CopyObject, metadata apart."""
        named = (("ServerSideEncryption", self.server_side_encryption), ("SSEKMSKeyId", self.sse_kms_key_id),
                 ("StorageClass", self.storage_class), ("ACL", self.acl))  # fmt: skip
        return {name: value for name, value in named if value}


@dataclass(frozen=True)
class S3Credentials:
    """Overrides [s3] for one endpoint ("host:port"), one bucket, or one bucket on one endpoint."""

    host: str | None = None
    bucket: str | None = None
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    region: str | None = None
    secure: bool = True
    verify: bool | str = True
    multipart: bool = True
    kms_key_id: str | None = None  # the same as extra_args ServerSideEncryption "aws:kms" with this key
    endpoint: str | None = None  # for a bucket entry: the server the bucket is on
    addressing_style: str | None = None  # "path", "virtual" or "auto"
    extra_args: S3ExtraArgs | None = None  # None: the [s3] default's (a table here replaces it whole)
    use_credentials_chain: bool = False  # boto3's chain for this entry, whatever key [s3] has
    role_arn: str | None = None  # a role to assume (STS) with the credentials found otherwise
    external_id: str | None = field(default=None, repr=False)
    role_session_name: str | None = None


@dataclass(frozen=True)
class S3Boto3:
    pool_connections: int = 32
    max_multipart_concurrency: int | None = None  # None: [write] max_concurrency


@dataclass(frozen=True)
class S3Config:
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint: str | None = None
    addressing_style: str | None = None
    use_credentials_chain: bool = False
    credentials: tuple[S3Credentials, ...] = ()
    boto3: S3Boto3 = field(default_factory=S3Boto3)
    extra_args: S3ExtraArgs = field(default_factory=S3ExtraArgs)
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    role_session_name: str | None = None


@dataclass(frozen=True)
class GcsCredentials:
    bucket: str
    subdir: str = ""
    credentials_json: str | None = field(default=None, repr=False)
    project: str | None = None


@dataclass(frozen=True)
class GcsConfig:
    project: str | None = None
    credentials_json: str | None = field(default=None, repr=False)
    endpoint: str | None = None
    credentials: tuple[GcsCredentials, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AzureContainer:
    """Keyword-only: the field order follows the config file. `container_name` None: the entry covers
    every container of its account. Credentials: one of an account key, a connection string, a SAS,
    a service principal (`tenant_id`, `client_id`, `client_secret`) or azure-identity's
    DefaultAzureCredential (`use_credentials_chain`)."""

    account_name: str
    account_key: str | None = field(default=None, repr=False)
    connection_string: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)
    container_name: str | None = None
    endpoint: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    use_credentials_chain: bool = False


@dataclass(frozen=True)
class AzureConfig:
    containers: tuple[AzureContainer, ...] = ()
    account: str | None = None
    """The storage account of a container-first URL (az://container/path) that names none."""


@dataclass(frozen=True)
class MetricsConfig:
    """Where the daemon serves Prometheus text: "HOST:PORT" or "unix:/path"; None serves nothing."""

    listen: str | None = None


@dataclass(frozen=True)
class Config:
    """`source` is the file path or URL the config came from, for messages and `mountfs status`."""

    source: str
    cache: CacheConfig = field(default_factory=CacheConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    mounts: tuple[MountConfig, ...] = ()
    direct_access: tuple[DirectAccess, ...] | None = None
    """None: no `direct_access` key, so the default (`file://*`) applies; () from `direct_access = []`:
    nothing is direct, every mount goes through the block cache."""
    path_substitution: tuple[PathSubstitution, ...] = ()
    s3: S3Config = field(default_factory=S3Config)
    gcs: GcsConfig = field(default_factory=GcsConfig)
    azure: AzureConfig = field(default_factory=AzureConfig)
    shared_cache: SharedCacheConfig | None = None
    """The fleet's shared block cache; None: blocks come from the origin only."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    notes: tuple[str, ...] = ()
    """Settings of an imported file that have no equivalent ("key: what mountfs does instead"):
    `config import` prints them as comments, the daemon logs them when it mounts."""
    settings_file: str | None = None
    """The file the settings came from (`source` is the URL when they come from `-o config=`)."""
    settings_format: str | None = None
    """The importer's name for the settings' format ("clearml", "Supervisely .env", ...); None for
    mountfs's own TOML: a hint names the keys of the file the user writes."""
    key_origins: tuple[tuple[tuple[str | int, ...], str], ...] = field(default=(), repr=False)
    """(key path, the imported file's key it came from): errors found when mounting name the key the
    user wrote, as those of `config check` do."""

    def key_name(self, *path: str | int) -> str:
        from mountfs.config.toml_text import key_name

        return key_name(dict(self.key_origins), path)

    @property
    def settings_source(self) -> str:
        return self.settings_file or self.source


@dataclass(frozen=True)
class SharedCacheConfig:
    """A second block cache level kept in a bucket that a fleet of nodes shares: a block missing here
    is looked for there before the origin, and a block fetched from the origin is written there.
    `max_object_size` None: objects of any size use it."""

    url: StoreUrl
    write: bool = True
    max_object_size: int | None = None
    timeout: float = 5.0
