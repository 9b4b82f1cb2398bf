"""The life of one mount: check everything, mount, serve, unmount cleanly.

All checks that can fail (config, mount point, each bucket's access) run before the fork, so
their errors reach the terminal as one line and nothing is left mounted. Without `-f` the
command returns only once the mount answers a stat, the way `mount` callers expect.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import lmdb
import pyfuse3
import trio

from mountfs import control, logs
from mountfs.backends.async_store import AsyncStore
from mountfs.backends.base import ObjectStore
from mountfs.backends.listed import ListedStore
from mountfs.backends.registry import list_buckets, open_store
from mountfs.cache.block_cache import EVICTION_INTERVAL, BlockCache
from mountfs.cache.eviction import CacheLimits
from mountfs.cache.prefetch import PrefetchScheduler
from mountfs.cache.shared import open_shared_cache
from mountfs.config import (
    Config,
    InvalidValue,
    MountConfig,
    S3Credentials,
    StoreUrl,
    block_size_problem,
    format_size,
    load_source,
    parse_size,
    parse_url,
    secret_values,
)
from mountfs.config.metrics import parse_listen
from mountfs.config.model import MetricsConfig
from mountfs.config.shared_cache import from_option as shared_cache_option
from mountfs.config.urls import shown_url
from mountfs.errors import MountfsError, NoCredentials, NotFound, printable, without_credentials
from mountfs.fs.operations import Operations, Ownership
from mountfs.kernel_mounts import mount_type
from mountfs.kernel_tuning import raise_background_requests, raise_readahead
from mountfs.namespace.inodes import MountRoot
from mountfs.namespace.tree import Namespace
from mountfs.passthrough import Passthrough
from mountfs.sizes import human_bytes
from mountfs.upload.journal import UploadJournal
from mountfs.upload.recovery import Recovered, recover
from mountfs.upload.uploader import PendingUpload, Uploader

if TYPE_CHECKING:
    from mountfs.metrics import MetricsServer

log = logging.getLogger(__name__)

# Options that mount(8) and fstab pass along and that mean nothing to a FUSE daemon.
IGNORED_OPTIONS = frozenset({
    "rw", "defaults", "_netdev", "nofail", "noauto", "auto", "user", "users", "nouser", "owner",
    "group", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime",
    "strictatime", "nodiratime", "async", "sync", "silent", "loud",
})
IGNORED_PREFIXES = ("x-", "comment=")
FLAG_OPTIONS = {"allow_other", "allow_root", "default_permissions", "ro", "nonempty", "debug", "cache_local"}
VALUE_OPTIONS = {"uid", "gid", "umask", "cache_dir", "block_size", "log", "fsname", "config", "metrics",
                 "log_format", "log_size", "file_mode", "dir_mode", "shared_cache"}
# glibc's mallopt parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
FREE_MEMORY_INTERVAL = 60.0  # seconds between returns of the heap's free pages to the system
SD_STATUS_INTERVAL = 10.0  # seconds between STATUS= lines to systemd (`systemctl status` shows the last)


class MountSetupError(MountfsError):
    """Something to fix before mounting; the message is the one line the user sees."""

    def __init__(self, message: str) -> None:
        super().__init__(printable(without_credentials(message)))


@dataclass(frozen=True)
class MountOptions:
    uid: int
    gid: int
    umask: int = 0o022
    file_mode: int | None = None  # every file's permission bits (else 666 less the umask)
    dir_mode: int | None = None  # every directory's (else 777 less the umask)
    allow_other: bool = False
    allow_root: bool = False
    default_permissions: bool = False
    read_only: bool = False
    cache_local: bool = False  # no direct access: local files go through the block cache too
    nonempty: bool = False
    debug: bool = False
    cache_dir: str | None = None
    block_size: int | None = None
    log_file: str | None = None
    log_format: str = "text"  # or "json": one object per line
    log_size: int = logs.LOG_SIZE  # a log file rotates at this size
    fsname: str | None = None
    config: str | None = None  # a file whose settings apply to SOURCE's mounts ("clearml": ClearML's own)
    shared_cache: str | None = None  # the URL of a fleet's shared block cache
    metrics: str | None = None  # where to serve Prometheus text, as [metrics] listen (which it overrides)


def parse_options(values: list[str]) -> MountOptions:
    """`-o a,b=c` values, as mount.fuse3 passes them."""
    flags: dict[str, bool] = {}
    settings: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item or item in IGNORED_OPTIONS or item.startswith(IGNORED_PREFIXES):
                continue
            name, has_value, setting = item.partition("=")
            if name in FLAG_OPTIONS and not has_value:
                flags[name] = True
            elif name in VALUE_OPTIONS and has_value:
                settings[name] = setting
            else:
                known = sorted(FLAG_OPTIONS | {v + "=" for v in VALUE_OPTIONS})
                raise MountSetupError(f"unknown mount option {item!r} (known: {', '.join(known)})")
    if flags.get("allow_other") and flags.get("allow_root"):
        raise MountSetupError("mount options allow_other and allow_root exclude each other "
                              "(allow_other already lets root in)")
    try:
        return MountOptions(
            uid=_id_option("uid", settings.get("uid"), os.getuid()),
            gid=_id_option("gid", settings.get("gid"), os.getgid()),
            umask=_umask_option(settings.get("umask", "022")),
            file_mode=_umask_option(settings["file_mode"], "file_mode") if "file_mode" in settings else None,
            dir_mode=_umask_option(settings["dir_mode"], "dir_mode") if "dir_mode" in settings else None,
            allow_other=flags.get("allow_other", False),
            allow_root=flags.get("allow_root", False),
            default_permissions=flags.get("default_permissions", False),
            read_only=flags.get("ro", False),
            nonempty=flags.get("nonempty", False),
            cache_local=flags.get("cache_local", False),
            debug=flags.get("debug", False),
            cache_dir=settings.get("cache_dir"),
            block_size=_block_size(settings["block_size"]) if "block_size" in settings else None,
            log_file=settings.get("log"),
            log_format=_log_format(settings.get("log_format", "text")),
            log_size=_log_size(settings["log_size"]) if "log_size" in settings else logs.LOG_SIZE,
            fsname=settings.get("fsname"),
            config=settings.get("config") or None,
            shared_cache=settings.get("shared_cache") or None,
            metrics=_metrics_option(settings["metrics"]) if "metrics" in settings else None,
        )
    except ValueError as exc:
        raise MountSetupError(f"bad mount option value: {exc}") from exc


def _umask_option(text: str, name: str = "umask") -> int:
    """Octal permission bits only (a umask, file_mode or dir_mode): a negative or huge one would make
    every mode ----------, and setuid bits are not ours to give."""
    if not (text.isascii() and text.isdigit() and set(text) <= set("01234567") and int(text, 8) <= 0o777):
        raise MountSetupError(f"bad mount option {name}={text!r}: expected octal digits from 000 to 777")
    return int(text, 8)


def _id_option(name: str, text: str | None, default: int) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and int(text) < 2**32 - 1):
        raise MountSetupError(f"bad mount option {name}={text!r}: expected a number from 0 to {2**32 - 2}")
    return int(text)


def _log_format(text: str) -> str:
    if text not in logs.FORMATS:
        raise MountSetupError(f"bad mount option log_format={text}: expected {' or '.join(logs.FORMATS)}")
    return text


def _option_size(name: str, text: str) -> int:
    """A size option's bytes; a bad one is refused naming the option."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise MountSetupError(f"bad mount option {name}={text}: {exc}") from exc


