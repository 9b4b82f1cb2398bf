"""The readers of the random-access workloads, run as a child process of the bench:
`python -m bench.ra_reader KIND SOURCE PARAMS_JSON` prints one JSON line
{"seconds", "cpu_ms", "rchar", "result"} about the work alone (imports and start-up excluded).

Why a child process: fsspec's `s3fs` pins an older botocore than the bench's boto3, so it may live in
a venv of its own (MOUNTFS_BENCH_FSSPEC_PYTHON); a child also gives each direct client its own CPU
figure, comparable to a mount daemon's, and keeps pyarrow's threads off the bench process. Only the
standard library is imported at the top, so any Python with pyarrow (and s3fs for fsspec) runs it.

SOURCE is a local path (a file on a mount, or the local original), or `fsspec:` / `pyarrow:` for the
direct clients, which then read PARAMS' "s3" (endpoint, key, secret, bucket, object).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any


def rchar() -> int:
    """Bytes this process got from read()/pread() so far (files and sockets alike)."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def zip_members(names: list[str], count: int, seed: int) -> list[str]:
    """The members a zip run extracts: `count` of the files (not directories), seeded, sorted."""
    files = sorted(n for n in names if not n.endswith("/"))
    return sorted(random.Random(seed).sample(files, min(count, len(files))))


def sqlite_ids(rows: int, count: int, seed: int) -> list[int]:
    """Row ids the point queries look up: seeded, spread over the whole table."""
    rng = random.Random(seed)
    return [rng.randrange(1, rows + 1) for _ in range(count)]


def _open_remote(source: str, params: dict[str, Any]) -> tuple[Any, str]:
    """(filesystem, "bucket/key") of a direct client."""
    s3 = params["s3"]
    path = f"{s3['bucket']}/{s3['object']}"
    if source == "fsspec:":
        import s3fs

        fs = s3fs.S3FileSystem(key=s3["key"], secret=s3["secret"], skip_instance_cache=True,
                               client_kwargs={"endpoint_url": s3["endpoint"], "region_name": "us-east-1"})
        return fs, path
    from pyarrow import fs as pafs

    host = s3["endpoint"].split("://", 1)[1]
    return pafs.S3FileSystem(access_key=s3["key"], secret_key=s3["secret"], endpoint_override=host,
                             scheme="http", region="us-east-1"), path


def _open_file(source: str, params: dict[str, Any]) -> Any:
    if not source.endswith(":"):
        return open(source, "rb")
    fs, path = _open_remote(source, params)
    if source == "fsspec:":
        return fs.open(path, "rb")
    return fs.open_input_file(path)


def parquet(source: str, params: dict[str, Any]) -> Any:
    """Read `columns` of the file into a table; result: rows and a checksum of the columns."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    columns = params["columns"]
    if source.endswith(":"):
        fs, path = _open_remote(source, params)
        table = pq.read_table(path, columns=columns, filesystem=fs)
    else:
        table = pq.read_table(source, columns=columns)
    checksum = sum(pc.sum(pc.bit_wise_and(table.column(c), 0xFFFF)).as_py() or 0 for c in columns)
    return [table.num_rows, checksum]


def zipped(source: str, params: dict[str, Any]) -> Any:
    """List the archive, then extract (read, CRC checked) `members` seeded members."""
    import zipfile

    with _open_file(source, params) as f, zipfile.ZipFile(f) as archive:
        names = archive.namelist()
        total = 0
        for name in zip_members(names, params["members"], params["seed"]):
            total += len(archive.read(name))
    return [len(names), total]


def sqlite(source: str, params: dict[str, Any]) -> Any:
    """Point lookups by primary key, lookups through an index, one short range scan, read-only."""
    import sqlite3

    db = sqlite3.connect(f"file:{source}?mode=ro&immutable=1", uri=True)
    try:
        total = 0
        for rid in sqlite_ids(params["rows"], params["lookups"], params["seed"]):
            (blob,) = db.execute("SELECT v FROM t WHERE id = ?", (rid,)).fetchone()
            total += len(blob)
        for k in sqlite_ids(params["rows"], params["index_lookups"], params["seed"] + 1):
            for (rid,) in db.execute("SELECT id FROM t WHERE k = ?", (k,)):
                total += rid
        start = sqlite_ids(params["rows"], 1, params["seed"] + 2)[0]
        (n, size) = db.execute("SELECT count(*), sum(length(v)) FROM t WHERE id BETWEEN ? AND ?",
                               (start, start + params["scan"] - 1)).fetchone()
        return [total, n, size]
    finally:
        db.close()


READERS = {"parquet": parquet, "zip": zipped, "sqlite": sqlite}


def main(argv: list[str]) -> int:
    kind, source, params = argv[0], argv[1], json.loads(argv[2])
    before_io, before_cpu = rchar(), sum(os.times()[:2])
    start = time.perf_counter()
    result = READERS[kind](source, params)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "cpu_ms": round((sum(os.times()[:2]) - before_cpu) * 1000),
                      "rchar": rchar() - before_io, "result": result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
