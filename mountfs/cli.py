"""The `mountfs` command: mount (the form mount.fuse3 calls) and the subcommands.

Exit codes: 0 success, 1 an error the user can fix (printed as one line per problem),
2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

from mountfs import __version__, control
from mountfs.errors import ConfigErrors, MountfsError, printable, without_credentials
from mountfs.kernel_mounts import mount_type
from mountfs.processes import process_alive
from mountfs.sizes import human_bytes

SUBCOMMANDS = ("umount", "status", "recover", "config", "cache", "warm")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in SUBCOMMANDS:
        try:
            code = _subcommand(args)
            sys.stdout.flush()  # here, not at exit, where a closed pipe could no longer be caught
            return code
        except BrokenPipeError:
            # the reader stopped reading (`mountfs status | head -3`): stop quietly, as ls and cat do;
            # stdout goes to /dev/null so that Python's own flush at exit does not complain
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    return _mount(args)


# --- mount ---------------------------------------------------------------------------------

def _mount(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mountfs",
        description="Mount object stores and local folders as one POSIX tree. "
                    f"Subcommands: {', '.join(SUBCOMMANDS)} (mountfs SUBCOMMAND --help).",
        epilog="SOURCE is a TOML config file, a clearml.conf, a Supervisely .env, remote_links.yml or "
               "links file, modelkit: (its MODELKIT_* variables), or one URL: s3://bucket/prefix, "
               "s3://host:port/bucket, gs://bucket, az://container@account/prefix, file:///path. "
               "-o config=FILE gives SOURCE the settings of FILE.")
    parser.add_argument("source", metavar="SOURCE")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                        help="uid=, gid=, umask=, allow_other, allow_root, default_permissions, ro, "
                             "nonempty, cache_dir=, block_size=, log=, fsname=, shared_cache=URL, debug")
    parser.add_argument("--version", action="version", version=f"mountfs {__version__}")
    ns = parser.parse_args(argv)
    from mountfs import mount  # pyfuse3 loads only when mounting

    # Checks before mounting report one line each; their retries are not news to the user.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        options = mount.parse_options(ns.options)
        prepared = mount.prepare(ns.source, ns.mountpoint, options)
    except MountfsError as exc:
        return _refused(exc)
    for line in prepared.missing if not ns.foreground else ():  # in the foreground the log says it
        print(f"mountfs: warning: {line}", file=sys.stderr)
    return mount.run(prepared, ns.foreground)


# --- subcommands ---------------------------------------------------------------------------

def _subcommand(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mountfs")
    sub = parser.add_subparsers(dest="command", required=True)
    umount = sub.add_parser("umount", help="unmount, after the daemon has uploaded what is pending; "
                                           "refused while the mount is busy, as umount(8)")
    umount.add_argument("mountpoint")
    umount.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for the daemon (default: its write.drain_timeout + 60)")
    umount.add_argument("-f", "--force", action="store_true",
                        help="unmount even while files are open on it: their next reads and writes "
                             "fail (ENOTCONN) and what was written so far is uploaded as it is")
    recover = sub.add_parser("recover", help="upload what a killed daemon left staged in a cache dir, "
                                             "without mounting")
    recover.add_argument("source", metavar="CONFIG|URL")
    recover.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                         help="mount options; cache_dir= names the cache dir")
    status = sub.add_parser("status", help="what each running mount is doing")
    status.add_argument("mountpoint", nargs="?")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    config = sub.add_parser("config", help="config file tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="report every error in a config file")
    check.add_argument("file")
    check.add_argument("-o", dest="options", action="append", default=[], metavar="config=FILE",
                       help="check FILE (a URL, links file, modelkit:, ...) with the settings of this "
                            "file, as `mountfs FILE MOUNTPOINT -o config=` would mount it")
    imports = config_sub.add_parser(
        "import", help="print the mountfs TOML equivalent of a clearml.conf, Supervisely .env, "
                       "remote_links.yml or links file")
    imports.add_argument("file")
    imports.add_argument("-o", dest="options", action="append", default=[], metavar="config=FILE",
                         help="with the settings of this file (the .env or remote_links.yml of a links "
                              "file), as `mountfs FILE MOUNTPOINT -o config=` would mount it")
    _cache_parsers(sub)
    warm = sub.add_parser("warm", help="fetch files or trees of a mounted mountfs into its cache")
    warm.add_argument("paths", nargs="+", metavar="PATH")
    warm.add_argument("-j", "--jobs", type=_jobs, default=WARM_JOBS,
                      help=f"files read at once (default {WARM_JOBS})")
    ns = parser.parse_args(argv)
    if ns.command == "cache":
        return _cache(ns)
    if ns.command == "warm":
        return _warm(ns.paths, ns.jobs)
    if ns.command == "umount":
        return _umount(ns.mountpoint, ns.timeout, ns.force)
    if ns.command == "status":
        return _status(ns.mountpoint, ns.json)
    if ns.command == "recover":
        return _recover(ns.source, ns.options)
    settings = [o.partition("=")[2] for v in ns.options for o in v.split(",") if o.startswith("config=")]
    others = [o for v in ns.options for o in v.split(",") if o and not o.startswith("config=")]
    if others or len(settings) > 1 or (settings and not settings[0]):
        parser.error(f"config {ns.config_command} takes one -o config=FILE, not {','.join(ns.options)}")
    if ns.config_command == "import":
        return _config_import(ns.file, settings[0] if settings else None)
    return _config_check(ns.file, settings[0] if settings else None)


def _recover(source: str, option_values: list[str]) -> int:
    """One line per journalled upload (and stray staged file) and what became of it. Exit 1 when
    something is still not in the store (failed, or no configured store matches) or was lost."""
    from mountfs import mount
    from mountfs.upload import recovery

    logging.getLogger().addHandler(logging.NullHandler())
    try:
        options = mount.parse_options(option_values)
        config = mount.load_config_with(source, options)
        stores = mount.open_stores(config)
        report = mount.recover_cache(config, stores)
    except MountfsError as exc:
        return _refused(exc)
    if not report:
        print(f"nothing to recover in {config.cache.dir}")
        return 0
    for item in report:
        print(item.describe())
    bad = (recovery.FAILED, recovery.NO_STORE, recovery.MISSING, recovery.REFUSED)
    return 1 if any(item.outcome in bad for item in report) else 0


def _refused(exc: MountfsError) -> int:
    """Say why a command cannot go on, one line per problem (every config error with its line)."""
    for line in [e.format() for e in exc.errors] if isinstance(exc, ConfigErrors) else [str(exc)]:
        print(f"mountfs: {line}", file=sys.stderr)
    return 1


def _config_check(path: str, settings: str | None = None) -> int:
    from mountfs.config import load_config, load_source

    try:  # "modelkit:" checks modelkit's environment variables, as a mount would read them
        if settings is not None or path == "modelkit:":
            config = load_source(path, settings)
        else:
            config = load_config(path, need_mounts=False)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(error.format(), file=sys.stderr)
        print(f"{printable(without_credentials(path))}: {len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    if config.mounts:
        print(f"{path}: ok ({len(config.mounts)} mount(s))")
    else:
        print(f"{path}: ok (no [[mount]]: settings only, for mountfs URL MOUNTPOINT -o config={path})")
    return 0


def _config_import(path: str, settings: str | None = None) -> int:
    """The TOML printed is checked as `config check` would check it before it is printed, so what a
    user saves from it loads."""
    from mountfs.config.load import (
        bind_links,
        build_document,
        import_with_settings,
        parse_text,
        read_document,
    )
    from mountfs.config.toml_out import to_toml

    try:
        if settings is not None:
            text = to_toml(import_with_settings(path, settings), path)
            build_document(parse_text(text, path), need_mounts=False)
            sys.stdout.write(text)
            return 0
        document = read_document(path)
        bind_links(document, {})
        if document.imported is None:
            print(f"mountfs: {printable(path)}: already a mountfs TOML config (nothing to import)",
                  file=sys.stderr)
            return 1
        build_document(document, need_mounts=False)
        text = to_toml(document.imported, path)
        build_document(parse_text(text, path), need_mounts=False)
    except ConfigErrors as exc:
        return _refused(exc)
    sys.stdout.write(text)
    return 0


def _umount(mountpoint: str, timeout: float | None, force: bool = False) -> int:
    """Unmount through the daemon, which first uploads what is pending (up to its drain timeout);
    says what could not be uploaded (exit 1: it stays staged for the next mount or `recover`).
    A busy mount is refused as umount(8) refuses it, unless `force`: a writer cut off would lose data."""
    mountpoint = os.path.abspath(mountpoint)
    path = control.socket_path(mountpoint)
    try:
        if timeout is None:
            timeout = 30.0  # for the status request
            status = control.request(path, "status", timeout=timeout)
            uploads = status.get("uploads", {})
            timeout = float(uploads.get("drain_timeout", 0.0)) + 60.0
            pending = uploads.get("pending", [])
            if pending:
                print(f"mountfs: waiting for {len(pending)} pending upload(s) "
                      f"({human_bytes(uploads.get('pending_bytes', 0))}) to finish", file=sys.stderr)
        reply = control.request(path, "shutdown", timeout=timeout, force=force)
    except TimeoutError:
        print(f"mountfs: the daemon of {mountpoint} did not finish within {timeout:g}s", file=sys.stderr)
        return 1
    except control.NotRunning:
        if not mount_type(mountpoint):
            print(f"mountfs: {mountpoint} is not mounted", file=sys.stderr)
            return 1
        # No daemon answers (it was killed): detach what the kernel still holds.
        result = subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"mountfs: cannot unmount {mountpoint}: {result.stderr.strip()}", file=sys.stderr)
            return 1
        return 0
    if reply.get("busy"):
        print(f"mountfs: {mountpoint} is busy: {reply.get('error')}; not unmounted (close them, "
              "or `mountfs umount --force` to cut them off)", file=sys.stderr)
        return 32  # as umount(8) for a busy mount
    pid = int(reply.get("pid", 0))
    left = reply.get("left") or []
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if not process_alive(pid) and not mount_type(mountpoint):
            break
        time.sleep(0.05)
    else:
        print(f"mountfs: the daemon (pid {pid}) did not exit", file=sys.stderr)
        return 1
    if left:
        print(f"mountfs: unmounted {mountpoint}, but {len(left)} upload(s) did not finish; they stay "
              "staged and go up at the next mount or with `mountfs recover`:", file=sys.stderr)
        for item in left:
            print(f"  {format_upload(item)}", file=sys.stderr)
        return 1
    return 0


def _status(mountpoint: str | None, as_json: bool) -> int:
    paths = [control.socket_path(mountpoint)] if mountpoint else control.list_sockets()
    replies = []
    for path in paths:
        try:
            replies.append(control.request(path, "status", timeout=10))
        except control.NotRunning:
            if mountpoint:
                print(f"mountfs: no mountfs daemon serves {os.path.abspath(mountpoint)}", file=sys.stderr)
                return 1
    if as_json:
        print(json.dumps(replies[0] if mountpoint else replies, indent=2))
        return 0
    if not replies:
        print("no mountfs mounts are running")
    for reply in replies:
        print(format_status(reply))
    return 0


# --- cache stats | prune | verify ------------------------------------------------------------

def _cache_parsers(sub: Any) -> None:
    cache = sub.add_parser("cache", help="cache dir tools: stats, prune, verify (safe while mounted)")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("source", nargs="?", metavar="CONFIG",
                       help="a config file (or URL) whose cache dir to use (default: the default cache dir)")
    where.add_argument("-o", dest="options", action="append", default=[], metavar="cache_dir=DIR",
                       help="mount options; cache_dir= names the cache dir")
    where.add_argument("--cache-dir", metavar="DIR", help="the cache dir")
    stats = cache_sub.add_parser("stats", parents=[where], help="size, files, objects, ages, hit ratios")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    prune = cache_sub.add_parser("prune", parents=[where], help="remove cached blocks (never staged uploads)")
    how = prune.add_mutually_exclusive_group(required=True)
    how.add_argument("--all", action="store_true", help="every cached block")
    how.add_argument("--older-than", metavar="D", type=_duration, help='blocks unused for D ("7d", "12h")')
    how.add_argument("--to", metavar="SIZE", type=_size,
                     help='least recently used blocks until at most SIZE remain ("10GiB")')
    cache_sub.add_parser("verify", parents=[where],
                         help="check every block against its checksums and repair the index; "
                              "exit 1 if something needed repair")


def _duration(text: str) -> float:
    from mountfs.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    from mountfs.config import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cache_dir_of(source: str | None, options: list[str], cache_dir: str | None) -> str:
    """The cache dir named by --cache-dir, else -o cache_dir=, else the config's, else the default."""
    if cache_dir:
        return os.path.abspath(cache_dir)
    for value in options:
        for item in value.split(","):
            name, has_value, setting = item.strip().partition("=")
            if name == "cache_dir" and has_value:
                cache_dir = setting
    if cache_dir:
        return os.path.abspath(cache_dir)
    from mountfs import config

    if source:
        return config.load_source(source).cache.dir
    return config.default_cache_dir()


