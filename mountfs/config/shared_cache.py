"""[shared_cache]: a bucket a fleet of nodes shares as a second level of the block cache.

```toml
[shared_cache]
url = "s3://cache.internal:9000/fleet-cache/mountfs"   # any store URL a [[mount]] takes
write = true                # false: this node only reads blocks others wrote
max_object_size = "10GiB"   # larger objects skip the shared cache (default: no limit)
timeout = "5s"              # a shared-cache call that takes longer counts as a miss
```

The URL's credentials are found as a mount's would be (`[s3]`, `[[s3.credentials]]`, `[gcs]`,
`[[azure.containers]]`). The URL must not overlap a mount, which would show the cache's objects as
files (and let a write through the mount change them).
"""

from __future__ import annotations

import dataclasses
import os

from mountfs.config.model import AzureConfig, Config, MountConfig, SharedCacheConfig, StoreUrl
from mountfs.config.reader import ABSENT, Reader, Table
from mountfs.config.urls import SCHEMES, parse_url, unresolved
from mountfs.config.values import InvalidValue, positive

KEYS = ("url", "write", "max_object_size", "timeout")
DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 600.0
"""Longer than any reader should wait for a cache before asking the origin."""


def shared_cache_section(r: Reader, root: Table, azure: AzureConfig,
                         mounts: tuple[MountConfig, ...]) -> SharedCacheConfig | None:
    if root.get("shared_cache", ABSENT) is ABSENT:
        return None
    path, t = r.sub(root, (), "shared_cache", KEYS)
    hint = 'the bucket (and prefix) the fleet shares, e.g. url = "s3://cache-host:9000/fleet-cache"'
    text = r.str_(t, path, "url", required=True, hint=hint)
    url: StoreUrl | None = None
    if text is not None:
        try:
            url = shared_cache_url(text, azure)
        except InvalidValue as exc:
            r.value_error((*path, "url"), exc)
    write = r.bool_(t, path, "write", True)
    max_object_size = r.size(t, path, "max_object_size", 0) or None  # 0 is refused: "must be greater"
    timeout = r.duration(t, path, "timeout", DEFAULT_TIMEOUT, _timeout_problem)
    if url is None:
        return None
    for mount in mounts:
        if overlaps(url, mount.url):
            r.error((*path, "url"), f"overlaps the mount of {mount.url.raw}",
                    "give the shared cache a bucket or prefix of its own, outside every [[mount]]")
            return None
    problem = _missing_folder(url)
    if problem is not None:
        r.error((*path, "url"), *problem)
        return None
    return SharedCacheConfig(url, write, max_object_size, timeout)


def _missing_folder(url: StoreUrl) -> tuple[str, str] | None:
    """A file:// shared cache must be a folder that exists, as a file:// mount must: otherwise every
    write would fail later, with only a warning in the log."""
    if url.scheme == "file" and not os.path.isdir(url.bucket):
        return f"the folder {url.bucket} does not exist", "create it (on the share the fleet mounts) first"
    return None


def _timeout_problem(value: float) -> str | None:
    if value > MAX_TIMEOUT:
        return f"must be at most {MAX_TIMEOUT:.0f}s (a reader waits this long before asking the origin)"
    return positive(value)


def shared_cache_url(text: str, azure: AzureConfig) -> StoreUrl:
    """A URL of one bucket (with an optional prefix) on a store mountfs writes to."""
    url = parse_url(text.strip())
    if url.scheme not in SCHEMES:
        raise InvalidValue(f'"{url.raw}" is not a bucket mountfs can keep a cache in',
                           "expected s3://, gs://, az:// or file:// with a bucket")
    if not url.bucket:  # s3://host:port/ names an endpoint: the cache would be off without a word
        raise InvalidValue(f'"{url.raw}" names no bucket', "expected s3://host:port/bucket/prefix")
    if url.scheme == "az" and unresolved(url):
        from mountfs.config.azure import resolve_account

        url = resolve_account(url, azure)
    return url


def overlaps(a: StoreUrl, b: StoreUrl) -> bool:
    """Whether two URLs share objects: same store and bucket, and one prefix holds the other (for
    folders, one folder holds the other)."""
    if a.scheme == b.scheme == "file":
        pa, pb = (os.path.normpath(u.bucket + "/" + u.prefix) for u in (a, b))
        return pa == pb or pa.startswith(pb.rstrip("/") + "/") or pb.startswith(pa.rstrip("/") + "/")
    if (a.scheme, (a.host or "").lower(), a.bucket) != (b.scheme, (b.host or "").lower(), b.bucket):
        return b.scheme == a.scheme and b.bucket == "" and (a.host or "") == (b.host or "")
    pa, pb = a.prefix.strip("/"), b.prefix.strip("/")
    return not pa or not pb or pa == pb or pa.startswith(pb + "/") or pb.startswith(pa + "/")


def from_option(text: str, config: Config) -> SharedCacheConfig:
    """`-o shared_cache=URL`: the config's other [shared_cache] settings, with this URL."""
    url = shared_cache_url(text, config.azure)
    for mount in config.mounts:
        if overlaps(url, mount.url):
            raise InvalidValue(f"{url.raw} overlaps the mount of {mount.url.raw}",
                               "give the shared cache a bucket or prefix of its own, outside every mount")
    problem = _missing_folder(url)
    if problem is not None:
        raise InvalidValue(*problem)
    if config.shared_cache is None:
        return SharedCacheConfig(url, timeout=DEFAULT_TIMEOUT)
    return dataclasses.replace(config.shared_cache, url=url)
