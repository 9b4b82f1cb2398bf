"""kill -9 in the middle of filling the cache: what the next mount on that cache serves is whole."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import Bucket, Mounter

# Reads the file with O_DIRECT so that every read reaches the daemon, without stopping.
READER = r"""
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 20)
offset = 0
while True:
    try:
        n = os.preadv(fd, [buf], offset)
    except OSError:
        break
    if not n:
        break
    offset += n
"""


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def temp_files(cache_dir: str) -> list[str]:
    return [os.path.join(folder, name) for folder, _dirs, names in os.walk(cache_dir)
            for name in names if name.endswith(".tmp")]


def test_kill_9_while_filling_the_cache_never_serves_a_partial_block(
        mounter: Mounter, bucket: Bucket, tools: Any, tmp_path: Path) -> None:
    rel = bucket.BIG_NAME
    first = mounter.mount(bucket.url)
    reader = subprocess.Popen([sys.executable, "-c", READER, first.join(rel)])
    try:
        assert tools.wait_until(lambda: mounter.run.status(first)["cache"]["misses"] >= 8, 30)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        assert tools.wait_until(lambda: not tools.pid_alive(first.pid), 10)
    finally:
        reader.kill()
        reader.wait()
    result = mounter.run("umount", first.path)  # detaches the dead mount
    assert result.returncode == 0, result.stderr
    assert not tools.is_mounted(first.path)

    # Plant what a writer killed between write and rename leaves: a half block under a temp name
    # of a dead pid. It must never be served, and the next daemon removes it.
    blocks_dir = os.path.join(first.cache_dir, "blocks")
    some_block = next(os.path.join(d, n) for d, _s, names in os.walk(blocks_dir) for n in names
                      if d != blocks_dir)  # a block, not the CHECKSUM file
    with open(f"{some_block}.999999999.1.tmp", "wb") as f:
        f.write(b"\xff" * 1000)

    second = mounter.mount(bucket.url, cache_dir=first.cache_dir)
    assert sha256_of(second.join(rel)) == sha256_of(bucket.path(rel))
    status = mounter.run.status(second)
    assert status["cache"]["hits"] >= 8, status["cache"]  # what the first daemon committed is reused
    assert status["cache"]["corrupt"] == 0, status["cache"]
    assert status["cache"]["hits"] + status["cache"]["misses"] >= bucket.BIG_SIZE // bucket.BLOCK_SIZE
    assert temp_files(first.cache_dir) == []