def _cache(ns: argparse.Namespace) -> int:
    from mountfs.cache import maintenance

    try:
        cache_dir = cache_dir_of(ns.source, ns.options, ns.cache_dir)
    except MountfsError as exc:
        return _refused(exc)
    try:
        if ns.cache_command == "stats":
            report = maintenance.stats(cache_dir)
            figures = cache_stats_json(report, _daemons_using(cache_dir))
            print(json.dumps(figures, indent=2) if ns.json else format_cache_stats(figures))
            return 0
        if ns.cache_command == "prune":
            pruned = maintenance.prune(cache_dir, all=ns.all, older_than=ns.older_than, to_size=ns.to)
            print(f"removed {pruned.removed_blocks} blocks ({human_bytes(pruned.removed_bytes)}); "
                  f"{pruned.totals.blocks} blocks ({human_bytes(pruned.totals.bytes)}) left in {cache_dir}")
            return 0
        verified = maintenance.verify(cache_dir)
    except FileNotFoundError as exc:
        print(f"mountfs: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mountfs: cannot use the cache in {cache_dir}: {exc}", file=sys.stderr)
        return 1
    print(format_verify(verified, cache_dir))
    return 0 if verified.clean else 1


def _daemons_using(cache_dir: str) -> list[dict[str, Any]]:
    """The status of every running daemon whose cache dir is `cache_dir`."""
    found = []
    for path in control.list_sockets():
        try:
            reply = control.request(path, "status", timeout=10)
        except (control.NotRunning, OSError, ValueError):
            continue
        their = reply.get("cache", {}).get("dir")
        if their and os.path.realpath(their) == os.path.realpath(cache_dir):
            found.append(reply)
    return found


