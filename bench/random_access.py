"""Real random-access workloads: `parquet` (pyarrow reading 2 of 20 columns), `zip` (zipfile listing
an archive of small files and extracting 50 members), `sqlite` (queries on a read-only database,
immutable=1). Each runs through every mount (mountfs, rclone, s3fs), with fsspec's `s3fs` and
`pyarrow.fs.S3FileSystem` directly where they apply, and on the local original.

Why: a random reader fetches a footer, an index, a central directory, some pages; a mount that
fetches whole blocks or big chunks for each multiplies the bytes (egress, cache, latency). Each
figure is the time of the work and the bytes that crossed the counting proxy in front of SeaweedFS
(every tool is counted there, the same way); "read" is what the same reader read from the local
original (its rchar; for parquet the chosen column chunks and the footer), so fetched / read is
the amplification. The reader runs in a child process
(bench/ra_reader.py) whose CPU is the direct clients' CPU figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench import peers, wan
from bench.harness import CPU_MS, BenchError, GiB, KiB, MiB, human_size, timed
from bench.workloads import BUCKET, RANDOM_ACCESS, Context, Scale

PARQUET, ZIP, SQLITE = RANDOM_ACCESS
WORKLOADS = RANDOM_ACCESS
PREFIX = "random-access"
DIRECT = ("fsspec", "pyarrow")
LABELS = {"fsspec": "fsspec s3fs (direct)", "pyarrow": "pyarrow.fs.S3FileSystem (direct)",
          "local": "local file (reference)"}
FSSPEC_PYTHON_ENV = "MOUNTFS_BENCH_FSSPEC_PYTHON"
DEFAULT_FSSPEC_VENV = Path.home() / ".cache" / "mountfs-bench-fsspec" / "bin" / "python"
PARQUET_COLUMNS = 20
PARQUET_READ = ["c03", "c17"]
PARQUET_ROW_GROUP = 32 * MiB  # of raw data per row group: column chunks of 1.6 MiB
ZIP_MEMBER = 64 * KiB
ZIP_EXTRACT = 50
SQLITE_BLOB = 1000
SEED = 23


@dataclass(frozen=True)
class Sizes:
    parquet: int
    zip: int
    sqlite: int


FULL = Sizes(parquet=1 * GiB, zip=1 * GiB, sqlite=500 * MiB)
QUICK = Sizes(parquet=128 * MiB, zip=128 * MiB, sqlite=64 * MiB)


def sizes(scale: Scale) -> Sizes:
    return QUICK if scale.name == "quick" else FULL


def specs(scale: Scale) -> dict[str, tuple[str, str, str, bool, tuple[str, ...]]]:
    """metric -> (workload, title, unit, higher is better, tools), as `workloads.metric_specs`."""
    s = sizes(scale)
    mounts = ("mountfs", "rclone", "s3fs")
    return {
        PARQUET: (PARQUET, f"pyarrow.parquet reading {len(PARQUET_READ)} of {PARQUET_COLUMNS} columns of a "
                  f"{human_size(s.parquet)} parquet file, cold", "s", False, (*mounts, *DIRECT, "local")),
        ZIP: (ZIP, f"zipfile listing a {human_size(s.zip)} zip of {human_size(ZIP_MEMBER)} members and "
              f"extracting {ZIP_EXTRACT}, cold", "s", False, (*mounts, *DIRECT, "local")),
        SQLITE: (SQLITE, f"sqlite3 lookups on a {human_size(s.sqlite)} database (read-only, immutable=1), "
                 "cold", "s", False, (*mounts, "local")),
    }


def how(run: Any) -> str:
    """The paragraph of bench/RESULTS.md that says how these figures are taken ("" without them)."""
    if not any(name in run.metrics for name in WORKLOADS):
        return ""
    return (
        "parquet, zip and sqlite are random readers: pyarrow.parquet reads 2 of 20 int64 columns "
        "(uncompressed, 32 MiB row groups), zipfile lists an archive of 64 KiB stored members and "
        f"extracts {ZIP_EXTRACT} seeded ones, sqlite3 opens a database read-only with immutable=1 and "
        "runs 200 primary-key lookups, 50 index lookups and a 100-row range scan. Each runs in a child "
        "process, on a fresh mount after the page cache is dropped, or with fsspec's s3fs or "
        "pyarrow.fs.S3FileSystem directly, and every result is checked against the local file's. Bytes "
        "fetched are counted by a proxy in front of SeaweedFS (the same for every tool); bytes read "
        "are what the reader read from the local file (parquet: the chosen column chunks and the "
        "footer). The local row is that local read, cold."
    )


def reader_python(tool: str) -> str | None:
    """The interpreter that runs `tool`'s reader: ours when it has what the tool needs, else (fsspec)
    $MOUNTFS_BENCH_FSSPEC_PYTHON or ~/.cache/mountfs-bench-fsspec; None when there is none."""
    module = {"fsspec": "s3fs"}.get(tool, "pyarrow")
    candidates = [sys.executable]
    if tool == "fsspec":
        candidates += [os.environ.get(FSSPEC_PYTHON_ENV, ""), str(DEFAULT_FSSPEC_VENV)]
    for python in filter(None, candidates):
        if not os.path.exists(python):
            continue
        check = subprocess.run([python, "-c", f"import {module}, pyarrow"], capture_output=True, timeout=60,
                               check=False)
        if check.returncode == 0:
            return python
    return None


def missing_reason(tool: str) -> str | None:
    if tool in DIRECT and reader_python(tool) is None:
        if tool == "fsspec":
            return (f"fsspec's s3fs is not importable (it pins an older botocore than boto3's: install "
                    f"`pyarrow s3fs` in a venv of its own and set {FSSPEC_PYTHON_ENV})")
        return "pyarrow is not installed (pip install pyarrow)"
    return None


# --- the data sets -------------------------------------------------------------------------------

def make_parquet(path: Path, size: int, row_group: int = PARQUET_ROW_GROUP) -> None:
    """PARQUET_COLUMNS int64 columns of random values, uncompressed, row groups of `row_group` bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = size // (8 * PARQUET_COLUMNS)
    group = row_group // (8 * PARQUET_COLUMNS)
    names = [f"c{i:02d}" for i in range(PARQUET_COLUMNS)]
    schema = pa.schema([(n, pa.int64()) for n in names])
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            arrays = [pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(os.urandom(8 * n))])
                      for _ in names]
            writer.write_table(pa.Table.from_arrays(arrays, names=names), row_group_size=n)


