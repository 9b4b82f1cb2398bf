"""Cache limits through real mounts of a SeaweedFS bucket: max_size and max_files evict least
recently used blocks first and never break an open file, expiry drops unused blocks, min_free
keeps the disk free, and two daemons sharing one cache dir under load leave it consistent."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers import S3Server

if TYPE_CHECKING:
    from conftest import Mount, Mounter

MiB = 1 << 20
FILES = 12  # of one block each (the mounts use 1 MiB blocks)
BUCKET = "limits"


def block_files(cache_dir: str | Path) -> list[Path]:
    """The block files under blocks/ (in its two-hex-digit subdirectories: not the CHECKSUM file)."""
    return [p for p in Path(cache_dir, "blocks").glob("*/*") if p.is_file()]


@pytest.fixture(scope="module")
def objects(seaweedfs: S3Server) -> dict[str, bytes]:
    rng = random.Random(11)
    data = {f"f{i:02d}.bin": rng.randbytes(MiB) for i in range(FILES)}
    data["two-blocks.bin"] = rng.randbytes(MiB + 4096)
    seaweedfs.create_bucket(BUCKET)
    client = seaweedfs.client()
    for key, body in data.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    return data


def config_file(tmp_path: Path, server: S3Server, cache: str = "", read: str = "",
                bucket: str = BUCKET, name: str = "mountfs.toml") -> str:
    """One mount of `bucket` at the root; a small memory cache, so what eviction must keep (blocks
    held in memory) is a block or two; `cache` and `read` are extra lines for those sections."""
    text = (f'[cache]\n{cache}\n[read]\nmax_memory = "4MiB"\n{read}\n'
            f'[[mount]]\npath = "b"\nurl = "s3://{server.host_port}/{bucket}"\n'
            f'[[s3.credentials]]\nhost = "{server.host_port}"\nkey = "{server.access_key}"\n'
            f'secret = "{server.secret_key}"\nsecure = false\n')
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def read_direct(path: str) -> bytes:
    """The whole file with O_DIRECT: every byte asked of the daemon, none from the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4 * MiB)
    out = bytearray()
    try:
        while True:
            n = os.readv(fd, [buf])
            if n <= 0:
                break
            out += buf[:n]
    finally:
        os.close(fd)
        buf.close()
    return bytes(out)