def cache_stats_json(report: Any, daemons: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "dir": report.cache_dir, "bytes": report.bytes, "files": report.blocks, "objects": report.objects,
        "oldest_access": report.oldest_access, "newest_access": report.newest_access,
        "index_bytes": report.index_bytes, "staged_files": report.staged_files,
        "staged_bytes": report.staged_bytes, "disk_size": report.disk_size, "disk_free": report.disk_free,
        "mounts": [{"mountpoint": d["mountpoint"], "pid": d["pid"], "hits": d["cache"]["hits"],
                    "misses": d["cache"]["misses"], "hit_ratio": d["cache"]["hit_ratio"],
                    "evicted": d["cache"].get("evicted", 0), "shared_cache": d.get("shared_cache")}
                   for d in daemons],
    }


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    ago = max(0.0, time.time() - stamp)
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    return f"{text} ({human_duration(ago)} ago)"


def human_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def format_cache_stats(f: dict[str, Any]) -> str:
    lines = [
        f"{f['dir']}",
        f"  blocks:  {human_bytes(f['bytes'])} in {f['files']} files, {f['objects']} objects",
        f"  access:  oldest {_when(f['oldest_access'])}, newest {_when(f['newest_access'])}",
        f"  index:   {human_bytes(f['index_bytes'])}; staged uploads: {f['staged_files']} files "
        f"({human_bytes(f['staged_bytes'])})",
        f"  disk:    {human_bytes(f['disk_free'])} free of {human_bytes(f['disk_size'])}",
    ]
    if not f["mounts"]:
        lines.append("  mounts:  none running on this cache dir")
    for m in f["mounts"]:
        ratio = "-" if m["hit_ratio"] is None else f"{m['hit_ratio']:.1%}"
        lines.append(f"  mount:   {m['mountpoint']} (pid {m['pid']}): hit ratio {ratio} "
                     f"({m['hits']} hits, {m['misses']} misses), {m['evicted']} evicted")
        if m.get("shared_cache"):
            lines.append(f"           {format_shared_cache(m['shared_cache'])}")
    return "\n".join(lines)


