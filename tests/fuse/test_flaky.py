"""A flaky store is not a dead store: through a proxy that resets half the answers mid-body, or
throttles most requests, four readers at once still read nearly every file, each read retrying on
its own budget, the store never counts as offline, and no read ever returns a wrong byte. Bodies
damaged on the way are caught by the checksum the store sends with a whole object, and fetched
again."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.faultproxy import FaultProxy
from tests.fuse.test_s3 import put_many, read_file, s3_config
from tests.servers import S3Server

if TYPE_CHECKING:
    from conftest import Mounter

KiB = 1 << 10
READERS = 4
# Short pauses keep the test quick. The attempts make an honest read fail rarely (0.5^5 about 3%,
# 0.6^7 about 3%), yet often enough over the run that a store taken offline by the first such
# failure would fail most of the reads after it.
RETRY = '[retry]\nattempts = {}\nbase_delay = "5ms"\nmax_delay = "40ms"\nbudget = "20s"\n'


@pytest.fixture(scope="module")
def objects(seaweedfs: S3Server) -> dict[str, bytes]:
    rng = random.Random(17)
    sizes = [rng.randrange(1, 256 * KiB) for _ in range(150)] + [1536 * KiB, 3 * 1024 * KiB]
    data = {f"f{i:03d}.bin": rng.randbytes(size) for i, size in enumerate(sizes)}
    seaweedfs.create_bucket("flaky")
    put_many(seaweedfs, "flaky", {f"{prefix}/{name}": body for prefix in ("reset", "throttled")
                                  for name, body in data.items()})
    return data


@pytest.fixture
def proxy_of() -> Iterator[Callable[[S3Server], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(server: S3Server) -> FaultProxy:
        proxies.append(FaultProxy(int(server.host_port.rsplit(":", 1)[1]), seed=7))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


def read_all(folder: str, names: list[str], objects: dict[str, bytes]) -> tuple[int, list[str], list[str]]:
    """(reads that succeeded, their names whose bytes were wrong, errors), READERS threads at once."""
    lock = threading.Lock()
    good, wrong, errors = 0, [], []

    def reader(share: list[str]) -> None:
        nonlocal good
        for name in share:
            try:
                data = read_file(os.path.join(folder, name))
            except OSError as exc:
                with lock:
                    errors.append(f"{name}: {exc}")
                continue
            with lock:
                good += 1
                if data != objects[name]:
                    wrong.append(name)

    order = random.Random(3).sample(names, len(names))  # no listing order: each read asks the store
    threads = [threading.Thread(target=reader, args=(order[i::READERS],)) for i in range(READERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return good, wrong, errors


@pytest.mark.parametrize(("fault", "attempts"), [("reset", 5), ("throttled", 7)])
def test_four_readers_through_a_flaky_store_read_nearly_everything_and_never_a_wrong_byte(
        mounter: Mounter, seaweedfs: S3Server, objects: dict[str, bytes],
        proxy_of: Callable[[S3Server], FaultProxy], tmp_path: Path, fault: str, attempts: int) -> None:
    proxy = proxy_of(seaweedfs)
    config = s3_config(tmp_path, {"s": f"s3://{proxy.host_port}/flaky"},
                       [{"host": proxy.host_port, "key": seaweedfs.access_key,
                         "secret": seaweedfs.secret_key}], RETRY.format(attempts))
    mnt = mounter.mount(config)
    folder = mnt.join("s", fault)
    names = sorted(os.listdir(folder))  # listed while the store behaves: the reads are what is tested
    assert names == sorted(objects)

    if fault == "reset":
        proxy.reset_bodies = 0.5  # half the answers cut mid-body by a reset
    else:
        proxy.slow_down = 0.6  # most requests answered 503 SlowDown
    good, wrong, errors = read_all(folder, names, objects)

    assert not wrong, f"wrong bytes served for {wrong}"
    assert good >= 0.9 * len(names), f"{len(errors)} of {len(names)} reads failed: {errors[:5]}"
    assert proxy.resets_served + proxy.failures_served >= len(names) // 2, "the faults did happen"
    store = mounter.run.status(mnt)["stores"][0]
    assert store["offline"] is False and store["failed_fast"] == 0, store


def test_bodies_damaged_on_the_way_fail_their_checksum_and_are_fetched_again(
        mounter: Mounter, moto: S3Server, proxy_of: Callable[[S3Server], FaultProxy], tmp_path: Path) -> None:
    rng = random.Random(23)
    objects = {f"c{i:02d}.bin": rng.randbytes(rng.randrange(1, 200 * KiB)) for i in range(60)}
    moto.create_bucket("damaged")
    put_many(moto, "damaged", objects)  # boto3 sends (and moto keeps) each object's CRC32
    proxy = proxy_of(moto)
    config = s3_config(tmp_path, {"s": f"s3://{proxy.host_port}/damaged"},
                       [{"host": proxy.host_port, "key": moto.access_key, "secret": moto.secret_key}],
                       RETRY.format(5))
    mnt = mounter.mount(config)
    names = sorted(os.listdir(mnt.join("s")))
    assert names == sorted(objects)

    proxy.corrupt_bodies = 0.5  # a byte flipped in half the bodies: whole objects, so checksummed
    good, wrong, errors = read_all(mnt.join("s"), names, objects)

    assert not wrong, f"wrong bytes served for {wrong}"
    assert good >= 0.9 * len(names), f"{len(errors)} of {len(names)} reads failed: {errors[:5]}"
    assert proxy.corruptions_served >= len(names) // 4, "the faults did happen"
    assert "CRC32 checksum" in Path(mnt.log).read_text()


def test_a_mount_rides_out_a_store_that_throttles_its_first_requests(
        mounter: Mounter, seaweedfs: S3Server, objects: dict[str, bytes],
        proxy_of: Callable[[S3Server], FaultProxy], tmp_path: Path) -> None:
    """The access check at mount time retries a store that answers, as any call does: only one
    that does not answer at all fails the mount within seconds."""
    proxy = proxy_of(seaweedfs)
    config = s3_config(tmp_path, {"s": f"s3://{proxy.host_port}/flaky"},
                       [{"host": proxy.host_port, "key": seaweedfs.access_key,
                         "secret": seaweedfs.secret_key}], RETRY.format(5))
    proxy.fail_next(4)  # the access check's first four requests answered 503 SlowDown
    mnt = mounter.mount(config)
    assert proxy.failures_served == 4
    assert sorted(os.listdir(mnt.join("s", "reset"))) == sorted(objects)
