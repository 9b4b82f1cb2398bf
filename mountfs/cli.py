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
from mountfs.errors import ConfigErrors, MountfsError
from mountfs.kernel_mounts import mount_type
from mountfs.processes import process_alive

SUBCOMMANDS = ("umount", "status", "recover", "config")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in SUBCOMMANDS:
        return _subcommand(args)
    return _mount(args)


# --- mount ---------------------------------------------------------------------------------

def _mount(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mountfs",
        description="Mount object stores and local folders as one POSIX tree. "
                    f"Subcommands: {', '.join(SUBCOMMANDS)} (mountfs SUBCOMMAND --help).",
        epilog="SOURCE is a TOML config file or one URL: s3://bucket/prefix, s3://host:port/bucket, "
               "gs://bucket, az://account/container, file:///path.")
    parser.add_argument("source", metavar="SOURCE")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                        help="uid=, gid=, umask=, allow_other, allow_root, default_permissions, ro, "
                             "nonempty, cache_dir=, block_size=, log=, fsname=, debug")
    parser.add_argument("--version", action="version", version=f"mountfs {__version__}")
    ns = parser.parse_args(argv)
    from mountfs import mount  # pyfuse3 loads only when mounting

    # Checks before mounting report one line each; their retries are not news to the user.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        options = mount.parse_options(ns.options)
        prepared = mount.prepare(ns.source, ns.mountpoint, options)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"mountfs: {error.format()}", file=sys.stderr)
        return 1
    except MountfsError as exc:
        print(f"mountfs: {exc}", file=sys.stderr)
        return 1
    return mount.run(prepared, ns.foreground)


# --- subcommands ---------------------------------------------------------------------------

def _subcommand(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mountfs")
    sub = parser.add_subparsers(dest="command", required=True)
    umount = sub.add_parser("umount", help="unmount, after the daemon has uploaded what is pending")
    umount.add_argument("mountpoint")
    umount.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for the daemon (default: its write.drain_timeout + 60)")
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
    ns = parser.parse_args(argv)
    if ns.command == "umount":
        return _umount(ns.mountpoint, ns.timeout)
    if ns.command == "status":
        return _status(ns.mountpoint, ns.json)
    if ns.command == "recover":
        return _recover(ns.source, ns.options)
    return _config_check(ns.file)


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
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"mountfs: {error.format()}", file=sys.stderr)
        return 1
    except MountfsError as exc:
        print(f"mountfs: {exc}", file=sys.stderr)
        return 1
    if not report:
        print(f"nothing to recover in {config.cache.dir}")
        return 0
    for item in report:
        print(item.describe())
    bad = (recovery.FAILED, recovery.NO_STORE, recovery.MISSING)
    return 1 if any(item.outcome in bad for item in report) else 0


def _config_check(path: str) -> int:
    from mountfs.config import load_config

    try:
        config = load_config(path)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(error.format(), file=sys.stderr)
        print(f"{path}: {len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(config.mounts)} mount(s))")
    return 0


def _umount(mountpoint: str, timeout: float | None) -> int:
    """Unmount through the daemon, which first uploads what is pending (up to its drain timeout);
    says what could not be uploaded (exit 1: it stays staged for the next mount or `recover`)."""
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
        reply = control.request(path, "shutdown", timeout=timeout)
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


def format_upload(item: dict[str, Any]) -> str:
    """One pending upload: where it goes, how big, its state and last error, where it is staged."""
    text = f"{item['path'] or item['key']}  {human_bytes(item['size'])}  {item['state']}"
    if item.get("attempts"):
        text += f" after {item['attempts']} attempt(s)"
    if item.get("error"):
        text += f": {item['error']}"
    return text + f"  (staged at {item['staged']})"


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


if __name__ == "__main__":
    sys.exit(main())
