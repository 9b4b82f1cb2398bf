"""The one place that picks the store adapter for a URL."""

from __future__ import annotations

from mountfs.backends.base import ObjectStore
from mountfs.config import Config, StoreUrl
from mountfs.errors import Unsupported

SUPPORTED_SCHEMES = ("file",)


def open_store(url: StoreUrl, config: Config) -> ObjectStore:
    """The adapter for `url`. Constructing it does no I/O; call `check_access` for that."""
    if url.scheme == "file":
        from mountfs.backends.local import LocalStore

        return LocalStore(url.bucket)
    raise Unsupported(f"{url.raw}: {url.scheme}:// stores are not supported by this version of mountfs "
                      f"(supported: {', '.join(s + '://' for s in SUPPORTED_SCHEMES)})")
