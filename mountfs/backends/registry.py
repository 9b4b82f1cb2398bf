"""The one place that picks the store adapter for a URL."""

from __future__ import annotations

from mountfs.backends.base import ObjectStore
from mountfs.config import Config, StoreUrl
from mountfs.config.urls import FS, HTTP_SCHEMES
from mountfs.errors import Unsupported

SUPPORTED_SCHEMES = ("file", "s3", "gs", "az")


def open_store(url: StoreUrl, config: Config, *, within: str | None = None) -> ObjectStore:
    """The adapter for `url`. Constructing it does no I/O; call `check_access` for that. `within`:
    a folder a file:// URL must not lead out of by a symlink (its path_substitution local prefix)."""
    if url.scheme in ("s3", "gs", "az") and not url.bucket:
        raise Unsupported(f"{url.raw}: a URL of every bucket of an endpoint is expanded into one mount per "
                          "bucket before a store is opened, and this one was not")
    if url.scheme == FS:
        raise Unsupported(f'{url.raw}: storage id "{url.bucket}" is mapped to no folder (add a '
                          f'[[path_substitution]] with registered_prefix = "fs://{url.bucket}")')
    if url.scheme in HTTP_SCHEMES:
        raise Unsupported(f"{url.raw}: is on no Azure endpoint the config names "
                          "(expected https://account.blob.core.windows.net/container/path)")
    if url.scheme == "file":
        from mountfs.backends.local import LocalStore

        return LocalStore(url.bucket, within=within)
    if url.scheme == "s3":
        from mountfs.backends.s3 import S3Store
        from mountfs.config import s3 as s3_settings

        return S3Store(s3_settings.resolve(url, config), config.retry)
    if url.scheme == "gs":
        from mountfs.backends.gcs import GcsStore
        from mountfs.config import gcs as gcs_settings

        return GcsStore(gcs_settings.resolve(url, config), config.retry)
    if url.scheme == "az":
        from mountfs.backends.azure import AzureStore
        from mountfs.config import azure as azure_settings

        return AzureStore(azure_settings.resolve(url, config), config.retry)
    if url.scheme == "fs":
        raise Unsupported(f"{url.raw}: fs:// names a folder by its Supervisely storage id; map it to the "
                          f'folder with [[path_substitution]] registered_prefix = "fs://{url.bucket}", '
                          'local_prefix = "file:///folder"')
    raise Unsupported(f"{url.raw}: {url.scheme}:// stores are not supported by this version of mountfs "
                      f"(supported: {', '.join(s + '://' for s in SUPPORTED_SCHEMES)})")


def list_buckets(url: StoreUrl, config: Config) -> list[tuple[str, str | None]]:
    """The buckets (containers) at the endpoint of a URL that names none, for a mount of all of them:
    (name, its region when the store says it)."""
    if url.scheme == "s3":
        from mountfs.backends import s3
        from mountfs.config import s3 as s3_settings

        return s3.list_buckets(s3_settings.resolve(url, config), config.retry, regions=url.host is None)
    if url.scheme == "gs":
        from mountfs.backends import gcs
        from mountfs.config import gcs as gcs_settings

        return [(name, None) for name in gcs.list_buckets(gcs_settings.resolve(url, config), config.retry)]
    if url.scheme == "az":
        from mountfs.backends import azure
        from mountfs.config import azure as azure_settings

        names = azure.list_buckets(azure_settings.resolve(url, config), config.retry)
        return [(name, None) for name in names]
    raise Unsupported(f"{url.raw}: {url.scheme}:// has no list of buckets; name the bucket in the URL")
