"""The floor under the daemon's CPU: what pyfuse3 + trio alone cost per request, measured beside mountfs.

Why: the CPU targets (per warm 4 KiB read, per small file) are only worth chasing in mountfs's own
code if that code is most of the cost. A filesystem that answers from memory and does nothing else
(`NullFs`, the same pyfuse3 main loop and mount options as mountfs) gives the part of each figure that
no change inside mountfs can remove: the FUSE round trips, pyfuse3's dispatch and the trio loop.
Both daemons read the same files from the same disk (mountfs through a file:// mount whose block
cache already holds them), after the page cache is dropped, with the bench's own readers.

    python -m bench.fuse_floor [--small N] [--reads N]

It prints a table and writes bench/FLOOR.md (date and commit) for bench/RESULTS.md to point to.
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import peers, profile
from bench.harness import cpu_seconds, drop_caches, git_revision
from bench.workloads import read_files_parallel, read_random

NULL = "pyfuse3 + trio, answers from memory"
S3_ROW = "mountfs, S3 (SeaweedFS), block cache warm"
FILE_ROW = "mountfs, file:// (direct access)"
SHORT = {NULL: "pyfuse3 + trio", S3_ROW: "mountfs S3", FILE_ROW: "mountfs file://"}
SMALL_BYTES = 128 << 10
BIG_BYTES = 256 << 20
READERS = 8
HERE = Path(__file__).resolve().parent


def serve(mountpoint: str, small: int) -> None:
    """The null filesystem: a root folder with `big` and `small/NNNNN`, every byte from one buffer."""
    import pyfuse3
    import trio

    data = os.urandom(SMALL_BYTES)
    big_page = memoryview(os.urandom(1 << 20))
    root, big, folder, first = pyfuse3.ROOT_INODE, 2, 3, 4
    names = {b"big": big, b"small": folder}
    files = {f"{i:05d}".encode(): first + i for i in range(small)}

    def attributes(inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = pyfuse3.InodeT(inode)
        if inode in (root, folder):
            attr.st_mode = stat.S_IFDIR | 0o755
        else:
            attr.st_mode = stat.S_IFREG | 0o444
            attr.st_size = BIG_BYTES if inode == big else SMALL_BYTES
        attr.entry_timeout = attr.attr_timeout = 60.0
        attr.st_blksize = 1 << 20
        return attr

    class NullFs(pyfuse3.Operations):
        async def lookup(self, parent: int, name: bytes, ctx: object = None) -> pyfuse3.EntryAttributes:
            inode = (names if parent == root else files if parent == folder else {}).get(name)
            if inode is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return attributes(inode)

        async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
            return attributes(inode)

        async def opendir(self, inode: int, ctx: object) -> int:
            return inode

        async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
            entries = list((names if fh == root else files).items())
            for i in range(start_id, len(entries)):
                name, inode = entries[i]
                if not pyfuse3.readdir_reply(token, name, attributes(inode), i + 1):
                    return

        async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
            return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(inode), keep_cache=False)

        async def read(self, fh: int, off: int, size: int) -> bytes:
            if fh == big:
                start = off % len(big_page)
                return bytes(big_page[start:start + min(size, len(big_page) - start)])
            return data[off:off + size]

        async def release(self, fh: int) -> None:
            return None

    pyfuse3.init(NullFs(), mountpoint, {"fsname=nullfs", "subtype=nullfs", "ro"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


def _wait_mounted(mountpoint: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not os.path.ismount(mountpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the null filesystem did not mount (exit {process.poll()})")
        time.sleep(0.05)


def _measure(pid: int, work: Callable[[], object]) -> float:
    """Seconds of the daemon's CPU that `work` cost, the page cache dropped first."""
    drop_caches(None)
    before = cpu_seconds(pid) or 0.0
    work()
    time.sleep(0.2)  # the last replies' accounting
    return (cpu_seconds(pid) or 0.0) - before