def format_verify(r: Any, cache_dir: str) -> str:
    lines = [f"{cache_dir}: checked {r.checked} blocks; "
             + ("clean" if r.clean else "repaired")]
    repairs = [(r.corrupt, "corrupt blocks dropped (refetched when next read)"),
               (r.missing, "records without a block file dropped"),
               (r.outdated, "blocks of an older cache format (or of no known object) dropped"),
               (r.orphans, "block files without a record removed"),
               (r.temps, "half-written temp files removed"),
               (r.objects_dropped, "object entries without blocks dropped"),
               (r.unknown, "unknown files under blocks/ left alone")]
    lines += [f"  {count} {what}" for count, what in repairs if count]
    if r.lru_rebuilt:
        lines.append("  the access-order index was rebuilt")
    if r.totals_before != r.totals_after:
        lines.append(f"  totals corrected: {r.totals_before.blocks} -> {r.totals_after.blocks} blocks, "
                     f"{r.totals_before.bytes} -> {r.totals_after.bytes} bytes")
    lines.append(f"  {r.totals_after.blocks} blocks ({human_bytes(r.totals_after.bytes)}) cached")
    return "\n".join(lines)


# --- warm ------------------------------------------------------------------------------------

WARM_JOBS = 8
WARM_CHUNK = 1 << 20


