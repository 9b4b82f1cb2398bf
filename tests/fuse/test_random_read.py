"""Random small reads of a big file through a real mount fetch about what they read."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Mounter

MIB = 1 << 20


def test_random_4k_reads_fetch_about_64k_each_and_status_shows_it(mounter: Mounter, tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    root.mkdir()
    data = random.Random(11).randbytes(24 * MIB + 777)
    (root / "big.bin").write_bytes(data)
    mnt = mounter.mount(root, block_size="4MiB")
    rng = random.Random(12)
    reads = 150
    fd = os.open(os.path.join(mnt.path, "big.bin"), os.O_RDONLY)
    try:
        for _ in range(reads):
            offset = rng.randrange(4096, len(data) - 4096) // 4096 * 4096
            assert os.pread(fd, 4096, offset) == data[offset:offset + 4096], offset
    finally:
        os.close(fd)
    status = mounter.run.status(mnt)
    fetched = status["store"]["bytes_fetched"]
    # Whole 4 MiB blocks would be all 24 MiB; about 64 KiB a read (128 KiB across a span's edge).
    assert fetched <= reads * 128 * 1024, fetched
    print(f"fetched {fetched} for {reads} reads")
    (traffic,) = status["traffic"].values()
    assert traffic["fetched"] == fetched
    assert traffic["served"] >= reads * 4096 // 2  # a page read twice may come from the kernel's cache
    assert traffic["amplification"] is not None and traffic["amplification"] <= 32
    assert status["stores"][0]["traffic"] == traffic
    text = mounter.run("status", mnt.path, timeout=30)
    assert text.returncode == 0 and "amplification" in text.stdout, text.stdout + text.stderr
    # The partial blocks (recorded by the status call above) check out while mounted.
    verify = mounter.run("cache", "verify", "--cache-dir", mnt.cache_dir)
    assert verify.returncode == 0 and "clean" in verify.stdout, verify.stdout + verify.stderr
    # `warm` fetches only the rest; the bytes are right, and nothing more is fetched.
    warm = mounter.run("warm", mnt.join("big.bin"))
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert mounter.run.status(mnt)["store"]["bytes_fetched"] == len(data)
    result = subprocess.run(["cmp", str(root / "big.bin"), os.path.join(mnt.path, "big.bin")],
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert mounter.run.status(mnt)["store"]["bytes_fetched"] == len(data)
