"""The data set and the workloads: what each tool is asked to do, and how a repeat is recorded.

Why the reads look the way they do: through a mount every tool is read the same plain way a user's
program would (`cat`-like 1 MiB reads into a page-aligned buffer, `pread` for random access, a
thread pool for many small files, os.walk + os.stat for metadata), so the figures compare the file
systems and not our reading code. Each cold figure uses a fresh mount with a fresh cache dir after
the page cache is dropped. Bytes read back are spot-checked against the source after timing.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3.s3.transfer

from bench import peers, profile
from bench.harness import (
    MB,
    BenchError,
    GiB,
    KiB,
    Metric,
    MiB,
    Row,
    Run,
    cpu_per_op,
    drop_caches,
    fmt,
    human_size,
    short_reason,
    timed,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from bench.wan import ProxyProcess

BUCKET = "mountfs-bench"
BIG_KEY = "big/blob.bin"
SMALL_PREFIX = "small"
TREE_PREFIX = "tree"
READ_BUFFER = 1 * MiB
WRITE_PREFIX = "written"
# The same part size and parallelism for boto3 as mountfs's defaults (write.part_size, write.max_concurrency)
WRITE_PART = 16 * MiB
WRITE_THREADS = 8
SMALL_READERS = 8
BOTO3_THREADS = 16
VERIFY_SAMPLES = 16


@dataclass(frozen=True)
class Scale:
    """Sizes of the data set and of the random-read workloads."""

    name: str
    big_bytes: int
    small_count: int
    tree_count: int
    random_4k_ops: int
    random_1m_ops: int
    # big-rss: sparse files read through a file:// mount, smallest first; the smallest at least 1 GiB,
    # else the daemon's read buffers (read.max_memory) are not yet full and RSS looks like it grows
    rss_sizes: tuple[int, ...]
    small_bytes: int = 128 * KiB
    tree_dirs: int = 100
    tree_bytes: int = 1 * KiB


FULL = Scale("full", big_bytes=1 * GiB, small_count=5_000, tree_count=10_000,
             random_4k_ops=2_000, random_1m_ops=200, rss_sizes=(1 * GiB, 10 * GiB))
QUICK = Scale("quick", big_bytes=256 * MiB, small_count=500, tree_count=1_000,
              random_4k_ops=500, random_1m_ops=50, rss_sizes=(1 * GiB, 2 * GiB))


# --- the workloads and their tables --------------------------------------------------------

WORKLOADS = ("cold-seq", "warm-seq", "hot-seq", "small-files", "random-4k", "random-1m", "metadata",
             "big-rss", "direct-read", "write-seq", "fleet", "dataloader", "checkpoint")
RANDOM_ACCESS = ("parquet", "zip", "sqlite")  # bench/random_access.py
WORKLOADS = (*WORKLOADS, *RANDOM_ACCESS)
LOCAL_WORKLOADS = frozenset({"big-rss", "direct-read"})  # need no S3 data set
BIG_RSS = "big-rss"
DIRECT_READ = "direct-read"
DIRECT_BYTES = 1 * GiB  # direct-read: one file of this size, at every scale
RSS_PATCHES = 4  # big-rss writes this many 1 MiB runs of random bytes into each sparse file

TOOL_LABELS = {
    **peers.LABELS,
    "boto3": "boto3",
    "local": "local file (page cache)",
    "s3torchconnector": "s3torchconnector",  # the SDK peers of bench/training.py
    "fsspec": "fsspec s3fs",
}
DIRECT_LABELS = {"mountfs": "mountfs (direct access, file://)", "local": "the local file itself"}


def metric_specs(scale: Scale) -> dict[str, tuple[str, str, str, bool, tuple[str, ...]]]:
    """metric -> (workload, title, unit, higher is better, tools in table order)."""
    from bench import fleet, random_access, training  # they build on this module

    big = human_size(scale.big_bytes)
    small = f"{scale.small_count:,} x {human_size(scale.small_bytes)}"
    tree = f"{scale.tree_count:,} objects in {scale.tree_dirs} prefixes"
    n4, n1 = f"{scale.random_4k_ops:,}", f"{scale.random_1m_ops:,}"
    rss_sizes = " vs ".join(human_size(n) for n in scale.rss_sizes)
    return {
        "cold-seq": ("cold-seq", f"cold sequential read of one {big} object", "MB/s", True,
                     ("mountfs", "boto3", "rclone", "s3fs")),
        "warm-seq": ("warm-seq", f"re-read of the {big} object after dropping the page cache "
                     "(each tool's disk cache)", "MB/s", True, ("mountfs", "rclone")),
        "hot-seq": ("hot-seq", f"re-read of the {big} object with the page cache kept", "MB/s", True,
                    ("mountfs", "rclone", "local")),
        "small-files": ("small-files", f"list + read {small} with {SMALL_READERS} readers, cold",
                        "files/s", True, ("mountfs", "boto3", "rclone", "s3fs")),
        "random-4k-cold": ("random-4k", f"{n4} random 4 KiB reads in the {big} object, cold", "ops/s",
                           True, ("mountfs", "boto3", "rclone")),
        "random-4k-warm": ("random-4k", f"the same {n4} random 4 KiB reads again (page cache dropped)",
                           "ops/s", True, ("mountfs", "boto3", "rclone")),
        "random-1m-cold": ("random-1m", f"{n1} random 1 MiB reads in the {big} object, cold", "ops/s",
                           True, ("mountfs", "boto3", "rclone")),
        "random-1m-warm": ("random-1m", f"the same {n1} random 1 MiB reads again (page cache dropped)",
                           "ops/s", True, ("mountfs", "boto3", "rclone")),
        "metadata": ("metadata", f"os.walk + os.stat of every file of {tree}, cold mount", "s", False,
                     ("mountfs", "rclone", "s3fs")),
        "write-seq": ("write-seq", f"sequential write of a {big} file with 1 MiB writes, then close "
                      "(the object is in the bucket when close returns)", "MB/s", True,
                      ("mountfs", "boto3", "s3fs")),
        BIG_RSS: (BIG_RSS, f"the daemon's peak RSS while reading a sparse {rss_sizes} file through a "
                  "file:// mount, cold", "MB/s", True, ("mountfs",)),
        DIRECT_READ: (DIRECT_READ, f"sequential read of a {human_size(DIRECT_BYTES)} local file with "
                      f"{READ_BUFFER // MiB} MiB reads, cold (page cache dropped): direct access through a "
                      "file:// mount vs the file itself", "MB/s", True, ("mountfs", "local")),
        **fleet.specs(scale),
        **training.specs(scale),
        **random_access.specs(scale),
    }


def rss_row(size: int) -> str:
    """Key and label of one big-rss row: "mountfs 10 GiB"."""
    return f"mountfs {human_size(size)}"


def declared_rows(scale: Scale, metric: str, tool: str, label: str) -> list[tuple[str, str]]:
    """(row key, label) of every row `tool` has in `metric`'s table: one per file size in big-rss."""
    if metric == BIG_RSS:
        return [(rss_row(size), rss_row(size)) for size in scale.rss_sizes]
    if metric.startswith("fleet-"):
        from bench import fleet

        return fleet.rows()
    return [(tool, label)]