def mountfs_mount_of(path: str) -> str | None:
    """The mountfs mount point `path` is in (by /proc/self/mountinfo, never a stat), or None."""
    current = os.path.abspath(path)
    while True:
        kind = mount_type(current)
        if kind is not None:
            return current if kind == "fuse.mountfs" else None
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def warm_list(paths: list[str]) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """Every file under `paths` with its size, and (path, error) for what could not be walked."""
    files: list[tuple[str, int]] = []
    failed: list[tuple[str, str]] = []

    def walk(path: str) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            failed.append((path, exc.strerror or str(exc)))
            return
        if not os.path.isdir(path):
            files.append((path, st.st_size))
            return
        try:
            with os.scandir(path) as entries:
                children = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            failed.append((path, exc.strerror or str(exc)))
            return
        for entry in children:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                if not is_dir:
                    files.append((entry.path, entry.stat(follow_symlinks=False).st_size))
            except OSError as exc:
                failed.append((entry.path, exc.strerror or str(exc)))
                continue
            if is_dir:
                walk(entry.path)

    for path in paths:
        walk(path)
    return files, failed


class Progress:
    """A progress bar on stderr: files and bytes done, rate, ETA (thread-safe `add`)."""

    def __init__(self, total_files: int, total_bytes: int, stream: Any = None) -> None:
        import threading

        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.bytes = 0
        self.started = time.monotonic()
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._lock = threading.Lock()
        self._last = 0.0

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self.bytes += nbytes
            self.files += files

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.bytes / elapsed
        left = max(self.total_bytes - self.bytes, 0)
        eta = human_duration(left / rate) if rate > 0 else "?"
        fraction = self.bytes / self.total_bytes if self.total_bytes else 1.0
        width = 24
        filled = min(width, int(fraction * width))
        return (f"[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%} "
                f"{human_bytes(self.bytes)}/{human_bytes(self.total_bytes)} "
                f"{self.files}/{self.total_files} files {human_bytes(int(rate))}/s ETA {eta}")

    def show(self, final: bool = False) -> None:
        """Redraw (a tty: in place, 5 times a second; else a line every 5 s)."""
        now = time.monotonic()
        if not final and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
        elif not final:
            self.stream.write(self.line() + "\n")
        self.stream.flush()


