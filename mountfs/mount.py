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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyfuse3
import trio

from mountfs import control
from mountfs.backends.async_store import AsyncStore
from mountfs.backends.base import ObjectStore
from mountfs.backends.registry import open_store
from mountfs.cache.block_cache import BlockCache
from mountfs.cache.prefetch import PrefetchScheduler
from mountfs.config import Config, load_source, parse_size
from mountfs.errors import MountfsError
from mountfs.fs.operations import Operations, Ownership
from mountfs.kernel_mounts import mount_type
from mountfs.namespace.inodes import MountRoot
from mountfs.namespace.tree import Namespace

log = logging.getLogger(__name__)

# Options that mount(8) and fstab pass along and that mean nothing to a FUSE daemon.
IGNORED_OPTIONS = frozenset({
    "rw", "defaults", "_netdev", "nofail", "noauto", "auto", "user", "users", "nouser", "owner",
    "group", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime",
    "strictatime", "nodiratime", "async", "sync", "silent", "loud",
})
IGNORED_PREFIXES = ("x-", "comment=")
FLAG_OPTIONS = {"allow_other", "allow_root", "default_permissions", "ro", "nonempty", "debug"}
VALUE_OPTIONS = {"uid", "gid", "umask", "cache_dir", "block_size", "log", "fsname"}
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


class MountSetupError(MountfsError):
    """Something to fix before mounting; the message is the one line the user sees."""


@dataclass(frozen=True)
class MountOptions:
    uid: int
    gid: int
    umask: int = 0o022
    allow_other: bool = False
    allow_root: bool = False
    default_permissions: bool = False
    read_only: bool = False
    nonempty: bool = False
    debug: bool = False
    cache_dir: str | None = None
    block_size: int | None = None
    log_file: str | None = None
    fsname: str | None = None


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
    try:
        return MountOptions(
            uid=int(settings.get("uid", os.getuid())),
            gid=int(settings.get("gid", os.getgid())),
            umask=int(settings.get("umask", "022"), 8),
            allow_other=flags.get("allow_other", False),
            allow_root=flags.get("allow_root", False),
            default_permissions=flags.get("default_permissions", False),
            read_only=flags.get("ro", False),
            nonempty=flags.get("nonempty", False),
            debug=flags.get("debug", False),
            cache_dir=settings.get("cache_dir"),
            block_size=parse_size(settings["block_size"]) if "block_size" in settings else None,
            log_file=settings.get("log"),
            fsname=settings.get("fsname"),
        )
    except ValueError as exc:
        raise MountSetupError(f"bad mount option value: {exc}") from exc


@dataclass
class Prepared:
    """Everything checked and ready; only the kernel mount remains."""

    source: str
    mountpoint: str
    options: MountOptions
    config: Config
    stores: list[ObjectStore]