BOTO3_LABELS = {
    "cold-seq": f"boto3 download_fileobj ({BOTO3_THREADS} threads)",
    "small-files": f"boto3 get_object ({SMALL_READERS} threads)",
    "random": "boto3 ranged get_object",
    "write-seq": f"boto3 upload_file ({WRITE_PART // MiB} MiB parts, {WRITE_THREADS} threads)",
}


@dataclass
class Context:
    """What every workload needs: the bucket, the tools to run, where to record figures."""

    target: peers.S3Target
    client: S3Client
    scale: Scale
    work: Path
    local_big: Path
    repeat: int
    timeout: float
    tools: tuple[str, ...]
    run: Run
    skipped: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = print
    server_data: Path | None = None  # kept in the page cache when a cold figure drops it
    link: ProxyProcess | None = None  # the proxy (bench.wan) every tool reaches the server through
    fill_client: S3Client | None = None  # straight to the server: setting data up is not measured
    profile_dir: Path | None = None  # py-spy the mountfs daemon during each measurement (first repeat)

    @contextlib.contextmanager
    def profiled(self, mount: peers.Mount, metric: str) -> Iterator[None]:
        """Sample where the daemon's CPU goes while the body runs: mountfs only, once per metric
        (the first repeat), with --profile; the summary goes to the run's profiles."""
        if self.profile_dir is None or mount.tool != "mountfs" or metric in self.run.profiles:
            yield
            return
        out = self.profile_dir / f"{metric}.txt"
        with profile.sampling(mount.pid, out):
            yield
        with contextlib.suppress(OSError):
            samples, frames = profile.summarize(out.read_text())
            top = [[f.name, round(f.own, 4), round(f.total, 4)] for f in frames]
            self.run.profiles[metric] = {"samples": samples, "rate": profile.RATE, "raw": str(out),
                                         "top": top}

    def drop_caches(self) -> None:
        """A cold client in front of a warm server (see `harness.drop_caches`)."""
        drop_caches(self.server_data)

    def metric(self, name: str) -> Metric:
        if name not in self.run.metrics:
            workload, title, unit, higher, _ = metric_specs(self.scale)[name]
            self.run.metrics[name] = Metric(name, title, unit, higher, by_size=workload == BIG_RSS)
        return self.run.metrics[name]

    def tools_for(self, metrics: Iterable[str]) -> list[str]:
        """The tools any of `metrics` compares, in table order, that the user asked for."""
        specs = metric_specs(self.scale)
        order: list[str] = []
        for name in metrics:
            for tool in specs[name][4]:
                if tool in self.tools and tool not in order:
                    order.append(tool)
        return order


    def runs(self, metrics: list[str], label: str) -> Iterator[str]:
        """Each tool that measures `metrics`, once per repeat, logged; tools skipped are left out."""
        for n in range(1, self.repeat + 1):
            for tool in self.tools_for(metrics):
                self.log(f"[{label}] repeat {n}/{self.repeat}: {tool}")
                if tool not in self.skipped:
                    yield tool

    def label(self, tool: str, metric: str) -> str:
        if metric == DIRECT_READ:
            return DIRECT_LABELS[tool]
        if metric in RANDOM_ACCESS:
            from bench import random_access

            return random_access.LABELS.get(tool) or TOOL_LABELS[tool]
        if tool == "boto3":
            return BOTO3_LABELS["random" if metric.startswith("random") else metric]
        return TOOL_LABELS[tool]

    def attempt(self, tool: str, metrics: list[str],
                body: Callable[[Callable[..., None]], None], row_key: str | None = None) -> None:
        """Run one repeat of one tool; a failure is recorded for every metric it had not yet
        recorded (and printed), never raised: one broken tool must not end the run. `row_key` names
        the row when a table has several of one tool (big-rss: one per file size)."""
        specs = metric_specs(self.scale)
        wanted = [m for m in metrics if tool in specs[m][4]]
        done: set[str] = set()
        who = row_key or tool
        link_mark = [self.link.counters()] if self.link is not None else []

        def row_of(metric: str) -> Row:
            return self.metric(metric).row(tool, row_key or self.label(tool, metric), key=row_key)

        def record(metric: str, value: float, rss_kib: int | None = None, **detail: Any) -> None:
            if metric not in wanted:
                return
            row = row_of(metric)
            row.values.append(value)
            if rss_kib is not None:
                row.rss_kib.append(rss_kib)
            if self.link is not None:  # the bytes through the link since the last figure of this attempt
                from bench.wan import LINK_KEY, delta

                now = self.link.counters()
                detail = {**detail, LINK_KEY: delta(now, link_mark[0])}
                link_mark[0] = now
            row.details.append({"value": value, **detail})
            done.add(metric)
            unit = self.metric(metric).unit
            rss = f", peak RSS {rss_kib / 1024:.0f} MiB" if rss_kib else ""
            cpu = cpu_per_op(self.metric(metric).unit, row.details[-1])
            cpu_text = f", daemon CPU {fmt(cpu[0])} {cpu[1]}" if cpu else ""
            self.log(f"  {metric:<15} {who:<8} {value:10.2f} {unit}{rss}{cpu_text}")

        try:
            body(record)
        except Exception as exc:
            reason = short_reason(exc)
            self.log(f"  {who}: failed: {reason}")
            for metric in wanted:
                if metric not in done:
                    row = row_of(metric)
                    row.failures.append(reason)
                    row.details.append({"failed": str(exc)})