def _warm_one(path: str, progress: Progress) -> None:
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(WARM_CHUNK)
        while True:
            n = f.readinto(buffer)
            if not n:
                break
            progress.add(n)
    progress.add(files=1)


def _jobs(text: str) -> int:
    """`warm -j N`: at least one file at a time (0 or -1 would silently mean 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of files read at once, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least 1 file is read at once")
    return value


def _warm(paths: list[str], jobs: int) -> int:
    """Read every file under `paths` through its mountfs mount, `jobs` at a time: what is not
    cached yet is fetched into the cache, what is comes from it (a rerun is quick)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    outside = [p for p in paths if mountfs_mount_of(p) is None]
    if outside:
        for path in outside:
            print(f"mountfs: {path} is not in a mountfs mount", file=sys.stderr)
        return 2
    files, failed = warm_list(paths)
    progress = Progress(len(files), sum(size for _, size in files))
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = {pool.submit(_warm_one, path, progress): path for path, _ in files}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                exc = future.exception()
                if exc is not None:
                    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                    failed.append((futures[future], reason))
            progress.show()
    progress.show(final=True)
    elapsed = time.monotonic() - progress.started
    rate = progress.bytes / elapsed if elapsed > 0 else 0.0
    print(f"warmed {progress.files} of {len(files)} files, {human_bytes(progress.bytes)} in "
          f"{elapsed:.1f}s ({human_bytes(int(rate))}/s)" + (f"; {len(failed)} failed:" if failed else ""),
          file=sys.stderr)
    for path, reason in sorted(failed):
        print(f"  {path}: {reason}", file=sys.stderr)
    return 1 if failed else 0


