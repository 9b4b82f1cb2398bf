"""The sections that are not about one store: [cache], [read], [write], [retry]."""

from __future__ import annotations

import os
from collections.abc import Callable

from mountfs.config.model import CacheConfig, MinFree, ReadConfig, RetryConfig, WriteConfig
from mountfs.config.reader import ABSENT, Reader, Table
from mountfs.config.toml_text import Path
from mountfs.config.values import (
    block_size_problem,
    connections,
    format_size,
    parse_min_free,
    part_size_problem,
    positive,
)

CHUNK = 16 * 1024  # the block cache's checksum chunk: the least a read at random fetches

_CACHE_KEYS = ("dir", "max_size", "max_files", "expiry", "block_size", "min_free")
_READ_KEYS = (
    "metadata_ttl", "negative_ttl", "max_concurrency", "readahead_max", "max_memory", "kernel_readahead",
    "offline_grace", "random_fetch",
)  # fmt: skip
_WRITE_KEYS = ("part_size", "max_concurrency", "drain_timeout")
_RETRY_KEYS = ("attempts", "base_delay", "max_delay", "budget", "request_timeout")


def cache_section(r: Reader, root: Table) -> CacheConfig:
    path, t = r.sub(root, (), "cache", _CACHE_KEYS)
    default = CacheConfig()
    cache_dir = r.str_(t, path, "dir", allow_empty=True)
    if cache_dir == "":
        r.error((*path, "dir"), "must not be empty", "leave dir out to use the default")
        cache_dir = None
    if cache_dir is not None:
        cache_dir = os.path.expanduser(cache_dir)
        if os.path.isabs(cache_dir) and os.path.normpath(cache_dir) in ("/", "//"):
            r.error(
                (*path, "dir"),
                "must not be the root directory",
                'give the cache a folder of its own, e.g. "/var/cache/mountfs"',
            )
            cache_dir = None
        elif not os.path.isabs(cache_dir):
            r.error(
                (*path, "dir"),
                f'"{cache_dir}" is not an absolute path',
                "the daemon runs from /, so a relative cache dir would move",
            )
            cache_dir = None
    block_size = r.size(t, path, "block_size", default.block_size, block_size_problem)
    max_size = r.size(t, path, "max_size", default.max_size)
    if max_size < block_size:
        r.error((*path, "max_size"), f"must hold at least one block ({format_size(block_size)})")
    return CacheConfig(
        dir=os.path.normpath(cache_dir) if cache_dir else default.dir,
        max_size=max_size,
        max_files=r.int_(t, path, "max_files", default.max_files),
        expiry=r.duration(t, path, "expiry", default.expiry, positive),
        block_size=block_size,
        min_free=min_free(r, t, path, "min_free", default.min_free),
    )


def min_free(r: Reader, tbl: Table, path: Path, key: str, default: MinFree) -> MinFree:
    value = r.raw(tbl, path, key)
    if value is ABSENT:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        r.type_error((*path, key), 'a size such as "10GiB" or a percentage such as "5%"', value)
        return default
    try:
        return parse_min_free(value)
    except ValueError as exc:
        r.value_error((*path, key), exc)
        return default


def random_fetch_problem(block_size: int) -> Callable[[int], str | None]:
    """The rule for read.random_fetch with blocks of `block_size` bytes."""

    def problem(v: int) -> str | None:
        if v < CHUNK or v & (v - 1):
            return f"must be a power of two of at least {format_size(CHUNK)} (the checksum chunk), got " \
                   f"{format_size(v)}"
        if v > block_size:
            return f"must be at most the block size ({format_size(block_size)}), got {format_size(v)}"
        return None

    return problem


def read_section(r: Reader, root: Table, block_size: int = CacheConfig.block_size) -> ReadConfig:
    path, t = r.sub(root, (), "read", _READ_KEYS)
    default = ReadConfig()
    return ReadConfig(
        metadata_ttl=r.duration(t, path, "metadata_ttl", default.metadata_ttl),
        negative_ttl=r.duration(t, path, "negative_ttl", default.negative_ttl),
        max_concurrency=r.int_(t, path, "max_concurrency", default.max_concurrency, connections),
        readahead_max=r.size(t, path, "readahead_max", default.readahead_max, lambda v: None),
        max_memory=r.size(t, path, "max_memory", default.max_memory),
        kernel_readahead=r.size(t, path, "kernel_readahead", default.kernel_readahead, lambda v: None),
        offline_grace=r.duration(t, path, "offline_grace", default.offline_grace),
        random_fetch=r.size(t, path, "random_fetch", default.random_fetch, random_fetch_problem(block_size)),
    )


def write_section(r: Reader, root: Table) -> WriteConfig:
    path, t = r.sub(root, (), "write", _WRITE_KEYS)
    default = WriteConfig()
    return WriteConfig(
        part_size=r.size(t, path, "part_size", default.part_size, part_size_problem),
        max_concurrency=r.int_(t, path, "max_concurrency", default.max_concurrency, connections),
        drain_timeout=r.duration(t, path, "drain_timeout", default.drain_timeout),
    )


def retry_section(r: Reader, root: Table) -> RetryConfig:
    path, t = r.sub(root, (), "retry", _RETRY_KEYS)
    default = RetryConfig()
    return RetryConfig(
        attempts=r.int_(t, path, "attempts", default.attempts),
        base_delay=r.duration(t, path, "base_delay", default.base_delay),
        max_delay=r.duration(t, path, "max_delay", default.max_delay),
        budget=r.duration(t, path, "budget", default.budget),
        request_timeout=r.duration(t, path, "request_timeout", default.request_timeout, positive),
    )