# --- filling the bucket ----------------------------------------------------------------------

def small_key(i: int) -> str:
    return f"{SMALL_PREFIX}/f{i:05d}.bin"


def tree_key(i: int, dirs: int) -> str:
    return f"{TREE_PREFIX}/d{i % dirs:03d}/f{i:05d}.txt"


def write_random_file(path: Path, size: int) -> None:
    """Incompressible bytes, so no layer can win by compressing."""
    chunk = 16 * MiB
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def fill_bucket(client: S3Client, scale: Scale, local_big: Path,
                log: Callable[[str], None]) -> dict[str, Any]:
    """One big object (multipart upload), many 128 KiB objects, a tree of small ones; once a run."""
    facts: dict[str, Any] = {}
    start = time.perf_counter()
    write_random_file(local_big, scale.big_bytes)
    config = boto3.s3.transfer.TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB,
                                              max_concurrency=8)
    with open(local_big, "rb") as f:
        client.upload_fileobj(f, BUCKET, BIG_KEY, Config=config)
    head = client.head_object(Bucket=BUCKET, Key=BIG_KEY)
    if head["ContentLength"] != scale.big_bytes:
        raise BenchError(f"uploaded {head['ContentLength']} bytes of {BIG_KEY}, expected {scale.big_bytes}")
    facts["big_upload_seconds"] = round(time.perf_counter() - start, 2)
    facts["big_etag"] = head["ETag"]
    log(f"  {BIG_KEY}: {human_size(scale.big_bytes)} in {facts['big_upload_seconds']} s")

    def put(item: tuple[str, int]) -> None:
        client.put_object(Bucket=BUCKET, Key=item[0], Body=os.urandom(item[1]))

    for what, items in (
        ("small", [(small_key(i), scale.small_bytes) for i in range(scale.small_count)]),
        ("tree", [(tree_key(i, scale.tree_dirs), scale.tree_bytes) for i in range(scale.tree_count)]),
    ):
        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, items))
        facts[f"{what}_upload_seconds"] = round(time.perf_counter() - start, 2)
        log(f"  {what}/: {len(items):,} objects in {facts[f'{what}_upload_seconds']} s")
    return facts


