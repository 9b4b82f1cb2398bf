"""Read speed helpers seen from outside: kernel readahead raised, sequential reads prefetched,
random reads not, and metadata walks answered from listings."""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Bucket, Mounter


def test_the_mount_gets_a_large_kernel_readahead(mounter: Mounter, bucket: Bucket) -> None:
    mnt = mounter.mount(bucket.url)
    device = os.stat(mnt.path).st_dev
    with open(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb") as f:
        assert int(f.read()) == 8192


def test_the_kernel_may_send_many_reads_at_once(mounter: Mounter, bucket: Bucket) -> None:
    """A reader asking for many ranges at once (fadvise WILLNEED) must not block in the kernel
    behind its default of 12 outstanding reads: fusectl is mounted if need be."""
    from mountfs.kernel_tuning import BACKGROUND_REQUESTS, connection_dir

    mnt = mounter.mount(bucket.url)
    folder = connection_dir(os.stat(mnt.path).st_dev)
    with open(f"{folder}/max_background") as f:
        assert int(f.read()) == BACKGROUND_REQUESTS
    with open(f"{folder}/congestion_threshold") as f:
        assert int(f.read()) == BACKGROUND_REQUESTS * 3 // 4


def test_sequential_reads_prefetch_and_random_reads_do_not(mounter: Mounter, bucket: Bucket) -> None:
    rel = bucket.BIG_NAME  # 64 MiB in 1 MiB blocks
    random_mount = mounter.mount(bucket.url)
    fd = os.open(random_mount.join(bucket.SPARSE_NAME), os.O_RDONLY | os.O_DIRECT)  # 1 GiB
    try:
        import mmap

        buf = mmap.mmap(-1, 4096)
        rng = random.Random(3)
        for _ in range(20):
            os.preadv(fd, [buf], rng.randrange(1, bucket.SPARSE_SIZE // 4096) * 4096)
    finally:
        os.close(fd)
    assert mounter.run.status(random_mount)["reads"]["prefetched_blocks"] == 0

    sequential = mounter.mount(bucket.url)
    with open(sequential.join(rel), "rb") as f:
        assert f.read() == bucket.read(rel)
    status = mounter.run.status(sequential)
    assert status["reads"]["prefetched_blocks"] > 0
    assert status["cache"]["misses"] == bucket.BIG_SIZE // bucket.BLOCK_SIZE, "each block fetched once"