def _log_size(text: str) -> int:
    value = _option_size("log_size", text)
    if value < 4096:
        raise MountSetupError(f"bad mount option log_size={text}: at least 4KiB (a few lines)")
    return value


def _metrics_option(text: str) -> str:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise MountSetupError(f"bad mount option metrics={text}: {exc}") from None


def _block_size(text: str) -> int:
    """`-o block_size=`, held to the rule of the config key: a block size of a byte or a TiB
    would make the cache useless (millions of files) or a daemon hold blocks it cannot."""
    value = _option_size("block_size", text)
    problem = block_size_problem(value)
    if problem is not None:
        raise MountSetupError(f"bad mount option block_size={text}: {problem}")
    return value


@dataclass
class Prepared:
    """Everything checked and ready; only the kernel mount remains."""

    source: str
    mountpoint: str
    options: MountOptions
    config: Config
    stores: list[ObjectStore]
    metrics: MetricsServer | None = None  # bound before the fork, served by the daemon
    missing: tuple[str, ...] = ()
    """One line per optional bucket left out because it does not exist."""


def prepare(source: str, mountpoint: str, options: MountOptions) -> Prepared:
    if not mountpoint:
        raise MountSetupError("the mount point is an empty string (give a directory)")
    if options.log_file:
        check_log_file(options.log_file)
    check_allow_other(options)
    config = load_config_with(source, options)
    mountpoint = os.path.realpath(mountpoint)  # before mounting: later, resolving it would ask us
    check_mountpoint(mountpoint, options.nonempty)
    config, stores, missing = open_mounts(config)
    return Prepared(source, mountpoint, options, config, stores, metrics=bind_metrics(config.metrics.listen),
                    missing=missing)


def bind_metrics(address: str | None) -> MetricsServer | None:
    """Take the metrics address now, so that a bad or busy one fails the mount, not the daemon later."""
    if address is None:
        return None
    from mountfs.metrics import MetricsServer  # prometheus_client: only for daemons that serve metrics

    try:
        return MetricsServer(address)
    except OSError as exc:
        raise MountSetupError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from exc


def load_config_with(source: str, options: MountOptions) -> Config:
    """The config of `source` with the mount options that override it (cache_dir, block_size, ro)."""
    config = load_source(source, options.config)
    cache = config.cache
    if options.cache_dir:
        if os.path.abspath(options.cache_dir) in ("/", "//"):
            raise MountSetupError(f"bad mount option cache_dir={options.cache_dir}: "
                                  "the cache needs a folder of its own")
        cache = dataclasses.replace(cache, dir=os.path.abspath(options.cache_dir))
    if options.block_size is not None:
        if cache.max_size < options.block_size:
            size, room = format_size(options.block_size), format_size(cache.max_size)
            raise MountSetupError(f"bad mount option block_size={size}: the cache's max_size ({room}) "
                                  "must hold at least one block")
        cache = dataclasses.replace(cache, block_size=options.block_size)
    mounts = config.mounts
    if options.read_only:
        mounts = tuple(dataclasses.replace(m, read_only=True) for m in mounts)
    if options.cache_local:
        config = dataclasses.replace(config, direct_access=())
    if options.metrics:
        config = dataclasses.replace(config, metrics=MetricsConfig(listen=options.metrics))
    config = expand_endpoints(config, mounts)
    config = dataclasses.replace(config, cache=cache, mounts=substitute_mounts(config, config.mounts))
    if options.shared_cache:
        try:
            shared = shared_cache_option(options.shared_cache, config)
        except InvalidValue as exc:
            raise MountSetupError(f"bad mount option shared_cache={shown_url(options.shared_cache)}: "
                                  f"{exc}") from None
        config = dataclasses.replace(config, shared_cache=shared)
    for glob in unreachable_globs(config):
        log.warning("[[direct_access]] %s matches nothing served from a local path: direct access "
                    "passes through local or NFS files only (add a [[path_substitution]] to a "
                    "file:// prefix for it)", glob)
    return config