# --- reading through a mount ------------------------------------------------------------------

def aligned_buffer(size: int) -> memoryview:
    """A page-aligned buffer: readinto a plain bytearray is several times slower (see TEST-SERVERS)."""
    return memoryview(mmap.mmap(-1, max(size, mmap.PAGESIZE)))[:size]


def read_sequential(path: Path) -> int:
    """`cat FILE > /dev/null` with a 1 MiB buffer; returns the bytes read."""
    view = aligned_buffer(READ_BUFFER)
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            n = os.readv(fd, [view])
            if n == 0:
                return total
            total += n
    finally:
        os.close(fd)


def read_random(path: Path, offsets: list[int], size: int) -> int:
    """One reader, `pread` at each offset (queue depth 1, like a database or an index lookup)."""
    view = aligned_buffer(size)
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in offsets:
            n = os.preadv(fd, [view], offset)
            if n != size:
                raise BenchError(f"short read: {n} of {size} bytes at {offset}")
            total += n
    finally:
        os.close(fd)
    return total


def read_files_parallel(paths: list[Path], readers: int) -> int:
    """`readers` threads, each taking the next file and reading all of it; returns bytes read."""
    lock = threading.Lock()
    position = iter(paths)
    totals: list[int] = []

    def worker() -> None:
        view = aligned_buffer(READ_BUFFER)
        total = 0
        while True:
            with lock:
                path = next(position, None)
            if path is None:
                break
            fd = os.open(path, os.O_RDONLY)
            try:
                while n := os.readv(fd, [view]):
                    total += n
            finally:
                os.close(fd)
        with lock:
            totals.append(total)

    with ThreadPoolExecutor(readers) as pool:
        for future in [pool.submit(worker) for _ in range(readers)]:
            future.result()
    return sum(totals)


def walk_stat(root: Path) -> int:
    """`find ROOT -type f | xargs stat`: every directory listed, every file stat-ed."""
    count = 0
    for dirpath, _dirs, files in os.walk(root, onerror=_raise):
        for name in files:
            os.stat(os.path.join(dirpath, name))
            count += 1
    return count


def _raise(exc: OSError) -> None:
    raise exc


def verify(path: Path, local: Path, offsets: list[int], size: int = 4 * KiB) -> None:
    """Compare a few ranges read through the mount with the source bytes (after timing)."""
    with open(path, "rb", buffering=0) as mounted, open(local, "rb", buffering=0) as source:
        for offset in offsets:
            got = os.pread(mounted.fileno(), size, offset)
            want = os.pread(source.fileno(), size, offset)
            if got != want:
                raise BenchError(f"wrong bytes read through the mount at offset {offset}")