def prepare(source: str, mountpoint: str, options: MountOptions) -> Prepared:
    config = load_source(source)
    cache = config.cache
    if options.cache_dir:
        cache = dataclasses.replace(cache, dir=os.path.abspath(options.cache_dir))
    if options.block_size:
        cache = dataclasses.replace(cache, block_size=options.block_size)
    mounts = config.mounts
    if options.read_only:
        mounts = tuple(dataclasses.replace(m, read_only=True) for m in mounts)
    config = dataclasses.replace(config, cache=cache, mounts=mounts)
    mountpoint = os.path.realpath(mountpoint)  # before mounting: later, resolving it would ask us
    check_mountpoint(mountpoint, options.nonempty)
    stores = []
    for entry in config.mounts:
        store = open_store(entry.url, config)
        try:
            store.check_access()
        except MountfsError as exc:
            raise MountSetupError(f"cannot use {entry.url.raw}: {exc}") from exc
        stores.append(store)
    try:
        os.makedirs(config.cache.dir, exist_ok=True)
    except OSError as exc:
        raise MountSetupError(f"cannot create cache dir {config.cache.dir}: {exc.strerror}") from exc
    return Prepared(source, mountpoint, options, config, stores)


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
        _setup_logging(prepared.options, None)
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
    _setup_logging(prepared.options, log_file)
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
    _return_large_allocations_to_the_os()
    read = config.read
    # read.max_memory is shared out: half keeps recent blocks in memory (the block a reader is in,
    # and the prefetched ones waiting for it), a quarter bounds the bytes prefetches have in
    # flight. A handle's window never outgrows half the memory cache, or its prefetched blocks
    # would be evicted before the reader arrives.
    memory_cache = read.max_memory // 2
    cache = BlockCache(config.cache.dir, config.cache.block_size, memory_cache)
    prefetch = PrefetchScheduler(cache, read.max_concurrency, read.max_memory // 4)
    roots = [MountRoot(entry.path, AsyncStore(store, config.read.max_concurrency),
                       entry.url.prefix + "/" if entry.url.prefix else "", entry.read_only)
             for entry, store in zip(config.mounts, prepared.stores, strict=True)]
    namespace = Namespace(roots, config.read.metadata_ttl, config.read.negative_ttl)
    operations = Operations(namespace, cache, Ownership(options.uid, options.gid, options.umask),
                            prefetch, min(read.readahead_max, memory_cache // 2))
    daemon = Daemon(prepared, cache, operations, notify)
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
        notify(f"cannot mount {prepared.mountpoint}: {exc}")
        return 1
    log.info("mounted %s on %s", prepared.source, prepared.mountpoint)
    try:
        trio.run(daemon.main)
    finally:
        pyfuse3.close(unmount=True)
        log.info("unmounted %s; %s", prepared.mountpoint, daemon.summary())
        cache.close()
    return 0


class Daemon:
    """The trio side: the FUSE loop plus control socket, signals and housekeeping."""

    def __init__(self, prepared: Prepared, cache: BlockCache, operations: Operations,
                 notify: Notify) -> None:
        self.prepared = prepared
        self.cache = cache
        self.operations = operations
        self.notify = notify
        self.started = time.time()

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
            await nursery.start(control.serve, control.socket_path(self.prepared.mountpoint), self.answer)
            nursery.start_soon(self._on_signals)
            nursery.start_soon(self._announce_ready)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    async def _on_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("signal %s: unmounting", signal.Signals(signum).name)
                pyfuse3.terminate()

    async def _announce_ready(self) -> None:
        st = await trio.to_thread.run_sync(os.stat, self.prepared.mountpoint)
        _raise_kernel_readahead(st.st_dev, self.prepared.config.read.kernel_readahead)
        self.notify("ok")
        _sd_notify("READY=1")

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, **await self.status()}
        if op == "shutdown":
            log.info("unmount requested through the control socket")
            pyfuse3.terminate()
            return {"ok": True, "pid": os.getpid()}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def status(self) -> dict[str, Any]:
        stats = self.cache.stats
        totals = await self.cache.totals()
        lookups = stats.hits + stats.misses
        stores: list[dict[str, Any]] = []
        for root in self.operations.namespace.mounts:
            store_stats = root.store.stats
            stores.append({"path": root.path, "url": _url_of(self.prepared, root.path),
                           "requests": dict(store_stats.requests), "errors": dict(store_stats.errors),
                           "bytes_fetched": store_stats.bytes_fetched})
        reads = self.operations.stats
        prefetch = self.operations.prefetch
        return {
            "pid": os.getpid(), "mountpoint": self.prepared.mountpoint, "source": self.prepared.source,
            "uptime": round(time.time() - self.started, 3),
            "cache": {"dir": self.cache.cache_dir, "block_size": self.cache.block_size,
                      "hits": stats.hits, "misses": stats.misses, "shared": stats.shared,
                      "corrupt": stats.corrupt,
                      "hit_ratio": round(stats.hits / lookups, 4) if lookups else None,
                      "blocks": totals.blocks, "bytes": totals.bytes},
            "reads": {"opens": reads.opens, "reads": reads.reads, "bytes_served": reads.bytes_served,
                      "prefetched_blocks": prefetch.started if prefetch else 0},
            "store": {"gets": sum(s["requests"].get("get", 0) for s in stores),
                      "requests": sum(sum(s["requests"].values()) for s in stores),
                      "bytes_fetched": sum(s["bytes_fetched"] for s in stores)},
            "stores": stores,
            "inodes": len(self.operations.namespace.inodes),
        }

    def summary(self) -> str:
        stats = self.cache.stats
        return (f"block hits {stats.hits}, misses {stats.misses}, "
                f"bytes served {self.operations.stats.bytes_served}")


def _url_of(prepared: Prepared, path: str) -> str:
    return next((m.url.raw for m in prepared.config.mounts if m.path == path), "")


def _return_large_allocations_to_the_os() -> None:
    """Blocks are megabytes each: have glibc map every such allocation on its own, so that freeing
    it gives the memory back. Left to itself, glibc raises its mmap threshold after the first frees
    and serves later blocks from per-thread heaps that only grow: RSS rose with the bytes read
    (278 MiB after 1 GiB, 359 MiB after 10 GiB in bench big-rss)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 256 * 1024)
    except (OSError, AttributeError) as exc:  # not glibc: nothing to tune
        log.debug("mallopt unavailable: %s", exc)


def _raise_kernel_readahead(device: int, nbytes: int) -> None:
    """Let the kernel send large sequential reads (1 MiB requests instead of 128 KiB): the mount's
    read_ahead_kb, which only root may set. Measured here: 0.55-0.75 GB/s became about 1.5 GB/s."""
    path = f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(max(nbytes // 1024, 128)))
    except OSError as exc:
        log.info("kernel readahead left as it is (%s: %s)", path, exc.strerror)


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


def _setup_logging(options: MountOptions, log_file: str | None) -> None:
    handler: logging.Handler
    if log_file:
        os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if options.debug else logging.INFO)
