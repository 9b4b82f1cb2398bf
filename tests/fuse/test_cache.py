"""The block cache seen from outside: what `mountfs status` counts across reads, remounts and readers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Bucket, Mounter


def read_all(root: str, bucket: Bucket, rels: list[str]) -> None:
    """Read each file once, whole, and check it against the source."""
    for rel in rels:
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
        assert data == bucket.read(rel), rel


def test_remount_with_the_same_cache_dir_fetches_nothing(mounter: Mounter, bucket: Bucket) -> None:
    rels = [r for r in bucket.files if r != bucket.SPARSE_NAME]  # the 1 GiB file has its own test
    block = bucket.BLOCK_SIZE
    nonempty_bytes = sum(bucket.files[r] for r in rels)
    blocks = sum(-(-bucket.files[r] // block) for r in rels)
    assert len(rels) > 10_000 and blocks > len(rels) // 2

    first = mounter.mount(bucket.url)
    read_all(first.path, bucket, rels)
    cold = mounter.run.status(first)
    mounter.umount(first)
    assert cold["cache"]["misses"] > 0
    assert cold["store"]["bytes_fetched"] == nonempty_bytes, cold["store"]
    assert cold["cache"]["misses"] == blocks, cold["cache"]  # each block of each file fetched once
    assert cold["store"]["gets"] <= blocks, cold["store"]  # read-ahead fetches consecutive blocks at once

    # Blocks reach the cache disk in the background: count them once the first daemon has exited.
    second = mounter.mount(bucket.url, cache_dir=first.cache_dir)
    assert mounter.run.status(second)["cache"]["blocks"] == blocks
    read_all(second.path, bucket, rels)
    warm = mounter.run.status(second)
    assert warm["store"]["gets"] == 0, warm["stores"]
    assert warm["store"]["bytes_fetched"] == 0, warm["store"]
    assert warm["cache"]["misses"] == 0, warm["cache"]
    assert warm["cache"]["hits"] >= blocks, warm["cache"]
    assert warm["reads"]["bytes_served"] >= nonempty_bytes
    assert warm["cache"]["blocks"] == blocks  # nothing new was added to the cache


READER = r"""
import hashlib, mmap, os, sys, time
path, ready, go, direct = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
fd = os.open(path, flags)
buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT wants
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("never released")
    time.sleep(0.001)
digest = hashlib.sha256()
offset = 0
while True:
    n = os.preadv(fd, [buf], offset)
    if not n:
        break
    digest.update(buf[:n])
    offset += n