def parquet_needed_bytes(path: Path | str, columns: list[str]) -> int:
    """The bytes a perfect reader fetches: the footer (metadata + its 8-byte trailer) and the column
    chunks of `columns` in every row group."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    total = meta.serialized_size + 8
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.path_in_schema in columns:
                total += chunk.total_compressed_size
    return int(total)


def zip_member_name(i: int) -> str:
    return f"d{i // 256:03d}/m{i:06d}.bin"


def make_zip(path: Path, size: int) -> None:
    """Members of ZIP_MEMBER random bytes, stored (random bytes do not compress)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(size // ZIP_MEMBER):
            archive.writestr(zip_member_name(i), os.urandom(ZIP_MEMBER))


def sqlite_rows(size: int) -> int:
    return size // (SQLITE_BLOB + 100)  # a row and its share of both b-trees


def make_sqlite(path: Path, size: int) -> None:
    """t(id INTEGER PRIMARY KEY, k INTEGER indexed, v BLOB of SQLITE_BLOB random bytes); k is a
    permutation of the ids, so an index lookup lands anywhere in the table."""
    rows = sqlite_rows(size)
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v BLOB)")
        batch = 10_000
        for start in range(1, rows + 1, batch):
            db.executemany("INSERT INTO t VALUES (?, ?, ?)",
                           ((i, (i * 7919) % rows + 1, os.urandom(SQLITE_BLOB))
                            for i in range(start, min(start + batch, rows + 1))))
        db.execute("CREATE INDEX t_k ON t (k)")
        db.commit()
    finally:
        db.close()


MAKERS: dict[str, Callable[[Path, int], None]] = {PARQUET: make_parquet, ZIP: make_zip, SQLITE: make_sqlite}
SUFFIX = {PARQUET: "parquet", ZIP: "zip", SQLITE: "sqlite"}


def object_key(workload: str) -> str:
    return f"{PREFIX}/data.{SUFFIX[workload]}"


def reader_params(workload: str, size: int) -> dict[str, Any]:
    if workload == PARQUET:
        return {"columns": PARQUET_READ}
    if workload == ZIP:
        return {"members": ZIP_EXTRACT, "seed": SEED}
    return {"rows": sqlite_rows(size), "lookups": 200, "index_lookups": 50, "scan": 100, "seed": SEED}


# --- running them ------------------------------------------------------------------------------

