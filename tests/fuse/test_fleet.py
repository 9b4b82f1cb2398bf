"""A fleet of three daemons (own cache dirs, own mount points) sharing a block cache kept in a bucket
of a second SeaweedFS: the origin sends the tree about once, not three times; shared blocks that are
corrupted, cut short or swapped are detected, counted and fetched again, never served; and a shared
server that stops mid-read leaves reads going on from the origin."""

from __future__ import annotations

import json
import os
import random
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.faultproxy import FaultProxy
from tests.fuse.conftest import wait_until
from tests.fuse.test_s3 import read_file
from tests.servers import S3Server, start_seaweedfs

if TYPE_CHECKING:
    from conftest import Mount, Mounter

MiB = 1 << 20
ORIGIN_BUCKET = "fleet-origin"
CACHE_BUCKET = "fleet-cache"
PREFIX = "mountfs"


@pytest.fixture(scope="module")
def cache_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS of its own for the shared cache: this test stops it."""
    server = start_seaweedfs(str(tmp_path_factory.mktemp("shared-cache-s3")))
    yield server
    server.stop()


def make_tree(origin: S3Server, bucket: str = ORIGIN_BUCKET, small: int = 100) -> dict[str, bytes]:
    """About 22 MiB: two big files (sequential and random reads) and 100 small ones."""
    rng = random.Random(20)
    tree = {"big.bin": rng.randbytes(12 * MiB + 5), "rand.bin": rng.randbytes(4 * MiB - 3)}
    tree.update({f"small/{i:03d}.bin": rng.randbytes(60_000 + i) for i in range(small)})
    origin.create_bucket(bucket)
    client = origin.client()
    for key, body in tree.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return tree


def write_config(tmp_path: Path, origin: S3Server, cache: S3Server, timeout: str = "2s",
                 cache_host_port: str | None = None, bucket: str = ORIGIN_BUCKET) -> str:
    """`cache_host_port`: where the shared cache is reached (a proxy in front of `cache`)."""
    cache_at = cache_host_port or cache.host_port
    lines = [f'[[mount]]\npath = "d"\nurl = "s3://{origin.host_port}/{bucket}"\n',
             f'[shared_cache]\nurl = "s3://{cache_at}/{CACHE_BUCKET}/{PREFIX}"\n'
             f'timeout = "{timeout}"\n',
             '[retry]\nattempts = 2\nbase_delay = "10ms"\nmax_delay = "50ms"\nbudget = "3s"\n']
    for server, host_port in ((origin, origin.host_port), (cache, cache_at)):
        lines.append(f'[[s3.credentials]]\nhost = "{host_port}"\nkey = "{server.access_key}"\n'
                     f'secret = "{server.secret_key}"\nsecure = false\n')
    path = tmp_path / "fleet.toml"
    path.write_text("\n".join(lines))
    return str(path)


def read_all(mnt: Mount, tree: dict[str, bytes]) -> None:
    for key, body in tree.items():
        assert read_file(mnt.join("d", key)) == body, key


def read_randomly(mnt: Mount, key: str, body: bytes, seed: int) -> None:
    rng = random.Random(seed)
    fd = os.open(mnt.join("d", key), os.O_RDONLY)
    try:
        for _ in range(60):
            offset, size = rng.randrange(len(body)), rng.choice([4096, 65536, 300_000])
            assert os.pread(fd, size, offset) == body[offset:offset + size]
    finally:
        os.close(fd)


def origin_bytes(mounter: Mounter, mnt: Mount) -> int:
    return int(mounter.run.status(mnt)["store"]["bytes_fetched"])


def shared_stats(mounter: Mounter, mnt: Mount) -> dict[str, Any]:
    stats: dict[str, Any] = mounter.run.status(mnt)["shared_cache"]
    return stats


def wait_written(mounter: Mounter, mnt: Mount) -> None:
    assert wait_until(lambda: shared_stats(mounter, mnt)["queued"] == 0, 60), shared_stats(mounter, mnt)


def block_headers(cache: S3Server) -> dict[str, dict[str, Any]]:
    """Every shared object's key -> its header (which object, which block)."""
    client = cache.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=CACHE_BUCKET, Prefix=PREFIX + "/"):
        for item in page.get("Contents", []):
            answer = client.get_object(Bucket=CACHE_BUCKET, Key=item["Key"], Range="bytes=0-2047")
            head = answer["Body"].read()
            (length,) = struct.unpack_from("<I", head, 8)
            meta = json.loads(head[12:12 + length])
            found[item["Key"]] = {"key": meta["identity"]["key"], "index": meta["index"]}
    return found


