"""`mountfs warm` and `mountfs cache stats` on real mounts of a SeaweedFS bucket."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.fuse.test_cache_limits import config_file
from tests.servers import S3Server

if TYPE_CHECKING:
    from conftest import Mounter

MiB = 1 << 20


def test_warm_fetches_a_tree_once_and_names_what_failed(mounter: Mounter, seaweedfs: S3Server,
                                                         tmp_path: Path) -> None:
    rng = random.Random(3)
    objects = {f"set/part-{i:02d}.bin": rng.randbytes(rng.randint(1, 200_000)) for i in range(30)}
    objects.update({"set/big/shard-0.bin": rng.randbytes(3 * MiB + 5), "set/big/shard-1.bin": b"",
                    "other.txt": b"not warmed", "gone.bin": b"deleted before it is read"})
    seaweedfs.create_bucket("warm")
    client = seaweedfs.client()
    for key, body in objects.items():
        client.put_object(Bucket="warm", Key=key, Body=body)
    mnt = mounter.mount(config_file(tmp_path, seaweedfs, bucket="warm"))
    warmed = {k: v for k, v in objects.items() if k.startswith("set/")}
    blocks = sum(-(-len(v) // MiB) for v in warmed.values())

    result = mounter.run("warm", mnt.join("b", "set"), "-j", "4")
    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"warmed {len(warmed)} of {len(warmed)} files, "), result.stderr
    status = mounter.run.status(mnt)
    # (the listing-order prefetch racing the parallel readers may fetch a few blocks twice)
    assert status["store"]["bytes_fetched"] >= sum(map(len, warmed.values())), status["store"]
    deadline = time.monotonic() + 30
    while status["cache"]["blocks"] < blocks and time.monotonic() < deadline:  # committed in the background
        time.sleep(0.1)
        status = mounter.run.status(mnt)
    assert status["cache"]["blocks"] == blocks, status["cache"]

    again = mounter.run("warm", mnt.join("b", "set"), mnt.join("b", "set", "part-00.bin"))
    assert again.returncode == 0, again.stderr
    assert mounter.run.status(mnt)["store"]["bytes_fetched"] == status["store"]["bytes_fetched"], \
        "a second warm-up fetches nothing"

    stats = mounter.run("cache", "stats", "--cache-dir", mnt.cache_dir)
    assert stats.returncode == 0, stats.stderr
    assert f"mount:   {mnt.path} (pid {mnt.pid}): hit ratio" in stats.stdout, stats.stdout
    figures = json.loads(mounter.run("cache", "stats", "--json", "--cache-dir", mnt.cache_dir).stdout)
    assert figures["files"] == blocks and figures["mounts"][0]["mountpoint"] == mnt.path

    pruned = mounter.run("cache", "prune", "--all", "--cache-dir", mnt.cache_dir)
    assert pruned.returncode == 0 and pruned.stdout.startswith("removed "), pruned.stderr

    assert os.stat(mnt.join("b", "gone.bin")).st_size == len(objects["gone.bin"])  # known to the mount
    client.delete_object(Bucket="warm", Key="gone.bin")  # then gone behind its back
    failing = mounter.run("warm", mnt.join("b", "gone.bin"), mnt.join("b", "other.txt"))
    assert failing.returncode == 1
    assert "warmed 1 of 2 files" in failing.stderr and "1 failed" in failing.stderr
    assert f"{mnt.join('b', 'gone.bin')}: " in failing.stderr, failing.stderr
    assert os.path.exists(mnt.join("b", "other.txt"))