def random_offsets(seed: int, file_size: int, io_size: int, count: int) -> list[int]:
    """Seeded, 4 KiB-aligned offsets: the same sequence for every tool and every repeat."""
    rng = random.Random(seed)
    pages = (file_size - io_size) // (4 * KiB)
    return [rng.randrange(pages + 1) * 4 * KiB for _ in range(count)]


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


# --- sequential: cold, warm, hot ---------------------------------------------------------------

def run_sequential(ctx: Context, selected: set[str]) -> None:
    metrics: list[str] = [m for m in ("cold-seq", "warm-seq", "hot-seq") if m in selected]
    size = ctx.scale.big_bytes
    samples = random_offsets(7, size, 4 * KiB, VERIFY_SAMPLES)
    for tool in ctx.runs(metrics, ", ".join(metrics)):
        if tool == "boto3":
            ctx.attempt(tool, metrics, partial(_seq_boto3, ctx))
        elif tool == "local":
            ctx.attempt(tool, metrics, partial(_seq_local, ctx))
        else:
            ctx.attempt(tool, metrics, partial(_seq_mount, ctx, tool, metrics, samples))


def _seq_mount(ctx: Context, tool: str, metrics: list[str], samples: list[int],
               record: Callable[..., None]) -> None:
    size = ctx.scale.big_bytes
    specs = metric_specs(ctx.scale)
    with peers.mounted(tool, ctx.target, ctx.work) as mount:
        path = mount.mountpoint / BIG_KEY
        base = {"mount_seconds": round(mount.mount_seconds, 3), "read_ahead_kb": mount.readahead_kb}

        def measure(metric: str) -> None:
            before = mount.counters()
            with ctx.profiled(mount, metric):
                got, seconds = timed(lambda: read_sequential(path), ctx.timeout, mount.abort)
            if got != size:
                raise BenchError(f"{metric}: read {got} bytes of {size}")
            record(metric, size / seconds / MB, mount.peak_rss_kib(), seconds=seconds,
                   counters=_delta(mount.counters(), before), **base)

        ctx.drop_caches()
        measure("cold-seq")
        verify(path, ctx.local_big, samples)
        if "warm-seq" in metrics and tool in specs["warm-seq"][4]:
            ctx.drop_caches()
            measure("warm-seq")
        if "hot-seq" in metrics and tool in specs["hot-seq"][4]:  # the last read left it in the page cache
            measure("hot-seq")


def _seq_boto3(ctx: Context, record: Callable[..., None]) -> None:
    size = ctx.scale.big_bytes
    config = boto3.s3.transfer.TransferConfig(max_concurrency=BOTO3_THREADS)

    def download() -> None:
        with open(os.devnull, "wb") as sink:  # seekable, so s3transfer writes parts as they come
            ctx.client.download_fileobj(BUCKET, BIG_KEY, sink, Config=config)

    ctx.drop_caches()  # as before every mounted tool's cold read: the same warm server
    _, seconds = timed(download, ctx.timeout, lambda: None)
    record("cold-seq", size / seconds / MB, seconds=seconds)


def _seq_local(ctx: Context, record: Callable[..., None]) -> None:
    size = ctx.scale.big_bytes
    read_sequential(ctx.local_big)  # into the page cache
    got, seconds = timed(lambda: read_sequential(ctx.local_big), ctx.timeout, lambda: None)
    if got != size:
        raise BenchError(f"read {got} bytes of {size}")
    record("hot-seq", size / seconds / MB, seconds=seconds)


# --- many small files ------------------------------------------------------------------------

def run_small_files(ctx: Context) -> None:
    for tool in ctx.runs(["small-files"], "small-files"):
        if tool == "boto3":
            ctx.attempt(tool, ["small-files"], partial(_small_boto3, ctx))
        else:
            ctx.attempt(tool, ["small-files"], partial(_small_mount, ctx, tool))


def _check_small(count: int, nbytes: int, scale: Scale) -> None:
    if count != scale.small_count or nbytes != scale.small_count * scale.small_bytes:
        raise BenchError(f"saw {count} files / {nbytes} bytes, expected {scale.small_count} / "
                         f"{scale.small_count * scale.small_bytes}")