def expand_endpoints(config: Config, mounts: tuple[MountConfig, ...]) -> Config:
    """A mount whose URL names a whole endpoint (`s3://host:port/`, bucket "") becomes one mount per
    bucket there, listed now, each a directory named after its bucket. An AWS bucket in another
    region than the one configured gets an [[s3.credentials]] entry with its region (ListBuckets
    says it), unless the config has one for that bucket."""
    out: list[MountConfig] = []
    regions: list[S3Credentials] = []
    for entry in mounts:
        if entry.url.bucket or entry.url.scheme == "file":
            out.append(entry)
            continue
        found = _buckets_at(entry.url, config)
        for name, region in sorted(found):
            url = StoreUrl(entry.url.scheme, entry.url.host, name, "", _bucket_url(entry.url, name))
            out.append(dataclasses.replace(entry, path="/".join(p for p in (entry.path, name) if p), url=url))
            known = any(c.bucket == name for c in config.s3.credentials)
            if entry.url.scheme == "s3" and entry.url.host is None and region and not known:
                regions.append(S3Credentials(bucket=name, region=region))
        log.info("%s: %d bucket(s): %s", entry.url.raw, len(found), ", ".join(sorted(n for n, _ in found)))
    s3 = dataclasses.replace(config.s3, credentials=config.s3.credentials + tuple(regions))
    return dataclasses.replace(config, mounts=tuple(out), s3=s3)


def _buckets_at(url: StoreUrl, config: Config) -> list[tuple[str, str | None]]:
    where = shown_url(url.raw)
    try:
        found = list_buckets(url, config)
    except NoCredentials as exc:  # naming the buckets would not help: they need credentials too
        raise MountSetupError(f"cannot list the buckets of {where}: {exc}") from exc
    except MountfsError as exc:
        raise MountSetupError(
            f"cannot list the buckets of {where} ({exc}); name the buckets instead: a TOML config with "
            "a [[mount]] per bucket, or a links file given with -o config=") from exc
    if not found:
        raise MountSetupError(f"{where} has no buckets these credentials can see; nothing to mount")
    return found


def _bucket_url(url: StoreUrl, bucket: str) -> str:
    """The URL of one bucket of a whole endpoint, as it would be written."""
    if url.scheme == "az":
        return f"az://{bucket}@{url.host}"
    return f"{url.scheme}://{url.host}/{bucket}" if url.host else f"{url.scheme}://{bucket}"


def substitute_mounts(config: Config, mounts: tuple[MountConfig, ...]) -> tuple[MountConfig, ...]:
    """[[path_substitution]], once, at mount time: a mount whose URL is (under) a registered prefix
    is served from the local prefix instead (s3://b/research/x -> file:///mnt/nfs/research/x); a
    registered prefix inside a mount's URL becomes a mount of its own, grafted at that directory
    (s3://b mounted at "ds": ds/research is served from file:///mnt/nfs/research)."""
    rules = Passthrough.from_config(config)
    out = []
    for entry in mounts:
        out.append(_substituted(entry, rules.substitute(entry.url.raw), entry.url.raw))
        for relative, registered in rules.prefixes_inside(entry.url.raw):
            path = "/".join(p for p in (entry.path, relative) if p)
            grafted = dataclasses.replace(entry, path=path, objects=_objects_under(entry.objects, relative))
            out.append(_substituted(grafted, rules.substitute(registered), registered))
    return tuple(out)


def _objects_under(objects: tuple[str, ...] | None, folder: str) -> tuple[str, ...] | None:
    """The listed objects of a mount that are in its `folder`, relative to it."""
    if objects is None:
        return None
    return tuple(key[len(folder) + 1:] for key in objects if key.startswith(folder + "/"))


def _substituted(entry: MountConfig, target: str, url: str) -> MountConfig:
    """`entry` served from `target`, what [[path_substitution]] made of `url` (its own URL or a
    registered prefix inside it)."""
    if target == entry.url.raw:
        return entry
    try:
        parsed = parse_url(target)
    except InvalidValue as exc:
        raise MountSetupError(f"{url} is substituted by {target}, which is not a "
                              f"mountable URL: {exc.message}") from exc
    log.info("%s is served from %s (path_substitution)", url, target)
    return dataclasses.replace(entry, url=parsed, substituted_for=url)