print(digest.hexdigest(), offset)
"""


def test_two_readers_at_once_fetch_each_block_once(mounter: Mounter, bucket: Bucket, tmp_path: Path) -> None:
    """Two processes read the same 64-block file at the same moment; O_DIRECT keeps the page cache
    out of the way, so both really ask the daemon for every block, and each block is fetched once."""
    mnt = mounter.mount(bucket.url)
    rel = bucket.BIG_NAME
    blocks = bucket.BIG_SIZE // bucket.BLOCK_SIZE
    go = os.path.join(tmp_path, "go")
    readers = []
    for i in range(2):
        ready = os.path.join(tmp_path, f"ready{i}")
        readers.append((ready, subprocess.Popen(
            [sys.executable, "-c", READER, mnt.join(rel), ready, go, "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    deadline = time.monotonic() + 30
    while not all(os.path.exists(ready) for ready, _ in readers):
        assert time.monotonic() < deadline, "the readers never opened the file"
        assert all(p.poll() is None for _, p in readers), [p.communicate() for _, p in readers]
        time.sleep(0.01)
    open(go, "w").close()
    want = hashlib.sha256(bucket.read(rel)).hexdigest()
    for _, process in readers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert out.split() == [want, str(bucket.BIG_SIZE)]
    status = mounter.run.status(mnt)
    assert status["cache"]["misses"] == blocks, status["cache"]
    assert status["store"]["gets"] <= blocks, status["store"]  # read-ahead fetches 16 MiB at once
    assert status["store"]["bytes_fetched"] == bucket.BIG_SIZE
    assert status["reads"]["bytes_served"] == 2 * bucket.BIG_SIZE  # both readers went to the daemon
    assert status["cache"]["hits"] + status["cache"]["shared"] >= blocks


def test_two_cat_processes_at_once(mounter: Mounter, bucket: Bucket) -> None:
    mnt = mounter.mount(bucket.url)
    path = mnt.join(bucket.BIG_NAME)
    result = subprocess.run(["sh", "-c", 'cat "$1" > /dev/null & cat "$1" > /dev/null & wait', "sh", path],
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    status = mounter.run.status(mnt)
    blocks = bucket.BIG_SIZE // bucket.BLOCK_SIZE
    assert status["cache"]["misses"] == blocks, status["cache"]
    assert status["store"]["gets"] <= blocks, status["store"]  # read-ahead fetches 16 MiB at once
    assert status["store"]["bytes_fetched"] == bucket.BIG_SIZE


def test_one_cache_dir_serves_mounts_of_two_block_sizes(mounter: Mounter, tmp_path: Path) -> None:
    """A local folder through the block cache, read with 4 MiB blocks, then with 1 MiB blocks on the
    same cache dir: each block size gets its own blocks (never a 4 MiB block's bytes as a 1 MiB
    block), and both stay cached side by side."""
    mib = 1 << 20
    root = tmp_path / "folder"
    root.mkdir()
    source = root / "twelve.bin"
    source.write_bytes(os.urandom(12 * mib))

    def cmp(mnt: str) -> None:
        result = subprocess.run(["cmp", str(source), os.path.join(mnt, "twelve.bin")],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    first = mounter.mount(root, block_size="4MiB")
    cmp(first.path)
    mounter.umount(first)

    second = mounter.mount(root, cache_dir=first.cache_dir, block_size="1MiB")
    cmp(second.path)
    status = mounter.run.status(second)
    assert status["cache"]["block_size"] == mib
    assert status["store"]["bytes_fetched"] == 12 * mib, "the 1 MiB blocks were fetched, not found"
    mounter.umount(second)

    third = mounter.mount(root, cache_dir=first.cache_dir, block_size="4MiB")
    assert mounter.run.status(third)["cache"]["blocks"] == 3 + 12
    cmp(third.path)
    status = mounter.run.status(third)
    assert status["store"]["bytes_fetched"] == 0, "the 4 MiB blocks are still served"
    assert status["cache"]["blocks"] == 3 + 12


def test_a_local_file_rewritten_in_place_with_its_mtime_set_back_is_read_anew(mounter: Mounter,
                                                                               tmp_path: Path) -> None:
    """`cp -p` onto an existing file keeps its inode and size and sets its mtime back: only the ctime
    tells the new bytes from the cached ones, after a remount as in a mount that stays."""
    root = tmp_path / "folder"
    root.mkdir()
    source = root / "v.bin"
    source.write_bytes(os.urandom(3 << 20))
    newer = tmp_path / "newer.bin"
    newer.write_bytes(os.urandom(3 << 20))
    os.utime(newer, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))  # touch -r
    first = mounter.mount(root, block_size="1MiB")
    assert Path(first.path, "v.bin").read_bytes() == source.read_bytes()
    mounter.umount(first)
    inode = source.stat().st_ino
    subprocess.run(["cp", "-p", str(newer), str(source)], check=True, timeout=60)
    assert (source.stat().st_ino, source.stat().st_mtime_ns) == (inode, newer.stat().st_mtime_ns)
    second = mounter.mount(root, cache_dir=first.cache_dir, block_size="1MiB")
    assert Path(second.path, "v.bin").read_bytes() == newer.read_bytes()
    mounter.umount(second)