def _small_mount(ctx: Context, tool: str, record: Callable[..., None]) -> None:
    with peers.mounted(tool, ctx.target, ctx.work) as mount:
        folder = mount.mountpoint / SMALL_PREFIX
        ctx.drop_caches()
        before = mount.counters()

        def work() -> tuple[int, int]:
            paths = [folder / name for name in sorted(os.listdir(folder))]
            return len(paths), read_files_parallel(paths, SMALL_READERS)

        with ctx.profiled(mount, "small-files"):
            (count, nbytes), seconds = timed(work, ctx.timeout, mount.abort)
        _check_small(count, nbytes, ctx.scale)
        record("small-files", count / seconds, mount.peak_rss_kib(), seconds=seconds,
               counters=_delta(mount.counters(), before), mount_seconds=round(mount.mount_seconds, 3),
               read_ahead_kb=mount.readahead_kb)


def _small_boto3(ctx: Context, record: Callable[..., None]) -> None:
    client = ctx.client

    def get(key: str) -> int:
        return len(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def work() -> tuple[int, int]:
        keys = [obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=SMALL_PREFIX + "/") for obj in page.get("Contents", [])]
        with ThreadPoolExecutor(SMALL_READERS) as pool:
            return len(keys), sum(pool.map(get, keys))

    ctx.drop_caches()
    (count, nbytes), seconds = timed(work, ctx.timeout, lambda: None)
    _check_small(count, nbytes, ctx.scale)
    record("small-files", count / seconds, seconds=seconds)


# --- random reads -------------------------------------------------------------------------------

def run_random(ctx: Context, workload: str) -> None:
    io_size = 4 * KiB if workload == "random-4k" else 1 * MiB
    ops = ctx.scale.random_4k_ops if workload == "random-4k" else ctx.scale.random_1m_ops
    offsets = random_offsets(io_size, ctx.scale.big_bytes, io_size, ops)
    metrics = [f"{workload}-cold", f"{workload}-warm"]
    for tool in ctx.runs(metrics, workload):
        if tool == "boto3":
            ctx.attempt(tool, metrics, partial(_random_boto3, ctx, metrics, offsets, io_size))
        else:
            ctx.attempt(tool, metrics, partial(_random_mount, ctx, tool, metrics, offsets, io_size))


def _random_mount(ctx: Context, tool: str, metrics: list[str], offsets: list[int], io_size: int,
                  record: Callable[..., None]) -> None:
    with peers.mounted(tool, ctx.target, ctx.work) as mount:
        path = mount.mountpoint / BIG_KEY
        for metric in metrics:  # cold on the fresh mount, then warm: the same offsets again
            ctx.drop_caches()
            before = mount.counters()
            with ctx.profiled(mount, metric):
                _, seconds = timed(lambda: read_random(path, offsets, io_size), ctx.timeout, mount.abort)
            record(metric, len(offsets) / seconds, mount.peak_rss_kib(), seconds=seconds,
                   counters=_delta(mount.counters(), before), read_ahead_kb=mount.readahead_kb,
                   mount_seconds=round(mount.mount_seconds, 3))
            if metric.endswith("-cold"):
                verify(path, ctx.local_big, offsets[:VERIFY_SAMPLES], min(io_size, 64 * KiB))


def _random_boto3(ctx: Context, metrics: list[str], offsets: list[int], io_size: int,
                  record: Callable[..., None]) -> None:
    client = ctx.client

    def work() -> None:
        for offset in offsets:
            body = client.get_object(Bucket=BUCKET, Key=BIG_KEY,
                                     Range=f"bytes={offset}-{offset + io_size - 1}")["Body"].read()
            if len(body) != io_size:
                raise BenchError(f"short ranged GET: {len(body)} of {io_size} bytes at {offset}")

    for metric in metrics:  # no cache: warm is simply a second pass
        ctx.drop_caches()
        _, seconds = timed(work, ctx.timeout, lambda: None)
        record(metric, len(offsets) / seconds, seconds=seconds)


# --- sequential write -----------------------------------------------------------------------------

def run_write(ctx: Context) -> None:
    """rclone is left out: its close returns before the upload (--vfs-cache-mode full writes back
    later), so its figure would time the local disk, not the upload."""
    for tool in ctx.runs(["write-seq"], "write-seq"):
        if tool == "boto3":
            ctx.attempt(tool, ["write-seq"], partial(_write_boto3, ctx))
        else:
            ctx.attempt(tool, ["write-seq"], partial(_write_mount, ctx, tool))


def write_sequential(source: Path, target: Path) -> int:
    """`cp SOURCE TARGET` with 1 MiB writes; the close is timed too (that is when uploads finish)."""
    view = aligned_buffer(READ_BUFFER)
    total = 0
    src = os.open(source, os.O_RDONLY)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while n := os.readv(src, [view]):
                done = 0
                while done < n:
                    done += os.write(dst, view[done:n])
                total += n
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return total


