"""One version per open handle: another client overwrites an object while handles of one mount read
it. The kernel's page cache is one per inode, shared by all of its handles, so a handle must never
be served pages another handle read of another version: each handle's bytes are all of the version
it opened, or its read fails with ESTALE."""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.servers import S3Server

if TYPE_CHECKING:
    from conftest import Mount, Mounter

MiB = 1 << 20
SIZE = 4 * MiB + 4096  # a few blocks and a page over: several kernel and mountfs read requests


def version_bytes(version: int) -> bytes:
    """Every byte of version `version` is the same non-zero value: one byte tells the version."""
    return bytes([version % 255 + 1]) * SIZE


def versions_in(data: bytes) -> set[int]:
    """The versions whose bytes `data` holds."""
    if data and data.count(data[:1]) == len(data):  # the usual case, at C speed
        return {data[0] - 1}
    return {value - 1 for value in set(data)}


def mount_bucket(mounter: Mounter, server: S3Server, tmp_path: Path, bucket: str) -> Mount:
    config = tmp_path / "mountfs.toml"
    config.write_text("\n".join([
        '[read]', 'metadata_ttl = "0.2s"', '',
        '[[mount]]', 'path = "b"', f'url = "s3://{server.host_port}/{bucket}"', '',
        '[[s3.credentials]]', f'host = "{server.host_port}"', f'key = "{server.access_key}"',
        f'secret = "{server.secret_key}"', 'secure = false', '']))
    return mounter.mount(str(config))


def read_from(fd: int, offset: int) -> bytes:
    """The rest of the file from `offset`, in the 128 KiB reads a program makes."""
    parts = []
    while chunk := os.pread(fd, 128 * 1024, offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def test_a_handle_never_reads_the_pages_another_handle_read_of_a_newer_version(
        mounter: Mounter, seaweedfs: S3Server, tmp_path: Path) -> None:
    seaweedfs.create_bucket("one-version")
    client = seaweedfs.client()
    client.put_object(Bucket="one-version", Key="obj", Body=version_bytes(1))
    mnt = mount_bucket(mounter, seaweedfs, tmp_path, "one-version")
    path = mnt.join("b", "obj")
    old = os.open(path, os.O_RDONLY)
    try:
        first = os.pread(old, 4096, 0)
        assert versions_in(first) == {1}
        client.put_object(Bucket="one-version", Key="obj", Body=version_bytes(2))
        time.sleep(0.3)  # past the metadata TTL: the next open sees version 2
        new = os.open(path, os.O_RDONLY)
        try:
            assert versions_in(read_from(new, 0)) == {2}  # (the kernel keeps these pages, if it may)
        finally:
            os.close(new)
        try:
            rest = read_from(old, 4096)
        except OSError as exc:
            assert exc.errno == errno.ESTALE, exc
        else:
            assert versions_in(rest) == {1}, "the handle opened at version 1 returned another version's bytes"
    finally:
        os.close(old)
    with open(path, "rb") as f:  # version 1 no longer open: the page cache serves version 2
        assert versions_in(f.read()) == {2}


def test_readers_in_one_mount_each_read_one_version_while_another_client_overwrites(
        mounter: Mounter, seaweedfs: S3Server, tmp_path: Path) -> None:
    seaweedfs.create_bucket("overwritten")
    client = seaweedfs.client()
    client.put_object(Bucket="overwritten", Key="obj", Body=version_bytes(0))
    mnt = mount_bucket(mounter, seaweedfs, tmp_path, "overwritten")
    path = mnt.join("b", "obj")
    stop = threading.Event()
    errors: list[BaseException] = []
    mixed: list[set[int]] = []
    whole: list[int] = []
    stale: list[int] = []

    def overwrite() -> None:
        rng = random.Random(17)
        version = 0
        try:
            while not stop.is_set():
                version += 1
                client.put_object(Bucket="overwritten", Key="obj", Body=version_bytes(version))
                stop.wait(rng.uniform(0.02, 0.2))
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            while not stop.is_set():
                fd = os.open(path, os.O_RDONLY)
                try:
                    data = read_from(fd, 0)
                except OSError as exc:
                    if exc.errno != errno.ESTALE:
                        raise
                    stale.append(1)
                    continue
                finally:
                    os.close(fd)
                seen = versions_in(data)
                if len(seen) == 1:
                    whole.append(1)
                else:
                    mixed.append(seen)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=overwrite)] + [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert not mixed, f"{len(mixed)} of {len(mixed) + len(whole) + len(stale)} opens read bytes of " \
                      f"several versions, e.g. versions {sorted(mixed[0])}"
    assert whole, "no reader read the object whole"