def direct_access(config: Config, entry: MountConfig) -> dict[str, Any]:
    """The MountRoot fields that pass a file:// mount's files straight through (no block cache, no
    staged upload): all of them when the mount's URL matches a [[direct_access]] glob (`file://*`
    by default), else those whose own file URL matches one. A mount served by [[path_substitution]]
    is also matched by the URL it stands for (`s3://b/research/*`). Other stores are always cached:
    only a local or NFS file can be passed through."""
    if entry.url.scheme != "file" or entry.objects is not None:  # listed objects: read through their list
        return {}
    rules = Passthrough.from_config(config)
    if not rules.direct_access:
        return {}
    root = entry.url.bucket.rstrip("/")
    original = entry.substituted_for.rstrip("/") if entry.substituted_for else None
    if (rules.is_direct(entry.url.raw, folder=True) or rules.is_direct("file://" + root + "/", folder=True)
            or (original is not None and rules.is_direct(original + "/", folder=True))):
        return {"local_root": entry.url.bucket, "direct": True}

    def matches(key: str) -> bool:
        return rules.is_direct("file://" + root + "/" + key) or (
            original is not None and rules.is_direct(original + "/" + key))

    return {"local_root": entry.url.bucket, "direct_match": matches}


def unreachable_globs(config: Config) -> list[str]:
    """[[direct_access]] globs that can match no file this mount serves locally: not file:// and
    not covering any substituted URL. Worth a warning: they silently do nothing."""
    originals = [m.substituted_for for m in config.mounts if m.substituted_for]
    out = []
    for glob in config.direct_access or ():
        if glob.url is None:  # a content type alone: local files of that type are direct
            continue
        text = glob.url.strip()
        if text.lower().startswith("file://") or text.startswith("*"):
            continue
        scheme = text.partition("://")[0].lower()
        if not any(o.lower().startswith(scheme + "://") for o in originals):
            out.append(text)
    return out


def open_stores(config: Config) -> list[ObjectStore]:
    """One store per mount entry, each checked for access; the cache dir made."""
    return open_mounts(config, skip_missing=False)[1]


def open_mounts(config: Config, *, skip_missing: bool = True
                ) -> tuple[Config, list[ObjectStore], tuple[str, ...]]:
    """The config of the mounts that opened, their stores, and a line for each optional mount left
    out because its bucket does not exist (when others remain: a mount of nothing is an error)."""
    stores = []
    kept: list[MountConfig] = []
    missing: list[str] = []
    rules = Passthrough.from_config(config)
    for entry in config.mounts:
        within = rules.substitution_base(entry.substituted_for) if entry.substituted_for else None
        try:
            store = open_store(entry.url, config, within=within)
            if entry.objects is not None:
                prefix = entry.url.prefix + "/" if entry.url.prefix else ""
                store = ListedStore(store, (prefix + key for key in entry.objects))
            store.check_access()
        except NotFound as exc:
            if not (skip_missing and entry.optional):
                raise MountSetupError(f"cannot use {entry.url.raw}: {exc}") from exc
            missing.append(f"{entry.path or '/'} left out: {exc}")
            continue
        except MountfsError as exc:
            raise MountSetupError(f"cannot use {entry.url.raw}: {exc}") from exc
        stores.append(store)
        kept.append(entry)
    if missing and not kept:
        raise MountSetupError("nothing to mount: " + "; ".join(missing))
    try:
        os.makedirs(config.cache.dir, exist_ok=True)
    except OSError as exc:
        raise MountSetupError(f"cannot create cache dir {config.cache.dir}: {exc.strerror}") from exc
    return dataclasses.replace(config, mounts=tuple(kept)), stores, tuple(missing)


def make_roots(config: Config, stores: list[ObjectStore], journal: UploadJournal | None,
               *, all_writable: bool = False) -> list[MountRoot]:
    """The namespace's view of each mount; writable ones get an uploader on the shared journal
    (`all_writable`: every one, for `mountfs recover`)."""
    roots = []
    for entry, store in zip(config.mounts, stores, strict=True):
        writable = journal is not None and (all_writable or not entry.read_only)
        # Reads and uploads share the store's threads: enough for the parts an upload keeps in flight
        uploads = (store.upload_concurrency or config.write.max_concurrency) if writable else 0
        async_store = AsyncStore(store, max(config.read.max_concurrency, uploads))
        uploader = None
        if writable and journal is not None:
            uploader = Uploader(async_store, journal, config.write,
                                supports_multipart=store.supports_multipart)
        roots.append(MountRoot(entry.path, async_store, entry.url.prefix + "/" if entry.url.prefix else "",
                               entry.read_only, uploader, **direct_access(config, entry)))
    return roots


def recover_cache(config: Config, stores: list[ObjectStore]) -> list[Recovered]:
    """`mountfs recover`: upload what dead daemons left staged in the cache dir, without mounting."""
    try:
        journal = UploadJournal(config.cache.dir)
    except (OSError, RuntimeError, lmdb.Error) as exc:
        raise MountSetupError(f"cannot open the upload journal in {config.cache.dir}: {exc}") from exc
    try:
        roots = make_roots(config, stores, journal, all_writable=True)
        uploaders = [root.uploader for root in roots if root.uploader is not None]
        return trio.run(recover, journal, uploaders)
    finally:
        journal.close()