def _check_written(ctx: Context, key: str) -> None:
    size = ctx.client.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
    ctx.client.delete_object(Bucket=BUCKET, Key=key)
    if size != ctx.scale.big_bytes:
        raise BenchError(f"{key}: {size} bytes in the bucket, expected {ctx.scale.big_bytes}")


def _write_mount(ctx: Context, tool: str, record: Callable[..., None]) -> None:
    size = ctx.scale.big_bytes
    key = f"{WRITE_PREFIX}/{tool}-{time.time_ns()}.bin"
    read_sequential(ctx.local_big)  # the source in the page cache: time the mount, not our disk
    with peers.mounted(tool, ctx.target, ctx.work) as mount:
        os.makedirs(mount.mountpoint / WRITE_PREFIX, exist_ok=True)
        before = mount.counters()
        with ctx.profiled(mount, "write-seq"):
            got, seconds = timed(lambda: write_sequential(ctx.local_big, mount.mountpoint / key),
                                 ctx.timeout, mount.abort)
        if got != size:
            raise BenchError(f"wrote {got} bytes of {size}")
        record("write-seq", size / seconds / MB, mount.peak_rss_kib(), seconds=seconds,
               counters=_delta(mount.counters(), before), mount_seconds=round(mount.mount_seconds, 3))
    _check_written(ctx, key)


def _write_boto3(ctx: Context, record: Callable[..., None]) -> None:
    size = ctx.scale.big_bytes
    key = f"{WRITE_PREFIX}/boto3-{time.time_ns()}.bin"
    read_sequential(ctx.local_big)
    config = boto3.s3.transfer.TransferConfig(multipart_threshold=WRITE_PART, multipart_chunksize=WRITE_PART,
                                              max_concurrency=WRITE_THREADS)
    _, seconds = timed(lambda: ctx.client.upload_file(str(ctx.local_big), BUCKET, key, Config=config),
                       ctx.timeout, lambda: None)
    record("write-seq", size / seconds / MB, seconds=seconds)
    _check_written(ctx, key)


# --- metadata --------------------------------------------------------------------------------------

def run_metadata(ctx: Context) -> None:
    for tool in ctx.runs(["metadata"], "metadata"):
        ctx.attempt(tool, ["metadata"], partial(_metadata_mount, ctx, tool))


def _metadata_mount(ctx: Context, tool: str, record: Callable[..., None]) -> None:
    with peers.mounted(tool, ctx.target, ctx.work) as mount:
        ctx.drop_caches()
        before = mount.counters()
        with ctx.profiled(mount, "metadata"):
            count, seconds = timed(lambda: walk_stat(mount.mountpoint / TREE_PREFIX), ctx.timeout,
                                   mount.abort)
        if count != ctx.scale.tree_count:
            raise BenchError(f"saw {count} files, expected {ctx.scale.tree_count}")
        record("metadata", seconds, mount.peak_rss_kib(), seconds=seconds, files=count,
               counters=_delta(mount.counters(), before), mount_seconds=round(mount.mount_seconds, 3),
               read_ahead_kb=mount.readahead_kb)


# --- big-rss: the daemon's RSS against the file size -------------------------------------------