def wait_for(mounter: Mounter, mnt: Mount, predicate: Callable[[dict[str, Any]], bool],
             timeout: float = 30.0) -> dict[str, Any]:
    """The mount's status once `predicate(status)` holds (blocks reach the index in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        last = mounter.run.status(mnt)
        if predicate(last):
            return last
        assert time.monotonic() < deadline, last
        time.sleep(0.1)


def gets(mounter: Mounter, mnt: Mount) -> int:
    return int(mounter.run.status(mnt)["store"]["gets"])


def fill_in_order(mounter: Mounter, mnt: Mount, objects: dict[str, bytes], names: list[str]) -> None:
    """Read each file whole, waiting until its block is committed (cached, or already evicted)
    before the next: access order is then the order of `names`."""
    for count, name in enumerate(names, 1):
        assert read_direct(mnt.join("b", name)) == objects[name]
        wait_for(mounter, mnt, lambda s, count=count: _committed(s) >= count)


def _committed(status: dict[str, Any]) -> int:
    return int(status["cache"]["blocks"]) + int(status["cache"]["evicted"])


@pytest.mark.parametrize("limit", ['max_size = "8MiB"', "max_files = 8"])
def test_a_limit_evicts_the_least_recently_used_first(mounter: Mounter, seaweedfs: S3Server,
                                                      objects: dict[str, bytes], tmp_path: Path,
                                                      limit: str) -> None:
    mnt = mounter.mount(config_file(tmp_path, seaweedfs, limit))
    names = [f"f{i:02d}.bin" for i in range(FILES)]
    held = os.open(mnt.join("b", names[0]), os.O_RDONLY)  # open across its block's eviction
    try:
        fill_in_order(mounter, mnt, objects, names)
        status = wait_for(mounter, mnt, lambda s: s["cache"]["evicted"] >= FILES - 8)
        assert status["cache"]["blocks"] <= 8, status["cache"]
        assert _committed(status) == FILES, status["cache"]
        # The newest blocks are still cached: reading them back asks nothing of the store.
        before = gets(mounter, mnt)
        for name in reversed(names[-6:]):
            assert read_direct(mnt.join("b", name)) == objects[name]
        assert gets(mounter, mnt) == before, "recently used blocks were evicted"
        # The oldest went first: reading them fetches again.
        assert read_direct(mnt.join("b", names[1])) == objects[names[1]]
        assert gets(mounter, mnt) > before, "the least recently used block was kept"
        assert os.pread(held, 4096, MiB - 4096) == objects[names[0]][-4096:], "an open file keeps working"
    finally:
        os.close(held)
    status = mounter.run.status(mnt)
    assert status["cache"]["blocks"] <= 8


def test_blocks_unused_past_the_expiry_are_dropped(mounter: Mounter, seaweedfs: S3Server,
                                                    objects: dict[str, bytes], tmp_path: Path) -> None:
    mnt = mounter.mount(config_file(tmp_path, seaweedfs, 'expiry = "2s"'))
    for name in ("f00.bin", "f01.bin", "f02.bin", "f03.bin"):
        assert read_direct(mnt.join("b", name)) == objects[name]
    # Blocks held in memory go too (their copies in memory stay).
    status = wait_for(mounter, mnt, lambda s: s["cache"]["evicted"] >= 4 and s["cache"]["blocks"] == 0)
    assert status["cache"]["evicted"] == 4, status["cache"]
    assert read_direct(mnt.join("b", "f00.bin")) == objects["f00.bin"]


def test_min_free_evicts_what_it_can(mounter: Mounter, seaweedfs: S3Server, objects: dict[str, bytes],
                                     tmp_path: Path) -> None:
    # No disk here has 99% free: every block not in use must go.
    mnt = mounter.mount(config_file(tmp_path, seaweedfs, 'min_free = "99%"'))
    for name in ("f04.bin", "f05.bin", "f06.bin", "f07.bin", "f08.bin"):
        assert read_direct(mnt.join("b", name)) == objects[name]
    status = wait_for(mounter, mnt, lambda s: s["cache"]["evicted"] >= 3 and s["cache"]["blocks"] <= 2)
    assert read_direct(mnt.join("b", "f04.bin")) == objects["f04.bin"]
    assert status["cache"]["blocks"] <= 2


def test_two_daemons_share_one_cache_dir_under_load(mounter: Mounter, seaweedfs: S3Server,
                                                   objects: dict[str, bytes], tmp_path: Path) -> None:
    cache = mounter.fresh_dir("shared-cache")
    config = config_file(tmp_path, seaweedfs, 'max_size = "6MiB"')
    first = mounter.mount(config, cache_dir=cache)
    second = mounter.mount(config, cache_dir=cache)
    errors: list[str] = []

    def reader(mnt: Mount, seed: int) -> None:
        rng = random.Random(seed)
        names = list(objects)
        for _ in range(30):
            name = rng.choice(names)
            try:
                data = read_direct(mnt.join("b", name))
            except OSError as exc:
                errors.append(f"{mnt.path}/{name}: {exc}")
                continue
            if data != objects[name]:
                errors.append(f"{mnt.path}/{name}: wrong bytes")

    threads = [threading.Thread(target=reader, args=(mnt, seed))
               for seed, mnt in enumerate([first, second, first, second])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    evicted = sum(mounter.run.status(m)["cache"]["evicted"] for m in (first, second))
    assert evicted > 0
    mounter.umount(first)
    mounter.umount(second)
    # Blocks in use (being fetched or read) are kept over the limit a moment; the next daemon on
    # the cache dir evicts anything left over at start, when nothing is in use.
    third = mounter.mount(config, cache_dir=cache)
    wait_for(mounter, third, lambda s: s["cache"]["bytes"] <= 6 * MiB)
    mounter.umount(third)
    verify = mounter.run("cache", "verify", "--cache-dir", cache)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "clean" in verify.stdout
    stats = mounter.run("cache", "stats", "--json", "-o", f"cache_dir={cache}")
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    on_disk = block_files(cache)
    assert figures["files"] == len(on_disk)
    assert figures["bytes"] == sum(p.stat().st_size for p in on_disk)
    assert figures["bytes"] <= 6 * MiB


def test_a_corrupted_block_is_detected_and_refetched(mounter: Mounter, seaweedfs: S3Server,
                                                     objects: dict[str, bytes], tmp_path: Path) -> None:
    config = config_file(tmp_path, seaweedfs)
    mnt = mounter.mount(config)
    assert read_direct(mnt.join("b", "f09.bin")) == objects["f09.bin"]
    wait_for(mounter, mnt, lambda s: s["cache"]["blocks"] == 1)
    mounter.umount(mnt)
    (block,) = block_files(mnt.cache_dir)
    with open(block, "r+b") as f:  # one flipped byte, same length
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 0xFF]))
    again = mounter.mount(config, cache_dir=mnt.cache_dir)
    assert read_direct(again.join("b", "f09.bin")) == objects["f09.bin"]
    status = mounter.run.status(again)
    assert status["cache"]["corrupt"] == 1 and status["store"]["gets"] >= 1, status
    # and `mountfs cache verify` finds one it did not read
    assert read_direct(again.join("b", "f10.bin")) == objects["f10.bin"]
    wait_for(mounter, again, lambda s: s["cache"]["blocks"] == 2)
    mounter.umount(again)
    newest = sorted(block_files(mnt.cache_dir), key=lambda p: p.stat().st_mtime)[-1]
    with open(newest, "r+b") as f:
        f.write(b"\0" * 16)
    verify = mounter.run("cache", "verify", "--cache-dir", mnt.cache_dir)
    assert verify.returncode == 1 and "1 corrupt" in verify.stdout, verify.stdout + verify.stderr
    verify = mounter.run("cache", "verify", "--cache-dir", mnt.cache_dir)
    assert verify.returncode == 0 and "clean" in verify.stdout, verify.stdout + verify.stderr


# --- clean blocks give way; max_size holds at rest ----------------------------------------------


def local_config(tmp_path: Path, folder: Path, cache: str = "") -> str:
    """One mount of a local folder (through the block cache: the mounter passes cache_local) at
    "b", with the default memory cache (96 MiB: more than any of these caches hold on disk)."""
    path = tmp_path / "local.toml"
    path.write_text(f'[cache]\n{cache}\n[[mount]]\npath = "b"\nurl = "file://{folder}"\n')
    return str(path)


def block_bytes(cache_dir: str | Path) -> int:
    """What the block files (temp files being written included) take, as far as a walk sees it
    while the daemon adds and removes them."""
    total = 0
    for path in Path(cache_dir, "blocks").glob("*/*"):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def test_clean_blocks_give_way_to_a_write_on_a_full_cache_disk(mounter: Mounter, tmp_path: Path) -> None:
    """The cache dir on a 24 MiB tmpfs filled by reads: a write of more than is free succeeds, as
    clean blocks are evicted at once to make room for staged data."""
    folder = tmp_path / "bucket"
    folder.mkdir()
    objects = {f"r{i}.bin": os.urandom(4 * MiB) for i in range(8)}
    for name, body in objects.items():
        (folder / name).write_bytes(body)
    cache = tmp_path / "small-cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(cache)], check=True)
    try:
        mnt = mounter.mount(local_config(tmp_path, folder), cache_dir=str(cache))
        for name, body in objects.items():
            assert read_direct(mnt.join("b", name)) == body
        wait_for(mounter, mnt, lambda s: s["cache"]["bytes"] >= 16 * MiB)
        free = shutil.disk_usage(cache).free
        assert free < 8 * MiB, free
        data = os.urandom(16 * MiB)
        with open(mnt.join("b", "new.bin"), "wb") as f:
            for at in range(0, len(data), MiB):
                f.write(data[at:at + MiB])
        assert (folder / "new.bin").read_bytes() == data
        status = mounter.run.status(mnt)
        assert status["cache"]["room_made"] > 0, status["cache"]
        assert os.listdir(cache / "staging") == []
        for name in ("r0.bin", "r7.bin"):  # the cache still serves, fetching what it gave up
            assert read_direct(mnt.join("b", name)) == objects[name]
        mounter.umount(mnt)
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)


def test_max_size_holds_at_rest_and_nothing_is_fetched_twice(mounter: Mounter, tmp_path: Path) -> None:
    """Files read in listing order (siblings fetched ahead) through a cache of max_size 8 MiB and a
    larger memory cache: the block files are within max_size soon after the last read, and no block
    was fetched twice."""
    folder = tmp_path / "bucket"
    folder.mkdir()
    objects = {f"s{i:02d}.bin": os.urandom(2 * MiB) for i in range(12)}
    for name, body in objects.items():
        (folder / name).write_bytes(body)
    mnt = mounter.mount(local_config(tmp_path, folder, 'max_size = "8MiB"'))
    assert sorted(os.listdir(mnt.join("b"))) == sorted(objects)
    for name in sorted(objects):
        with open(mnt.join("b", name), "rb") as f:  # as `cat` reads
            assert f.read() == objects[name]
    # Within 30 s of the last read (the periodic pass comes every 30 s: no waiting for it).
    status = wait_for(mounter, mnt, lambda s: s["cache"]["bytes"] <= 8 * MiB, timeout=30)
    deadline = time.monotonic() + 30
    while block_bytes(mnt.cache_dir) > 8 * MiB:
        assert time.monotonic() < deadline, block_bytes(mnt.cache_dir)
        time.sleep(0.1)
    status = mounter.run.status(mnt)
    assert status["store"]["bytes_fetched"] == 24 * MiB, status["store"]
    assert status["reads"]["prefetched_unread"] == 0, status["reads"]
    assert status["cache"]["evicted"] >= 16, status["cache"]