def run_reader(python: str, workload: str, source: str, params: dict[str, Any], timeout: float,
               on_expire: Callable[[], None]) -> dict[str, Any]:
    """One child reader; its JSON line. BenchError with its stderr when it fails."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    argv = [python, "-m", "bench.ra_reader", workload, source, json.dumps(params)]

    def go() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)

    done, _ = timed(go, timeout + 5, on_expire)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise BenchError(f"{workload} reader failed: {tail}")
    reply: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return reply


def run_random_access(ctx: Context, selected: set[str]) -> None:
    """Behind the run's link (--wan), else behind a proxy that only counts, where every tool's bytes
    are counted the same way."""
    if ctx.link is not None:
        _run_random_access(ctx, selected)
        return
    with wan.running(ctx.target.host_port, wan.LinkSpec(), ctx.work / "count-proxy.log") as proxy:
        target = dataclasses.replace(ctx.target, endpoint=proxy.endpoint, host_port=proxy.host_port)
        _run_random_access(dataclasses.replace(ctx, target=target, link=proxy), selected)


def _run_random_access(ctx: Context, selected: set[str]) -> None:
    """Per workload: make the file, upload it (not through the link), take the local reference
    (bytes read, result), then every tool cold, `repeat` times."""
    client = ctx.fill_client or ctx.client
    for workload in (w for w in WORKLOADS if w in selected):
        size = getattr(sizes(ctx.scale), workload)
        local = ctx.work / f"random-access.{SUFFIX[workload]}"
        ctx.log(f"[{workload}] making a {human_size(size)} file")
        try:
            MAKERS[workload](local, size)
            client.upload_file(str(local), BUCKET, object_key(workload))
            params = reader_params(workload, size)
            python = sys.executable
            ctx.drop_caches()
            reference = run_reader(python, workload, str(local), params, ctx.timeout, lambda: None)
            extra = {"needed_bytes": parquet_needed_bytes(local, PARQUET_READ)} if workload == PARQUET else {}
            ctx.log(f"  local reader read {reference['rchar'] / MiB:.1f} MiB"
                    + (f" (column chunks + footer: {extra['needed_bytes'] / MiB:.1f} MiB)" if extra else ""))
            for tool in ctx.runs([workload], workload):
                ctx.attempt(tool, [workload], partial(_one, ctx, workload, tool, local, params, reference,
                                                      extra))
        finally:
            local.unlink(missing_ok=True)
            client.delete_object(Bucket=BUCKET, Key=object_key(workload))


def _check(workload: str, tool: str, reply: dict[str, Any], reference: dict[str, Any]) -> None:
    if reply["result"] != reference["result"]:
        raise BenchError(f"{tool} read {reply['result']}, the local file gives {reference['result']}")


def _one(ctx: Context, workload: str, tool: str, local: Path, params: dict[str, Any],
         reference: dict[str, Any], extra: dict[str, Any], record: Callable[..., None]) -> None:
    # what the reader needs: for parquet the chosen column chunks and the footer (what a perfect reader
    # fetches, less than pyarrow reads locally), else what the reader read from the local file
    app = {"app_bytes": int(extra.get("needed_bytes", reference["rchar"])), "local_rchar": reference["rchar"],
           **extra}
    if tool == "local":
        ctx.drop_caches()
        reply = run_reader(sys.executable, workload, str(local), params, ctx.timeout, lambda: None)
        _check(workload, tool, reply, reference)
        record(workload, reply["seconds"], seconds=reply["seconds"], client_cpu_ms=reply["cpu_ms"], **app)
        return
    if tool in DIRECT:
        python = reader_python(tool)
        if python is None:
            raise BenchError(missing_reason(tool) or f"{tool} is not available")
        t = ctx.target
        remote = {**params, "s3": {"endpoint": t.endpoint, "key": t.access_key, "secret": t.secret_key,
                                   "bucket": t.bucket, "object": object_key(workload)}}
        ctx.drop_caches()
        reply = run_reader(python, workload, f"{tool}:", remote, ctx.timeout, lambda: None)
        _check(workload, tool, reply, reference)
        record(workload, reply["seconds"], seconds=reply["seconds"], counters={CPU_MS: reply["cpu_ms"]},
               **app)
        return
    with peers.mounted(tool, ctx.target, ctx.work) as mount:
        ctx.drop_caches()
        before = mount.counters()
        reply = run_reader(sys.executable, workload, str(mount.mountpoint / object_key(workload)), params,
                           ctx.timeout, mount.abort)
        _check(workload, tool, reply, reference)
        after = mount.counters()
        record(workload, reply["seconds"], mount.peak_rss_kib(), seconds=reply["seconds"],
               counters={k: v - before.get(k, 0) for k, v in after.items()},
               mount_seconds=round(mount.mount_seconds, 3), read_ahead_kb=mount.readahead_kb, **app)
