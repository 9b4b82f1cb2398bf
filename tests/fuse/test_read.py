"""File contents through the mount, compared byte for byte with the source folder."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import random
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Bucket, Mount, Mounter


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_cat_equals_source(sample_mount: Mount, bucket: Bucket) -> None:
    rels = ["empty", "blocks/exactly-one-block.bin", "blocks/one-block-plus-one.bin", bucket.SPACE_NAME,
            bucket.FRENCH_NAME, bucket.JAPANESE_NAME, *bucket.MID_FILES, *bucket.sample_files[::15]]
    for rel in rels:
        result = subprocess.run(["cat", sample_mount.join(rel)], capture_output=True, timeout=60)
        assert result.returncode == 0, (rel, result.stderr)
        assert result.stdout == bucket.read(rel), rel


def test_cmp_every_sample_file(sample_mount: Mount, bucket: Bucket) -> None:
    """Real `cmp` for each of the ~320 sample files (the 10,000 small ones are compared in Python)."""
    differ = []
    for rel in bucket.sample_files:
        result = subprocess.run(["cmp", "--", bucket.path(rel), sample_mount.join(rel)], capture_output=True,
                                timeout=60)
        if result.returncode != 0:
            differ.append((rel, result.stdout + result.stderr))
    assert not differ, f"{len(differ)} files differ, first: {differ[:3]}"
    assert len(bucket.sample_files) > 300


def test_every_file_of_the_10000_folder(sample_mount: Mount, bucket: Bucket) -> None:
    differ = []
    for name in sorted(bucket.many_names):
        rel = f"{bucket.MANY_DIR}/{name}"
        with open(sample_mount.join(rel), "rb") as f:
            if f.read() != bucket.read(rel):
                differ.append(rel)
    assert not differ, f"{len(differ)} files differ, first: {differ[:5]}"


def test_tar_lists_every_entry(sample_mount: Mount, bucket: Bucket) -> None:
    result = subprocess.run("set -o pipefail; tar cf - . | tar tf - --quoting-style=literal", shell=True,
                            executable="/bin/bash", cwd=sample_mount.path, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    entries = [line[2:].rstrip("/") for line in result.stdout.decode().splitlines()]
    entries = [e for e in entries if e]  # "./" itself
    assert len(entries) == len(set(entries))
    expected = set(bucket.files) | bucket.dirs
    assert set(entries) == expected, (
        f"missing: {sorted(expected - set(entries))[:10]}, extra: {sorted(set(entries) - expected)[:10]}")


def offsets_to_try(size: int, block: int, rng: random.Random,
                   regions: tuple[tuple[int, int], ...]) -> list[int]:
    """Block boundaries and their neighbours, region edges, EOF and past it, plus random ones."""
    offsets = {0, 1, size - 1, size, size + 1, size + block, 2 * size + 7}
    blocks = size // block
    indices = {1, 2, blocks // 2, blocks - 1, blocks} | {rng.randrange(blocks + 1) for _ in range(6)}
    for index in sorted(indices):
        for delta in (-4097, -1, 0, 1, 4096):
            offsets.add(index * block + delta)
    for offset, length in regions:
        offsets.update({offset - 1, offset, offset + length - 1, offset + length})
    offsets.update(rng.randrange(size) for _ in range(40))
    return sorted(o for o in offsets if o >= 0)


def compare_preads(mounted_path: str, source_path: str, size: int, block: int, seed: int,
                   regions: tuple[tuple[int, int], ...] = ()) -> int:
    rng = random.Random(seed)
    lengths = [1, 7, 4095, 4096, 65536, 131072, block - 1, block, block + 1, 3 * block + 5]
    checked = 0
    mfd = os.open(mounted_path, os.O_RDONLY)
    sfd = os.open(source_path, os.O_RDONLY)
    try:
        for offset in offsets_to_try(size, block, rng, regions):
            for length in rng.sample(lengths, 3):
                got = os.pread(mfd, length, offset)
                want = os.pread(sfd, length, offset)
                assert len(want) == max(0, min(length, size - offset))
                assert len(got) == len(want), (mounted_path, offset, length, len(got), len(want))
                assert got == want, (mounted_path, offset, length)
                checked += 1
    finally:
        os.close(mfd)
        os.close(sfd)
    return checked


def test_random_preads_on_the_sparse_file(mounter: Mounter, bucket: Bucket) -> None:
    mnt = mounter.mount(bucket.url)  # fresh: nothing of the file is in the page cache yet
    rel = bucket.SPARSE_NAME
    assert os.stat(mnt.join(rel)).st_size == bucket.SPARSE_SIZE
    checked = compare_preads(mnt.join(rel), bucket.path(rel), bucket.SPARSE_SIZE, bucket.BLOCK_SIZE, 1,
                             tuple(bucket.SPARSE_REGIONS))
    assert checked > 100
    # the known regions exactly where they were written
    with open(mnt.join(rel), "rb") as f:
        for offset, length in bucket.SPARSE_REGIONS:
            f.seek(offset)
            assert f.read(length) == bytes((offset + j) % 251 + 1 for j in range(length)), offset
        f.seek(bucket.SPARSE_REGIONS[1][0] - 10)
        assert f.read(10) == bytes(10)


def test_random_preads_on_mid_size_files(mounter: Mounter, bucket: Bucket) -> None:
    mnt = mounter.mount(bucket.url)
    rels = [*bucket.MID_FILES, "blocks/exactly-one-block.bin", "blocks/one-block-plus-one.bin",
            bucket.BIG_NAME, bucket.JAPANESE_NAME]
    for seed, rel in enumerate(rels):
        size = bucket.files[rel]
        assert compare_preads(mnt.join(rel), bucket.path(rel), size, bucket.BLOCK_SIZE, 100 + seed) > 50, rel
    status = mounter.run.status(mnt)
    assert status["reads"]["reads"] > 0 and status["cache"]["misses"] > 0


def test_sequential_read_of_the_1gib_file(mounter: Mounter, bucket: Bucket) -> None:
    mnt = mounter.mount(bucket.url)
    rel = bucket.SPARSE_NAME
    assert sha256_of(mnt.join(rel)) == sha256_of(bucket.path(rel))
    status = mounter.run.status(mnt)
    blocks = bucket.SPARSE_SIZE // bucket.BLOCK_SIZE
    assert status["cache"]["misses"] == blocks, status["cache"]
    assert status["store"]["bytes_fetched"] == bucket.SPARSE_SIZE
    assert status["reads"]["bytes_served"] >= bucket.SPARSE_SIZE


def test_source_changed_under_an_open_file(mounter: Mounter, tmp_path: Path) -> None:
    """A file rewritten in the source while open: blocks already read keep their old bytes, and an
    uncached block fails with ESTALE rather than mixing the new version into the old one."""
    source = tmp_path / "changing"
    source.mkdir()
    block = 1 << 20
    old = bytes([1]) * (24 * block)
    (source / "f.bin").write_bytes(old)
    mnt = mounter.mount(f"file://{source}")
    fd = os.open(mnt.join("f.bin"), os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, block)
    try:
        assert os.preadv(fd, [buf], 0) == block and buf[:] == old[:block]
        (source / "f.bin").write_bytes(bytes([2]) * (24 * block))
        os.utime(source / "f.bin", ns=(1_000_000_000, 1_000_000_000))  # surely a new version
        assert os.preadv(fd, [buf], 0) == block and buf[:] == old[:block]  # cached: still the old one
        with pytest.raises(OSError) as info:  # past what read-ahead fetched after the first read (16 MiB)
            n = os.preadv(fd, [buf], 20 * block)
            raise AssertionError(f"read {n} bytes of a changed object: {set(buf[:n])}")
        assert info.value.errno == errno.ESTALE, info.value
    finally:
        os.close(fd)