def check_log_file(path: str) -> None:
    """`-o log=` names a file in an existing folder: a typo there must not create folders."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise MountSetupError(f"bad mount option log={path!r}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise MountSetupError(f"bad mount option log={path!r}: is a directory, not a file")


def check_allow_other(options: MountOptions, fuse_conf: str = "/etc/fuse.conf") -> None:
    """fusermount3 refuses allow_other/allow_root to users other than root unless fuse.conf says
    user_allow_other; it says so on a stderr the daemon no longer has, so say it here."""
    if not (options.allow_other or options.allow_root) or os.geteuid() == 0:
        return
    try:
        with open(fuse_conf) as f:
            allowed = any(line.split("#", 1)[0].strip() == "user_allow_other" for line in f)
    except OSError:
        allowed = False
    if not allowed:
        flag = "allow_other" if options.allow_other else "allow_root"
        raise MountSetupError(f"mount option {flag} is for root only unless {fuse_conf} has a line "
                              "user_allow_other (root adds it)")


def check_mountpoint(mountpoint: str, nonempty: bool) -> None:
    try:
        is_dir = stat.S_ISDIR(os.stat(mountpoint).st_mode)
    except FileNotFoundError:
        raise MountSetupError(f"mount point {mountpoint} does not exist") from None
    except OSError as exc:
        if mount_type(mountpoint):
            raise MountSetupError(f"{mountpoint} is a dead mount ({exc.strerror}): its daemon is gone; "
                                  f"run `mountfs umount {mountpoint}` first") from exc
        raise MountSetupError(f"cannot use mount point {mountpoint}: {exc.strerror}") from exc
    if not is_dir:
        raise MountSetupError(f"mount point {mountpoint} is not a directory")
    if mount_type(mountpoint):
        raise MountSetupError(f"{mountpoint} is already a mount point")
    if not nonempty and os.listdir(mountpoint):
        raise MountSetupError(f"mount point {mountpoint} is not empty (use -o nonempty to mount over it)")


# --- running -------------------------------------------------------------------------------

Notify = Callable[[str], None]


def run(prepared: Prepared, foreground: bool) -> int:
    """Mount and serve until unmounted. Returns the exit code."""
    if foreground:
        _setup_logging(prepared, None)
        return serve(prepared, lambda message: None)
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            message = reader.read().decode(errors="replace").strip()
        if message == "ok":
            return 0
        print(f"mountfs: {message or 'the daemon exited before the mount was ready'}", file=sys.stderr)
        return 1
    os.close(read_end)
    os.setsid()
    log_file = prepared.options.log_file or os.path.join(
        control.runtime_dir(), control.mount_id(prepared.mountpoint) + ".log")
    _detach_stdio()
    _setup_logging(prepared, log_file)
    pipe = os.fdopen(write_end, "wb", buffering=0)

    def notify(message: str) -> None:
        if not pipe.closed:
            with contextlib.suppress(OSError):
                pipe.write(message.encode() + b"\n")
            pipe.close()

    code = 1
    try:
        code = serve(prepared, notify)
    except BaseException:
        log.exception("daemon failed")
    finally:
        notify(f"the daemon stopped (exit {code}); see {log_file}")
        logging.shutdown()
        os._exit(code)


def serve(prepared: Prepared, notify: Notify) -> int:
    config, options = prepared.config, prepared.options
    _reuse_block_memory()
    read = config.read
    # read.max_memory is shared out: half keeps recent blocks in memory (the block a reader is in,
    # and the prefetched ones waiting for it), a quarter bounds the bytes prefetches have in
    # flight. A handle's window never outgrows half the memory cache, or its prefetched blocks
    # would be evicted before the reader arrives.
    memory_cache = read.max_memory // 2
    try:
        journal = UploadJournal(config.cache.dir)
    except (OSError, RuntimeError, lmdb.Error) as exc:
        notify(f"cannot open the upload journal in {config.cache.dir}: {exc}")
        return 1
    cache = BlockCache(config.cache.dir, config.cache.block_size, memory_cache,
                       random_fetch=config.read.random_fetch)
    cache.shared = open_shared_cache(config)
    if cache.shared is not None:  # blocks queued for it beyond its memory bound are read back from disk
        cache.shared.reload = cache.load_whole
    prefetch = PrefetchScheduler(cache, read.max_concurrency, read.max_memory // 4)
    roots = make_roots(config, prepared.stores, journal)
    namespace = Namespace(roots, config.read.metadata_ttl, config.read.negative_ttl)
    operations = Operations(namespace, cache, Ownership(options.uid, options.gid, options.umask,
                                                         options.file_mode, options.dir_mode),
                            prefetch, min(read.readahead_max, memory_cache // 2), recovering=True)
    operations.xattrs.mount_urls = {m.path: m.url.raw for m in config.mounts}
    daemon = Daemon(prepared, cache, operations, notify, journal)
    fuse_options = {"fsname=" + (options.fsname or prepared.source).replace(",", "_"), "subtype=mountfs"}
    for flag in ("allow_other", "allow_root", "default_permissions"):
        if getattr(options, flag):
            fuse_options.add(flag)
    if options.read_only:
        fuse_options.add("ro")
    if options.debug:
        fuse_options.add("debug")
    try:
        pyfuse3.init(operations, prepared.mountpoint, fuse_options)
    except RuntimeError as exc:
        cache.close()
        journal.close()
        notify(f"cannot mount {prepared.mountpoint}: {exc}")
        return 1
    log.info("mounted %s on %s", prepared.source, prepared.mountpoint)
    for line in prepared.missing:
        log.warning("%s", line)
    for note in prepared.config.notes:
        log.info("%s: not used: %s", printable(without_credentials(prepared.config.source)), note)
    try:
        trio.run(daemon.main)
    finally:
        if prepared.metrics is not None:
            prepared.metrics.close()
        daemon.unmount()
        log.info("unmounted %s; %s", prepared.mountpoint, daemon.summary())
        cache.close()
        journal.close()
    return 0


class Daemon:
    """The trio side: the FUSE loop plus control socket, signals and housekeeping."""

    def __init__(self, prepared: Prepared, cache: BlockCache, operations: Operations,
                 notify: Notify, journal: UploadJournal | None = None) -> None:
        self.prepared = prepared
        self.cache = cache
        self.operations = operations
        self.notify = notify
        self.journal = journal
        self.started = time.time()
        self.uploaders = [root.uploader for root in operations.namespace.mounts if root.uploader is not None]
        self.recovered: list[Recovered] = []
        # Limits (max_size, max_files, expiry, min_free): kept by run_eviction, started in main(),
        # which also evicts at once whenever a commit crosses max_size or max_files. A pass runs at
        # least every EVICTION_INTERVAL, and often enough for a short expiry to hold to a quarter.
        limits = CacheLimits.from_config(prepared.config.cache)
        interval = EVICTION_INTERVAL if limits.expiry is None else min(EVICTION_INTERVAL,
                                                                        max(1.0, limits.expiry / 4))
        cache.enable_eviction(limits, interval)
        if operations.prefetch is not None:  # blocks fetched too far ahead would be evicted unread
            operations.prefetch.ahead_bytes = cache.capacity() // 2
        # Expired metadata is served this long past its TTL while a store is offline.
        operations.namespace.offline_grace = prepared.config.read.offline_grace
        self.draining = False
        self.drained = trio.Event()
        self.left: list[PendingUpload] = []  # what the drain at unmount could not upload
        self._mounted = True
        self._answering = 0  # control requests not yet answered
        self._umount_lock = trio.Lock()
        self._detached = False  # unmounted through the control socket: the drain follows
        self.cache_dir_check_interval = 1.0  # seconds between checks that the cache dir is still there

    def unmount(self) -> None:
        """Detach the kernel mount (once): nothing waits on a daemon that no longer serves."""
        if self._mounted:
            self._mounted = False
            pyfuse3.close(unmount=True)

    async def main(self) -> None:
        removed = await self.cache.startup()
        if removed:
            log.info("removed %d half-written block files left by a killed daemon", removed)
        async with trio.open_nursery() as nursery:
            if self.operations.prefetch is not None:
                self.operations.prefetch.nursery = nursery
            self.cache.nursery = nursery
            self.operations.namespace.nursery = nursery
            nursery.start_soon(self.cache.run_housekeeping)
            nursery.start_soon(self.cache.run_committer)
            nursery.start_soon(self.cache.run_eviction)
            for store in {id(root.store): root.store for root in self.operations.namespace.mounts}.values():
                nursery.start_soon(store.prepare)  # the first request must not wait for an SDK client
            if self.cache.shared is not None:
                nursery.start_soon(self.cache.shared.run)
            for uploader in self.uploaders:
                await nursery.start(uploader.run)
            nursery.start_soon(self._recover)
            await nursery.start(partial(control.serve, replied=self._replied),
                                control.socket_path(self.prepared.mountpoint), self.answer)
            nursery.start_soon(self._on_signals)
            nursery.start_soon(self._watch_cache_dir)
            nursery.start_soon(self._return_free_memory)
            nursery.start_soon(self._announce_ready)
            self._serve_metrics()
            await pyfuse3.main()
            self.draining = True
            self.unmount()
            await self._drain()
            with trio.move_on_after(5):  # the last answers (umount waits for one) go out first
                while self._answering:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    def _serve_metrics(self) -> None:
        if self.prepared.metrics is not None:
            from mountfs.metrics import fetcher

            self.prepared.metrics.start(fetcher(self, trio.lowlevel.current_trio_token()))
            log.info("metrics at http://%s/metrics", self.prepared.metrics.bound)

    async def _return_free_memory(self) -> None:
        """Now and then give the heap's free pages back (see `return_free_memory`)."""
        while await trio.to_thread.run_sync(return_free_memory):
            await trio.sleep(FREE_MEMORY_INTERVAL)

    async def _watch_cache_dir(self) -> None:
        """A cache dir deleted (or replaced) under a running mount would take new writes into files
        no one can find again: say so once, and refuse new data (EROFS) until it is remounted."""
        path = self.cache.cache_dir

        def identity() -> tuple[int, int] | None:
            try:
                st = os.stat(path)
            except OSError:
                return None
            return st.st_dev, st.st_ino

        first = await trio.to_thread.run_sync(identity)
        while first is not None:
            await trio.sleep(self.cache_dir_check_interval)
            now = await trio.to_thread.run_sync(identity)
            if now != first:
                what = "deleted" if now is None else "replaced"
                reason = (f"the cache dir {path} was {what} while mounted: new writes are refused "
                          "(read-only) until mountfs is mounted again")
                log.error("%s", reason)
                self.operations.writes.refuse(reason)
                return

    async def _recover(self) -> None:
        """Finish what a killed daemon left staged in this cache dir; writes wait until it is done."""
        try:
            if self.journal is not None:
                self.recovered = await recover(self.journal, self.uploaders)
        except Exception:
            log.exception("recovery of pending uploads failed; they stay journalled for the next mount")
        finally:
            self.operations.writes.ready.set()

    async def _drain(self) -> None:
        """Unmounted (umount, SIGTERM): upload what is pending, for up to write.drain_timeout."""
        self.draining = True
        timeout = self.prepared.config.write.drain_timeout
        pending = [item for uploader in self.uploaders for item in uploader.pending()]
        _sd_notify(f"STOPPING=1\nSTATUS=unmounting: {len(pending)} upload(s) pending "
                   f"({human_bytes(sum(item.size for item in pending))})")
        if pending:
            log.info("waiting up to %gs for %d pending upload(s) (%d bytes)", timeout, len(pending),
                     sum(item.size for item in pending))
        left: list[PendingUpload] = []

        async def drain(uploader: Uploader) -> None:
            left.extend(await uploader.drain(timeout))
            for staged in uploader.staged_uploads():  # files still open and unchanged: nothing to keep
                if not staged.dirty:
                    await uploader.release(staged)

        async with trio.open_nursery() as nursery:
            for uploader in self.uploaders:
                nursery.start_soon(drain, uploader)
        self.left = left
        if left:
            log.warning("%d upload(s) not finished at unmount; they stay staged in %s and are uploaded "
                        "by the next mount or by `mountfs recover`", len(left), self.cache.cache_dir)
        elif pending:
            log.info("every pending upload is in the store")
        self.drained.set()

    def _replied(self) -> None:
        self._answering -= 1

    def _terminate(self) -> None:
        """Stop the FUSE loop (once: after the unmount the session is gone)."""
        if self._mounted and not self.draining:
            pyfuse3.terminate()

    async def _on_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if self.draining:
                    log.info("signal %s: already unmounting, waiting for pending uploads "
                             "(SIGKILL stops at once; they stay journalled)", signal.Signals(signum).name)
                    continue
                log.info("signal %s: unmounting", signal.Signals(signum).name)
                self._terminate()

    async def _announce_ready(self) -> None:
        st = await trio.to_thread.run_sync(os.stat, self.prepared.mountpoint)
        raise_readahead(st.st_dev, self.prepared.config.read.kernel_readahead)
        raise_background_requests(st.st_dev)
        self.notify("ok")
        _sd_notify("READY=1")
        if os.environ.get("NOTIFY_SOCKET"):
            while not self.draining:
                _sd_notify("STATUS=" + await self.live_figures())
                await trio.sleep(SD_STATUS_INTERVAL)

    async def live_figures(self) -> str:
        """One line of what `mountfs status` says, for systemd's STATUS=."""
        status = await self.status()
        cache, uploads = status["cache"], status["uploads"]
        ratio = "" if cache["hit_ratio"] is None else f" ({cache['hit_ratio']:.0%} hits)"
        offline = [s["path"] or "/" for s in status["stores"] if s["offline"]]
        return (f"served {human_bytes(status['reads']['bytes_served'])}, fetched "
                f"{human_bytes(status['store']['bytes_fetched'])}{ratio}; "
                f"cache {human_bytes(cache['bytes'])}; "
                f"{len(uploads['pending'])} upload(s) pending ({human_bytes(uploads['pending_bytes'])})"
                + (f"; offline: {', '.join(offline)}" if offline else ""))

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        self._answering += 1
        op = request.get("op")
        if op == "status":
            return {"ok": True, **await self.status()}
        if op == "shutdown":
            if request.get("force"):
                log.info("forced unmount requested through the control socket")
                self._terminate()
            else:
                async with self._umount_lock:  # one attempt at a time; the first success serves all
                    if not self.draining and not self._detached:
                        log.info("unmount requested through the control socket")
                        busy = await trio.to_thread.run_sync(self._unmount_unless_busy)
                        if busy is not None:
                            log.info("unmount refused: %s", busy)
                            return {"ok": False, "busy": True, "error": busy}
                        self._detached = True
            await self.drained.wait()  # the answer says what could not be uploaded
            return {"ok": True, "pid": os.getpid(), "left": [_pending_json(p, self._path_of(p))
                                                            for p in self.left]}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _unmount_unless_busy(self) -> str | None:
        """Ask the kernel to unmount as `fusermount3 -u` does: it refuses (EBUSY) while a process has a
        file open, a directory as cwd or a map on the mount, and an open writer would otherwise lose
        what it writes next. Once unmounted the FUSE loop ends and the drain follows. Returns why not."""
        try:
            result = subprocess.run(["fusermount3", "-u", self.prepared.mountpoint],
                                    capture_output=True, text=True, check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            result = None
        if result is not None and result.returncode != 0 and "busy" in result.stderr.lower():
            return "files are open on it (or a process has its cwd there)"
        if result is None or result.returncode != 0:  # no fusermount3, or not ours to unmount: as before
            trio.from_thread.run_sync(self._terminate)
        return None

    def _path_of(self, item: PendingUpload) -> str:
        for root in self.operations.namespace.mounts:
            same_store = (root.store.store_id, root.store.bucket) == (item.store_id, item.bucket)
            if same_store and item.key.startswith(root.prefix):
                return "/".join(p for p in (root.path, item.key[len(root.prefix):]) if p)
        return item.key

    def uploads_status(self) -> dict[str, Any]:
        pending = [_pending_json(item, self._path_of(item))
                   for uploader in self.uploaders for item in uploader.pending()]
        return {
            "pending": pending,
            "pending_bytes": sum(item["size"] for item in pending),
            "failed": sum(1 for item in pending if item["state"] == "failed"),
            "completed": sum(u.stats.completed for u in self.uploaders),
            "failed_attempts": sum(u.stats.failed for u in self.uploaders),
            "streamed_parts": sum(u.stats.streamed_parts for u in self.uploaders),
            "bytes_uploaded": sum(u.store.stats.bytes_uploaded for u in self.uploaders),
            "recovering": not self.operations.writes.ready.is_set(),
            "recovered": [item.describe() for item in self.recovered],
            "draining": self.draining,
            "drain_timeout": self.prepared.config.write.drain_timeout,
        }

    async def status(self) -> dict[str, Any]:
        stats = self.cache.stats
        totals = await self.cache.totals()
        traffic = {name: {"fetched": t.fetched, "served": t.served, "amplification": t.amplification}
                   for name, t in sorted((await self.cache.traffic()).items())}
        lookups = stats.hits + stats.misses
        stores: list[dict[str, Any]] = []
        for root in self.operations.namespace.mounts:
            store_stats = root.store.stats
            lifetime = traffic.get(f"{root.store.store_id}/{root.store.bucket}",
                                   {"fetched": 0, "served": 0, "amplification": None})
            stores.append({"path": root.path, "url": _url_of(self.prepared, root.path),
                           "endpoint": root.store.endpoint, "endpoint_source": root.store.endpoint_source,
                           "requests": dict(store_stats.requests), "errors": dict(store_stats.errors),
                           "bytes_fetched": store_stats.bytes_fetched,
                           "offline": root.store.offline, "offline_for": round(root.store.offline_for, 1),
                           "failed_fast": store_stats.failed_fast, "traffic": lifetime})
        reads = self.operations.stats
        prefetch = self.operations.prefetch
        return {
            "pid": os.getpid(), "mountpoint": self.prepared.mountpoint, "source": self.prepared.source,
            "uptime": round(time.time() - self.started, 3),
            "cache": {"dir": self.cache.cache_dir, "block_size": self.cache.block_size,
                      "hits": stats.hits, "misses": stats.misses, "shared": stats.shared,
                      "corrupt": stats.corrupt, "evicted": stats.evicted, "room_made": stats.room_made,
                      "hit_ratio": round(stats.hits / lookups, 4) if lookups else None,
                      "blocks": totals.blocks, "bytes": totals.bytes},
            "reads": {"opens": reads.opens, "reads": reads.reads, "bytes_served": reads.bytes_served,
                      "prefetched_blocks": prefetch.started if prefetch else 0,
                      "prefetched_unread": stats.prefetched_unread},
            "writes": {"writes": reads.writes, "bytes_written": reads.bytes_written,
                       "refused": self.operations.writes.refused},
            "uploads": self.uploads_status(),
            "store": {"gets": sum(s["requests"].get("get", 0) for s in stores),
                      "requests": sum(sum(s["requests"].values()) for s in stores),
                      "bytes_fetched": sum(s["bytes_fetched"] for s in stores)},
            "stores": stores,
            # Bytes fetched from each store and served from it, for the cache dir's whole life.
            "traffic": traffic,
            "shared_cache": self.cache.shared.status() if self.cache.shared is not None else None,
            "missing": list(self.prepared.missing),
            "inodes": len(self.operations.namespace.inodes),
            "stale_metadata_served": self.operations.namespace.stale_served,
            "metrics": self.prepared.metrics.bound if self.prepared.metrics is not None else None,
        }

    def summary(self) -> str:
        stats = self.cache.stats
        return (f"block hits {stats.hits}, misses {stats.misses}, "
                f"bytes served {self.operations.stats.bytes_served}")


def _pending_json(item: PendingUpload, path: str) -> dict[str, Any]:
    return {"path": path, "key": item.key, "store": item.store_id, "bucket": item.bucket, "size": item.size,
            "state": item.state, "error": item.error, "attempts": item.attempts, "staged": item.staging_path}


def _url_of(prepared: Prepared, path: str) -> str:
    return next((m.url.raw for m in prepared.config.mounts if m.path == path), "")


def _reuse_block_memory() -> None:
    """Blocks are megabytes each, allocated and freed all the time: keep them in one malloc heap
    that reuses freed blocks, instead of a fresh mmap per block (page faults on every 4 KiB of
    every block: 270,000 per GiB read, a quarter of the daemon's system time) or per-thread heaps.

    Measured here on a cold 1 GiB read from SeaweedFS: 424-452 -> 480-484 MB/s, daemon CPU about
    1.9 -> 1.6 s, page faults 270,000 -> 45,000, peak RSS about 205 -> 225 MiB. glibc left to
    itself (dynamic thresholds, an arena per thread) let RSS grow with the bytes read (278 MiB
    after 1 GiB, 359 MiB after 10 GiB in bench big-rss); one arena with fixed thresholds does not
    (234 and 248 MiB). Set before any worker thread starts."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # blocks up to 16 MiB runs come from the heap
        libc.mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024)  # free heap kept for the next blocks
    except (OSError, AttributeError) as exc:  # not glibc: nothing to tune
        log.debug("mallopt unavailable: %s", exc)


def return_free_memory() -> bool:
    """Give the pages of the heap's free chunks back to the system (glibc's malloc_trim). The heap
    is tuned to keep freed blocks for the next ones (`_reuse_block_memory`), and a free chunk below
    one still in use is never trimmed at all: freed block buffers would otherwise stay resident, the
    RSS rising with each new peak of blocks in flight to several times what is in use. Called once
    a minute it costs a millisecond or so, and the page faults of refilling what the next reads
    use. False where there is no malloc_trim (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError) as exc:
        log.debug("malloc_trim unavailable: %s", exc)
        return False
    return True


def _sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) how we are, when it is listening."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.chdir("/")


def _setup_logging(prepared: Prepared, log_file: str | None) -> None:
    options = prepared.options
    if log_file and log_file != options.log_file:  # the default, in the runtime dir; a given one was checked
        os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
    logs.setup(prepared.mountpoint, log_file, secret_values(prepared.config), debug=options.debug,
               log_format=options.log_format, max_bytes=options.log_size)