def _workloads(root: Path, small: int, reads: int) -> dict[str, Callable[[], object]]:
    rng = random.Random(7)
    offsets = [rng.randrange(BIG_BYTES // 4096) * 4096 for _ in range(reads)]
    paths = [root / "small" / f"{i:05d}" for i in range(small)]
    def small_files() -> None:
        os.listdir(root / "small")  # as a training epoch does: then no name costs a request of its own
        read_files_parallel(paths, READERS)

    return {"4k": lambda: read_random(root / "big", offsets, 4096), "small": small_files}


def _figures(pid: int, root: Path, small: int, reads: int, repeat: int) -> dict[str, float]:
    """us of daemon CPU per 4 KiB read and ms per small file, the median of `repeat` runs."""
    jobs = _workloads(root, small, reads)
    out = {}
    for name, job in jobs.items():
        runs = sorted(_measure(pid, job) for _ in range(repeat))
        per = runs[len(runs) // 2] / (reads if name == "4k" else small)
        out[name] = per * (1e6 if name == "4k" else 1e3)
    return out


def _profile(pid: int | None, root: Path, small: int, reads: int, work: Path) -> None:
    for name, job in _workloads(root, small, reads).items():
        out = work / f"profile-{name}.txt"
        with profile.sampling(pid, out):
            _measure(pid or 0, job)
        samples, frames = profile.summarize(out.read_text() if out.exists() else "", top=25)
        print(f"\n{name}: {samples} samples of the GIL holder; own / total")
        for frame in frames:
            print(f"  {frame.own:6.1%} {frame.total:6.1%}  {frame.name}")


def _mountfs_mounts(work: Path, source: Path, stops: list[Callable[[], None]]
                    ) -> list[tuple[str, Callable[[], peers.MountfsMount]]]:
    """(row name, start) of each mountfs daemon measured: the tree in a SeaweedFS bucket (the block
    cache's read path), and the same folder as a file:// mount (direct access: a pread per read)."""

    def s3() -> peers.MountfsMount:
        from tests.servers import start_seaweedfs

        server = start_seaweedfs(work / "seaweedfs")
        stops.append(server.stop)
        server.create_bucket("floor")
        client = server.client()
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            client.upload_file(str(path), "floor", str(path.relative_to(source)))
        target = peers.S3Target(server.endpoint, server.host_port, "floor", server.access_key,
                                server.secret_key)
        (work / "mnt-s3").mkdir()
        return peers.start_mountfs(target, work / "mnt-s3", work / "cache-s3", work / "mountfs-s3.log", work)

    def local() -> peers.MountfsMount:
        (work / "mnt-file").mkdir()
        return peers.start_mountfs_source(f"file://{source}", work / "mnt-file", work / "cache-file",
                                          work / "mountfs-file.log", work)

    return [(S3_ROW, s3), (FILE_ROW, local)]


def _syscalls(pid: int, jobs: dict[str, Callable[[], object]], small: int, reads: int,
              work: Path) -> dict[str, dict[str, float]]:
    """Per workload, the daemon's system calls per request (strace -c, every thread); {} without strace."""
    if shutil.which("strace") is None:
        return {}
    out: dict[str, dict[str, float]] = {}
    for name, job in jobs.items():
        report = work / f"strace-{pid}-{name}.txt"
        tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", str(report)],
                                  stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached to every thread
        drop_caches(None)
        job()
        time.sleep(0.3)
        tracer.terminate()
        tracer.wait(30)
        count = reads if name == "4k" else small
        out[name] = {call: n / count for call, n in _strace_counts(report.read_text()).items()}
    return out


def _strace_counts(text: str) -> dict[str, int]:
    """syscall -> calls, from `strace -c` output ("% time seconds usecs/call calls [errors] syscall")."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[3].isdigit() and not fields[-1].startswith("total"):
            counts[fields[-1]] = int(fields[3])
    return counts


def _calls_table(calls: dict[str, dict[str, dict[str, float]]]) -> str:
    """System calls per request, those at 0.5 or more somewhere, and the total."""
    columns = [(daemon, name) for daemon, per in calls.items() for name in per]
    names = sorted({c for per in calls.values() for w in per.values() for c, n in w.items() if n >= 0.5})
    header = " | ".join(f"{SHORT.get(d, d)}, {'4 KiB read' if w == '4k' else 'file'}" for d, w in columns)
    lines = [f"| system calls per request | {header} |", "|---" + "|---:" * len(columns) + "|"]
    for call in [*names, "all"]:
        cells = []
        for daemon, name in columns:
            per = calls[daemon][name]
            cells.append(f"{sum(per.values()) if call == 'all' else per.get(call, 0):.1f}")
        lines.append(f"| {call} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _local_copy(folder: Path, small: int) -> None:
    """The same tree as the null filesystem, as real files for a file:// mount."""
    (folder / "small").mkdir(parents=True)
    data = os.urandom(SMALL_BYTES)
    for i in range(small):
        (folder / "small" / f"{i:05d}").write_bytes(data)
    with open(folder / "big", "wb") as out:
        for _ in range(BIG_BYTES >> 20):
            out.write(os.urandom(1 << 20))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuse_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=2000, help="small files of 128 KiB (default 2000)")
    parser.add_argument("--reads", type=int, default=2000, help="random 4 KiB reads (default 2000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-md", action="store_true", help="do not write bench/FLOOR.md")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the mountfs daemon during one more run of each workload; top frames")
    parser.add_argument("--syscalls", action="store_true",
                        help="strace -c the daemons during one more run of each workload: calls per request")
    parser.add_argument("serve", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[1], args.small)
        return 0
    work = Path(tempfile.mkdtemp(prefix="mountfs-floor-"))
    figures: dict[str, dict[str, float]] = {}
    stops: list[Callable[[], None]] = []
    calls: dict[str, dict[str, dict[str, float]]] = {}
    try:
        null_mnt = work / "null"
        null_mnt.mkdir()
        process = subprocess.Popen([sys.executable, "-m", "bench.fuse_floor", "--small", str(args.small),
                                    "serve", str(null_mnt)], cwd=HERE.parent)
        try:
            _wait_mounted(null_mnt, process)
            figures[NULL] = _figures(process.pid, null_mnt, args.small, args.reads, args.repeat)
            if args.syscalls:
                calls[NULL] = _syscalls(process.pid, _workloads(null_mnt, args.small, args.reads), args.small,
                                        args.reads, work)
        finally:
            subprocess.run(["fusermount3", "-u", str(null_mnt)], check=False)
            process.wait(30)
        source = work / "data"
        _local_copy(source, args.small)
        for name, start in _mountfs_mounts(work, source, stops):
            mount = start()
            try:
                jobs = _workloads(mount.mountpoint, args.small, args.reads)
                cold = _measure(mount.pid or 0, jobs["small"]) / args.small * 1e3  # the cache is empty
                jobs["4k"]()  # fills the block cache: what follows are warm reads
                figures[name] = _figures(mount.pid or 0, mount.mountpoint, args.small, args.reads,
                                         args.repeat)
                figures[name]["cold"] = cold
                if args.syscalls:
                    calls[name] = _syscalls(mount.pid or 0, jobs, args.small, args.reads, work)
                if args.profile:
                    _profile(mount.pid, mount.mountpoint, args.small, args.reads, work)
            finally:
                mount.unmount()
                for stop in stops:
                    stop()
                stops.clear()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = _table(figures)
    if calls:
        table += "\n\n" + _calls_table(calls)
    print(table)
    if not args.no_md:
        _write_md(table, args)
    return 0


def _table(figures: dict[str, dict[str, float]]) -> str:
    lines = ["| daemon | CPU per warm 4 KiB read (us) | CPU per 128 KiB file, warm (ms) | "
             "CPU per 128 KiB file, cold (ms) |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {f['4k']:.0f} | {f['small']:.2f} | "
              + (f"{f['cold']:.2f}" if "cold" in f else "-") + " |" for name, f in figures.items()]
    return "\n".join(lines)


def _write_md(table: str, args: argparse.Namespace) -> None:
    (HERE / "FLOOR.md").write_text("\n".join([
        "# The floor under the daemon's CPU",
        "",
        "Written by `python -m bench.fuse_floor` (bench/fuse_floor.py says why and how). Daemon CPU (user +",
        "system, /proc) per request, median of the runs; the page cache dropped before each run, so every",
        f"read reaches the daemon; {args.reads:,} random 4 KiB reads in a {BIG_BYTES >> 20} MiB file, "
        f"{args.small:,} files of 128 KiB listed, then read whole by {READERS} threads. Cold: the first "
        "read of each file through a fresh mount (empty block cache: one GET each from S3, a pread each "
        "for file://, one run); warm: once the block cache holds them. System calls: `strace -c -f` on "
        "the daemon during one more run (`--syscalls`), per 4 KiB read or per file.",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"commit {git_revision(str(HERE.parent))}; "
        f"load average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        table,
        "",
    ]))


if __name__ == "__main__":
    raise SystemExit(main())