def test_a_fleet_reads_the_origin_once_and_never_serves_a_bad_shared_block(
        mounter: Mounter, seaweedfs: S3Server, cache_server: S3Server, tmp_path: Path) -> None:
    tree = make_tree(seaweedfs)
    total = sum(map(len, tree.values()))
    cache_server.create_bucket(CACHE_BUCKET)
    config = write_config(tmp_path, seaweedfs, cache_server)
    nodes = [mounter.mount(config) for _ in range(3)]

    # node 1 reads everything first and writes its blocks to the shared cache
    read_all(nodes[0], tree)
    wait_written(mounter, nodes[0])
    first = shared_stats(mounter, nodes[0])
    assert first["writes"] > 0 and first["errors"] == 0 and first["bytes_written"] == total, first
    # nodes 2 and 3 read the same tree, sequentially and at random: from the shared cache
    read_randomly(nodes[1], "rand.bin", tree["rand.bin"], seed=1)
    read_all(nodes[1], tree)
    read_randomly(nodes[2], "big.bin", tree["big.bin"], seed=2)
    read_all(nodes[2], tree)
    sent = [origin_bytes(mounter, node) for node in nodes]
    assert sent[0] == total and sent[1] == sent[2] == 0, sent  # the origin sent the tree once, not 3x
    for node in nodes[1:]:
        stats = shared_stats(mounter, node)
        assert stats["hits"] > 0 and stats["bytes_read"] == total and stats["corrupt"] == 0, stats

    # corrupt, truncate and swap shared blocks of big.bin behind the fleet's back
    headers = block_headers(cache_server)
    assert len(headers) == first["writes"]
    big = {h["index"]: key for key, h in headers.items() if h["key"] == "big.bin"}
    client = cache_server.client()

    def body(key: str) -> bytes:
        return bytes(client.get_object(Bucket=CACHE_BUCKET, Key=key)["Body"].read())

    flipped = bytearray(body(big[0]))
    flipped[-1000] ^= 0x40
    client.put_object(Bucket=CACHE_BUCKET, Key=big[0], Body=bytes(flipped))
    client.put_object(Bucket=CACHE_BUCKET, Key=big[1], Body=body(big[1])[:MiB // 2])
    client.put_object(Bucket=CACHE_BUCKET, Key=big[2], Body=body(big[3]))  # another block's
    small = next(key for key, h in headers.items() if h["key"] == "small/000.bin")
    client.put_object(Bucket=CACHE_BUCKET, Key=big[4], Body=body(small))  # another object's
    fresh = mounter.mount(config)
    assert read_file(fresh.join("d", "big.bin")) == tree["big.bin"]
    stats = shared_stats(mounter, fresh)
    assert stats["corrupt"] == 4 and stats["hits"] == 9, stats
    assert origin_bytes(mounter, fresh) == 4 * MiB  # those four blocks again, from the origin
    wait_written(mounter, fresh)  # and written back whole

    # the shared server stops in the middle of a read: the read goes on from the origin
    last = mounter.mount(config)
    fd = os.open(last.join("d", "big.bin"), os.O_RDONLY)
    try:
        assert os.pread(fd, 3 * MiB, 0) == tree["big.bin"][:3 * MiB]
        cache_server.kill()
        started = time.monotonic()
        assert os.pread(fd, 12 * MiB, 3 * MiB) == tree["big.bin"][3 * MiB:]
    finally:
        os.close(fd)
    read_all(last, {k: v for k, v in tree.items() if k.startswith("small/0")})
    assert time.monotonic() - started < 60
    stats = shared_stats(mounter, last)
    assert stats["errors"] >= 1 and stats["reads_failing"], stats
    assert "shared" in mounter.run("status", str(last)).stdout
    lines = [line for line in last.log_text().splitlines() if cache_server.host_port in line]
    assert len(lines) <= 2, lines  # the shared cache's own line, not one per call or retry


def test_a_shared_cache_that_never_answers_holds_no_read(mounter: Mounter, seaweedfs: S3Server,
                                                         cache_server: S3Server, tmp_path: Path) -> None:
    """Every answer of the shared store held for a minute: each node reads on from the origin."""
    if not cache_server.running:
        cache_server.restart()
    tree = make_tree(seaweedfs, "fleet-stalled", small=10)
    proxy = FaultProxy(int(cache_server.host_port.rsplit(":", 1)[1]), stall_answers=1.0, stall_seconds=60)
    try:
        config = write_config(tmp_path, seaweedfs, cache_server, timeout="1s",
                              cache_host_port=proxy.host_port, bucket="fleet-stalled")
        mnt = mounter.mount(config)
        done: list[bool] = []
        reader = threading.Thread(target=lambda: done.append(read_all(mnt, tree) is None), daemon=True)
        reader.start()
        reader.join(120)  # a hang, not a timing: every answer is held for 60 s
        assert done == [True], "reads waited for the shared store"
        stats = shared_stats(mounter, mnt)
        assert stats["hits"] == 0 and stats["errors"] >= 1 and stats["reads_failing"], stats
        assert origin_bytes(mounter, mnt) == sum(map(len, tree.values()))
        lines = [line for line in mnt.log_text().splitlines() if proxy.host_port in line]
        assert len(lines) <= 2, lines
    finally:
        proxy.close()