def format_status(s: dict[str, Any]) -> str:
    cache, reads, store = s["cache"], s["reads"], s["store"]
    ratio = "-" if cache["hit_ratio"] is None else f"{cache['hit_ratio']:.1%}"
    lines = [
        f"{s['mountpoint']}  (source {s['source']}, pid {s['pid']}, up {s['uptime']:.0f}s)",
        f"  cache:  {cache['hits']} hits, {cache['misses']} misses (hit ratio {ratio}), "
        f"{cache['shared']} shared fetches; {cache['blocks']} blocks, {human_bytes(cache['bytes'])} "
        f"in {cache['dir']}",
        f"  reads:  {reads['opens']} opens, {reads['reads']} reads, "
        f"{human_bytes(reads['bytes_served'])} served",
        f"  store:  {store['requests']} requests ({store['gets']} GETs), "
        f"{human_bytes(store['bytes_fetched'])} fetched",
    ]
    if cache.get("evicted"):
        lines[1] += f"; {cache['evicted']} evicted"
    if cache.get("room_made"):
        lines[1] += f" ({cache['room_made']} at once for staged writes)"
    if reads.get("prefetched_unread"):
        lines[2] += f"; {reads['prefetched_unread']} blocks fetched ahead were evicted unread"
    if s.get("writes", {}).get("refused"):
        lines.append(f"  writes: refused: {s['writes']['refused']}")
    if s.get("metrics"):
        where = s["metrics"]
        lines.append(f"  metrics: {where if where.startswith('unix:') else f'http://{where}/metrics'}")
    for name, t in s.get("traffic", {}).items():
        ratio = "-" if t["amplification"] is None else f"{t['amplification']:.1f}x"
        lines.append(f"  traffic {name}: {human_bytes(t['fetched'])} fetched for {human_bytes(t['served'])} "
                     f"served (amplification {ratio}, for the cache's life)")
    for entry in s.get("stores", []):
        if entry.get("endpoint"):
            source = f" (from {entry['endpoint_source']})" if entry.get("endpoint_source") else ""
            lines.append(f"  store {entry['path'] or '/'}: {entry.get('url', '')} "
                         f"at {entry['endpoint']}{source}")
        if entry.get("offline") or entry.get("failed_fast"):
            state = f"offline for {entry['offline_for']:.0f}s" if entry.get("offline") else "back online"
            lines.append(f"  store {entry['path'] or '/'}: {state}, "
                         f"{entry.get('failed_fast', 0)} calls failed fast")
    if s.get("shared_cache"):
        lines.append(f"  {format_shared_cache(s['shared_cache'])}")
    for line in s.get("missing", []):
        lines.append(f"  missing {line}")
    uploads = s.get("uploads")
    if uploads is not None:
        pending = uploads["pending"]
        state = (" (recovering)" if uploads.get("recovering")
                 else " (unmounting)" if uploads.get("draining") else "")
        lines.append(f"  uploads: {uploads['completed']} done, {human_bytes(uploads['bytes_uploaded'])} up, "
                     f"{len(pending)} pending ({human_bytes(uploads['pending_bytes'])}), "
                     f"{uploads['failed']} failing{state}")
        for item in pending[:UPLOADS_SHOWN]:
            lines.append(f"    {format_upload(item)}")
        if len(pending) > UPLOADS_SHOWN:
            lines.append(f"    ... and {len(pending) - UPLOADS_SHOWN} more (--json lists them all)")
    return "\n".join(lines)


UPLOADS_SHOWN = 10


def format_shared_cache(c: dict[str, Any]) -> str:
    """One line of a fleet's shared cache figures, as this daemon saw them."""
    text = (f"shared: {c['url']}: {c['hits']} hits, {c['misses']} misses, "
            f"{human_bytes(c['bytes_read'])} read, "
            f"{human_bytes(c['bytes_written'])} written ({c['writes']} blocks), {c['errors']} errors, "
            f"{c['corrupt']} corrupt")
    if c.get("dropped"):
        text += f", {c['dropped']} not written"
    failing = [what for what in ("reads", "writes") if c.get(f"{what}_failing")]
    if failing:
        text += f"; {' and '.join(failing)} failing (going to the origin)"
    if not c.get("write", True):
        text += "; read only"
    return text


def format_upload(item: dict[str, Any]) -> str:
    """One pending upload: where it goes, how big, its state and last error, where it is staged."""
    text = f"{item['path'] or item['key']}  {human_bytes(item['size'])}  {item['state']}"
    if item.get("attempts"):
        text += f" after {item['attempts']} attempt(s)"
    if item.get("error"):
        text += f": {item['error']}"
    return text + f"  (staged at {item['staged']})"


if __name__ == "__main__":
    sys.exit(main())
