"""`make demo`: a local-folder bucket mounted, read cold, read warm, remounted, read again.

Needs no cloud account: the bucket is a folder of sample data made on first run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from typing import Any

from mountfs.cli import format_status
from mountfs.kernel_mounts import mount_type
from mountfs.sizes import human_bytes

WORKDIR = os.environ.get("MOUNTFS_DEMO_DIR", "/tmp/mountfs-demo")
BIG_FILE_MIB = 256
SMALL_FILES = 300


def make_bucket(bucket: str) -> None:
    marker = bucket + ".complete"
    if os.path.exists(marker):
        return
    print(f"creating the sample bucket in {bucket} ...", flush=True)
    shutil.rmtree(bucket, ignore_errors=True)
    rng = random.Random(42)
    for i in range(SMALL_FILES):
        split = f"{('train', 'val', 'test')[i % 3]}/class-{i % 10:02d}"
        folder = os.path.join(bucket, "dataset", split)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"sample-{i:04d}.bin"), "wb") as f:
            f.write(rng.randbytes(rng.randint(1, 64) * 1024))
    os.makedirs(os.path.join(bucket, "docs"), exist_ok=True)
    with open(os.path.join(bucket, "docs", "read me.txt"), "w") as f:
        f.write("a file name with a space, and ünïcödé below\n")
    with open(os.path.join(bucket, "docs", "données.json"), "w") as f:
        json.dump({"files": SMALL_FILES, "big_file_mib": BIG_FILE_MIB}, f)
    open(os.path.join(bucket, "docs", "empty"), "wb").close()
    os.makedirs(os.path.join(bucket, "shards"), exist_ok=True)
    chunk = rng.randbytes(1 << 20)
    with open(os.path.join(bucket, "shards", "shard-000.tar"), "wb") as f:
        for i in range(BIG_FILE_MIB):
            f.write(i.to_bytes(8, "little") + chunk[8:])
    open(marker, "w").close()


def mountfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mountfs", *args], text=True, capture_output=True)


def status(mnt: str) -> dict[str, Any]:
    result = mountfs("status", mnt, "--json")
    if result.returncode:
        raise SystemExit(f"mountfs status failed: {result.stderr}")
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


def read_tree(root: str, source: str) -> tuple[int, int, float]:
    """Read every file through the mount, check it against the source; files, bytes, seconds."""
    files = total = 0
    started = time.perf_counter()
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            with open(os.path.join(source, os.path.relpath(path, root)), "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != digest:
                    raise SystemExit(f"MISMATCH: {path} differs from the source")
            files += 1
            total += os.path.getsize(path)
    return files, total, time.perf_counter() - started


def report(label: str, mnt: str, files: int, nbytes: int, seconds: float,
           before: dict[str, int]) -> None:
    now = status(mnt)
    hits = now["cache"]["hits"] - before.get("hits", 0)
    misses = now["cache"]["misses"] - before.get("misses", 0)
    fetched = now["store"]["bytes_fetched"] - before.get("fetched", 0)
    rate = nbytes / seconds / 1e6 if seconds else 0.0
    print(f"{label:<22} {files:>5} files {human_bytes(nbytes):>10}  {seconds:6.2f} s {rate:8.0f} MB/s   "
          f"block hits {hits:>4}  misses {misses:>4}  fetched from store {human_bytes(fetched):>10}")


def drop_page_cache() -> bool:
    """Empty the kernel's page cache, so the next read reaches mountfs's own block cache."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        print("(not root: the kernel page cache stays warm, so the next read may not reach mountfs)")
        return False
    return True


def counters(mnt: str) -> dict[str, int]:
    s = status(mnt)
    return {"hits": s["cache"]["hits"], "misses": s["cache"]["misses"],
            "fetched": s["store"]["bytes_fetched"]}


def main() -> int:
    bucket, cache, mnt = (os.path.join(WORKDIR, n) for n in ("bucket", "cache", "mnt"))
    make_bucket(bucket)
    shutil.rmtree(cache, ignore_errors=True)
    if mount_type(mnt):
        mountfs("umount", mnt)
    os.makedirs(mnt, exist_ok=True)
    url = f"file://{bucket}"
    # cache_local: a file:// bucket would otherwise be served by direct access (no block cache),
    # and the block cache is what this demo shows
    args = (url, mnt, "-o", f"cache_dir={cache},cache_local")
    print(f"\n$ mountfs {' '.join(args)}")
    result = mountfs(*args)
    if result.returncode:
        print(result.stderr, file=sys.stderr)
        return 1
    try:
        top = sorted(os.listdir(mnt))
        print(f"$ ls {mnt}\n{'  '.join(top)}")
        print(f"$ ls -l {mnt}/docs")
        subprocess.run(["ls", "-l", os.path.join(mnt, "docs")], check=True)
        print()
        report("cold read (store)", mnt, *read_tree(mnt, bucket), {})
        before = counters(mnt)
        report("second read (page cache)", mnt, *read_tree(mnt, bucket), before)
        if drop_page_cache():
            before = counters(mnt)
            report("page cache dropped", mnt, *read_tree(mnt, bucket), before)
    finally:
        mountfs("umount", mnt)
    result = mountfs(*args)
    if result.returncode:
        print(result.stderr, file=sys.stderr)
        return 1
    try:
        report("after remount (disk)", mnt, *read_tree(mnt, bucket), {})
        print(f"\n$ mountfs status {mnt}")
        print(format_status(status(mnt)))
    finally:
        print(f"\n$ mountfs umount {mnt}")
        unmounted = mountfs("umount", mnt)
    if unmounted.returncode or mount_type(mnt):
        print(unmounted.stderr, file=sys.stderr)
        return 1
    print("unmounted. Every file matched its source; only the first read fetched from the store.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
