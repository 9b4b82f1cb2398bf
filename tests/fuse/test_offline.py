"""A store that goes away: cached data and metadata are still served (metadata past its TTL,
within read.offline_grace), uncached reads fail at once with EIO, `mountfs status` says the store
is offline, and the mount recovers by itself when the store is back."""

from __future__ import annotations

import errno
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fuse.test_s3 import FAST_RETRY, once_recovered, read_file
from tests.servers import S3Server, start_seaweedfs

if TYPE_CHECKING:
    from conftest import Mounter

MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS of its own: this test kills it."""
    s3 = start_seaweedfs(str(tmp_path_factory.mktemp("offline-s3")))
    yield s3
    s3.stop()


def test_a_stopped_store_serves_the_cache_then_recovers(mounter: Mounter, server: S3Server,
                                                        tmp_path: Path) -> None:
    rng = random.Random(5)
    objects = {"cached.bin": rng.randbytes(2 * MiB + 100), "uncached.bin": rng.randbytes(MiB),
               "sub/inner.txt": b"inner"}
    server.create_bucket("off")
    client = server.client()
    for key, body in objects.items():
        client.put_object(Bucket="off", Key=key, Body=body)
    config = tmp_path / "mountfs.toml"
    config.write_text(
        f'{FAST_RETRY}\n[read]\nmetadata_ttl = "1s"\nnegative_ttl = "1s"\noffline_grace = "1h"\n'
        f'[[mount]]\npath = "s"\nurl = "s3://{server.host_port}/off"\n'
        f'[[s3.credentials]]\nhost = "{server.host_port}"\nkey = "{server.access_key}"\n'
        f'secret = "{server.secret_key}"\nsecure = false\n')
    mnt = mounter.mount(str(config))
    root = mnt.join("s")
    assert sorted(os.listdir(root)) == ["cached.bin", "sub", "uncached.bin"]
    assert os.listdir(os.path.join(root, "sub")) == ["inner.txt"]
    assert read_file(os.path.join(root, "cached.bin")) == objects["cached.bin"]
    assert read_file(os.path.join(root, "sub", "inner.txt")) == b"inner"
    assert os.stat(os.path.join(root, "uncached.bin")).st_size == MiB  # known, not cached
    status = mounter.run.status(mnt)
    assert status["stores"][0]["offline"] is False

    server.kill()
    time.sleep(1.2)  # past the metadata TTL: every stat below needs the store, or the grace
    assert os.stat(os.path.join(root, "cached.bin")).st_size == len(objects["cached.bin"])
    assert sorted(os.listdir(root)) == ["cached.bin", "sub", "uncached.bin"]
    assert read_file(os.path.join(root, "cached.bin")) == objects["cached.bin"]
    assert read_file(os.path.join(root, "sub", "inner.txt")) == b"inner"
    with pytest.raises(FileNotFoundError):  # not in the complete (stale) listing
        os.stat(os.path.join(root, "never-there"))
    deadline = time.monotonic() + 60
    while not mounter.run.status(mnt)["stores"][0]["offline"]:
        # Each read spends its retries: offline takes several failed calls in a row over some seconds.
        with pytest.raises(OSError) as info:
            read_file(os.path.join(root, "uncached.bin"))
        assert info.value.errno == errno.EIO
        assert time.monotonic() < deadline, "never counted as offline"
        time.sleep(0.3)
    with pytest.raises(OSError) as info:  # now refused at once
        read_file(os.path.join(root, "uncached.bin"))
    assert info.value.errno == errno.EIO
    status = mounter.run.status(mnt)
    store = status["stores"][0]
    assert store["offline"] is True and store["failed_fast"] > 0, store
    assert status["stale_metadata_served"] > 0
    text = mounter.run("status", mnt.path)
    assert "offline for" in text.stdout and "failed fast" in text.stdout, text.stdout

    server.restart()
    assert once_recovered(lambda: read_file(os.path.join(root, "uncached.bin"))) == objects["uncached.bin"]
    assert mounter.run.status(mnt)["stores"][0]["offline"] is False