def make_sparse_file(path: Path, size: int) -> list[int]:
    """A sparse file of `size` bytes (`truncate`) with RSS_PATCHES runs of 1 MiB of random bytes
    spread over it, so it is not all zeros; returns the offsets of those runs."""
    offsets = sorted({(size - MiB) * i // (RSS_PATCHES - 1) // MiB * MiB for i in range(RSS_PATCHES)})
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in offsets:
            os.pwrite(f.fileno(), os.urandom(MiB), offset)
    return offsets


def run_big_rss(ctx: Context) -> None:
    """Per repeat, the largest file first, each size on a fresh mountfs daemon (VmHWM is a peak
    since start) with a fresh cache dir, which the read fills with a whole file's worth of blocks."""
    if "mountfs" not in ctx.tools or "mountfs" in ctx.skipped:
        return
    buckets: dict[int, tuple[Path, list[int]]] = {}
    try:
        for size in ctx.scale.rss_sizes:
            folder = ctx.work / f"rss-bucket-{human_size(size).replace(' ', '')}"
            folder.mkdir()
            buckets[size] = (folder, make_sparse_file(folder / "sparse.bin", size))
        for n in range(1, ctx.repeat + 1):
            for size in sorted(ctx.scale.rss_sizes, reverse=True):
                ctx.log(f"[{BIG_RSS}] repeat {n}/{ctx.repeat}: {rss_row(size)}")
                folder, patches = buckets[size]
                ctx.attempt("mountfs", [BIG_RSS], partial(_big_rss_mount, ctx, folder, size, patches),
                            row_key=rss_row(size))
        growth = ctx.metric(BIG_RSS).rss_growth()
        if growth is not None:
            ctx.log(f"  {BIG_RSS}: peak RSS {human_size(max(ctx.scale.rss_sizes))} / "
                    f"{human_size(min(ctx.scale.rss_sizes))} = {growth:.2f}")
    finally:
        for folder, _ in buckets.values():
            shutil.rmtree(folder, ignore_errors=True)


def _big_rss_mount(ctx: Context, folder: Path, size: int, patches: list[int],
                   record: Callable[..., None]) -> None:
    free = shutil.disk_usage(ctx.work).free
    if free < size + 1 * GiB:
        raise BenchError(f"{human_size(size)} of cache blocks need room: only {free / GiB:.1f} GiB free "
                         f"in {ctx.work}")
    source = folder / "sparse.bin"
    with peers.mounted_folder(folder, ctx.work) as mount:
        path = mount.mountpoint / source.name
        drop_caches()
        before = mount.counters()
        got, seconds = timed(lambda: read_sequential(path), ctx.timeout, mount.abort)
        if got != size:
            raise BenchError(f"read {got} bytes of {size}")
        record(BIG_RSS, size / seconds / MB, mount.peak_rss_kib(), seconds=seconds, file_bytes=size,
               allocated_bytes=os.stat(source).st_blocks * 512,
               counters=_delta(mount.counters(), before), mount_seconds=round(mount.mount_seconds, 3),
               read_ahead_kb=mount.readahead_kb)
        verify(path, source, [*patches, patches[-1] + MiB - 64 * KiB, size // 2 + 12 * KiB], 64 * KiB)


# --- direct-read: direct access (passthrough of a file:// mount) against the local file -----------

def run_direct_read(ctx: Context) -> None:
    """The same 1 GiB file read cold with 1 MiB reads, through a file:// mount served by direct
    access (no block cache: pread in the daemon) and straight from the disk: what passthrough costs."""
    free = shutil.disk_usage(ctx.work).free
    if free < DIRECT_BYTES + 1 * GiB:
        ctx.log(f"[{DIRECT_READ}] skipped: {DIRECT_BYTES / GiB:.0f} GiB file needs room, "
                f"only {free / GiB:.1f} GiB free in {ctx.work}")
        return
    folder = ctx.work / "direct-bucket"
    folder.mkdir(exist_ok=True)
    source = folder / "direct.bin"
    try:
        write_random_file(source, DIRECT_BYTES)
        for tool in ctx.runs([DIRECT_READ], DIRECT_READ):
            body = _direct_read_mount if tool == "mountfs" else _direct_read_local
            ctx.attempt(tool, [DIRECT_READ], partial(body, ctx, folder, source))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _direct_read_mount(ctx: Context, folder: Path, source: Path, record: Callable[..., None]) -> None:
    with peers.mounted_folder(folder, ctx.work, direct=True) as mount:
        path = mount.mountpoint / source.name
        drop_caches()
        before = mount.counters()
        got, seconds = timed(lambda: read_sequential(path), ctx.timeout, mount.abort)
        if got != DIRECT_BYTES:
            raise BenchError(f"read {got} bytes of {DIRECT_BYTES}")
        counters = _delta(mount.counters(), before)
        record(DIRECT_READ, got / seconds / MB, mount.peak_rss_kib(), seconds=seconds, counters=counters,
               mount_seconds=round(mount.mount_seconds, 3), read_ahead_kb=mount.readahead_kb)
        verify(path, source, [0, DIRECT_BYTES // 2 + 12 * KiB, DIRECT_BYTES - 64 * KiB], 64 * KiB)


def _direct_read_local(ctx: Context, folder: Path, source: Path, record: Callable[..., None]) -> None:
    drop_caches()
    got, seconds = timed(lambda: read_sequential(source), ctx.timeout, lambda: None)
    if got != DIRECT_BYTES:
        raise BenchError(f"read {got} bytes of {DIRECT_BYTES}")
    record(DIRECT_READ, got / seconds / MB, seconds=seconds)
