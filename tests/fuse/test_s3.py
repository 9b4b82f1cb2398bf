"""S3 buckets mounted for real, served by real S3 servers on 127.0.0.1: a tree of 1,000+ objects,
odd keys, credentials per host and per bucket, wrong credentials, throttling and a dead server."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.faultproxy import FaultProxy
from tests.servers import S3Server, start_seaweedfs

if TYPE_CHECKING:
    from conftest import Mounter, Runner

MiB = 1 << 20
FAST_RETRY = '[retry]\nattempts = 3\nbase_delay = "10ms"\nmax_delay = "50ms"\nbudget = "5s"\n'
ALICE = ("alice-access-key", "alice-secret-value")
BOB = ("bob-access-key", "bob-secret-value")


def put_many(server: S3Server, bucket: str, objects: dict[str, bytes]) -> None:
    client = server.client()
    with ThreadPoolExecutor(8) as pool:  # within the client's pool of 10
        list(pool.map(lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]),
                      objects.items()))


def s3_config(tmp_path: Path, mounts: dict[str, str], credentials: list[dict[str, str]],
              extra: str = "") -> str:
    lines = [extra]
    for path, url in mounts.items():
        lines += ["[[mount]]", f'path = "{path}"', f'url = "{url}"', ""]
    for entry in credentials:
        lines.append("[[s3.credentials]]")
        lines += [f'{k} = "{v}"' for k, v in entry.items()]
        lines += ["secure = false", ""]
    config = tmp_path / "mountfs.toml"
    config.write_text("\n".join(lines))
    return str(config)


def tree_of(keys: list[str]) -> set[str]:
    """Every path a mount of these (well-formed) keys shows: files and their implied folders."""
    paths = set()
    for key in keys:
        parts = key.split("/")
        for depth in range(1, len(parts) + 1):
            paths.add("/".join(parts[:depth]))
    return paths


def walk(root: str) -> set[str]:
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


# --- a big tree on SeaweedFS -------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(seaweedfs: S3Server) -> dict[str, bytes]:
    rng = random.Random(7)
    objects = {f"data/{split}/class-{i % 12:02d}/{i:05d}.bin": rng.randbytes(rng.randint(0, 20_000))
               for i, split in ((i, ("train", "val", "test")[i % 3]) for i in range(1200))}
    objects["shards/shard-0.tar"] = rng.randbytes(5 * MiB + 123)
    objects["top level.txt"] = "données\n".encode()
    seaweedfs.create_bucket("tree")
    put_many(seaweedfs, "tree", objects)
    return objects


def test_a_tree_of_1200_objects_beside_a_local_folder(mounter: Mounter, seaweedfs: S3Server,
                                                      dataset: dict[str, bytes], tmp_path: Path) -> None:
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "here.txt").write_bytes(b"from a folder")
    config = s3_config(tmp_path, {"tree": f"s3://{seaweedfs.host_port}/tree", "disk/local": f"file://{local}"},
                       [{"host": seaweedfs.host_port, "key": seaweedfs.access_key,
                         "secret": seaweedfs.secret_key}])
    mnt = mounter.mount(config)
    assert sorted(os.listdir(mnt.path)) == ["disk", "tree"]
    assert read_file(mnt.join("disk", "local", "sub", "here.txt")) == b"from a folder"
    assert walk(mnt.join("tree")) == tree_of(list(dataset))
    for key, data in dataset.items():
        with open(mnt.join("tree", key), "rb") as f:
            assert f.read() == data, key
        assert os.stat(mnt.join("tree", key)).st_size == len(data)
    listing = subprocess.run(["ls", "-l", mnt.join("tree", "data", "train", "class-00")],
                             capture_output=True, text=True, check=True)
    assert listing.stdout.count("\n") == 1 + sum(1 for k in dataset if k.startswith("data/train/class-00/"))
    status = mounter.run.status(mnt)
    fetched = {entry["path"]: entry["bytes_fetched"] for entry in status["stores"]}
    assert fetched == {"tree": sum(map(len, dataset.values())), "disk/local": len(b"from a folder")}
    with open(mnt.join("tree", "shards", "shard-0.tar"), "rb") as f:
        f.seek(3 * MiB - 10)
        assert f.read(20) == dataset["shards/shard-0.tar"][3 * MiB - 10:3 * MiB + 10]


def test_an_object_changed_while_open_reads_as_estale(mounter: Mounter, seaweedfs: S3Server,
                                                      tmp_path: Path) -> None:
    seaweedfs.create_bucket("changing")
    client = seaweedfs.client()
    client.put_object(Bucket="changing", Key="model.bin", Body=b"1" * (24 * MiB))
    config = s3_config(tmp_path, {"c": f"s3://{seaweedfs.host_port}/changing"},
                       [{"host": seaweedfs.host_port, "key": seaweedfs.access_key,
                         "secret": seaweedfs.secret_key}])
    mnt = mounter.mount(config)
    fd = os.open(mnt.join("c", "model.bin"), os.O_RDONLY)
    try:
        assert os.pread(fd, 10, 0) == b"1" * 10
        client.put_object(Bucket="changing", Key="model.bin", Body=b"2" * (24 * MiB))
        with pytest.raises(OSError) as info:
            # A block not read yet (read-ahead after the first read stops at 16 MiB): If-Match on
            # the old ETag fails.
            os.pread(fd, 10, 20 * MiB)
        assert info.value.errno == errno.ESTALE
    finally:
        os.close(fd)


# --- odd keys, on moto (which stores keys exactly as given) -------------------------------------

ODD_KEYS = {
    "odd/both": b"an object shadowed by a prefix of the same name",
    "odd/both/inner": b"inner",
    "odd/marker/": b"",
    "odd/a//b": b"double slash",
    "odd/./dot": b"dot segment",
    "odd/../up": b"dot-dot segment",
    "odd/" + "n" * 300: b"a name too long for POSIX",
    "odd/ok.txt": b"fine",
    "odd/spaces and ünïcödé.txt": b"fine too",
    "odd/deep/er/file": b"deep",
}


def test_odd_keys_keep_the_tree_consistent(mounter: Mounter, moto: S3Server, tmp_path: Path) -> None:
    moto.create_bucket("odd-keys")
    put_many(moto, "odd-keys", ODD_KEYS)
    config = s3_config(tmp_path, {"m": f"s3://{moto.host_port}/odd-keys"},
                       [{"host": moto.host_port, "key": "any", "secret": "any"}])
    mnt = mounter.mount(config)
    root = mnt.join("m")
    assert walk(root) == {"odd", "odd/both", "odd/both/inner", "odd/marker", "odd/a", "odd/ok.txt",
                          "odd/spaces and ünïcödé.txt", "odd/deep", "odd/deep/er", "odd/deep/er/file"}
    assert os.path.isdir(os.path.join(root, "odd", "both")), "the prefix wins over the object"
    with open(os.path.join(root, "odd", "both", "inner"), "rb") as f:
        assert f.read() == b"inner"
    assert os.listdir(os.path.join(root, "odd", "marker")) == []
    for missing in ("odd/" + "n" * 300, "odd/a/b"):
        with pytest.raises(OSError) as info:
            os.stat(os.path.join(root, missing))
        assert info.value.errno in (errno.ENOENT, errno.ENAMETOOLONG)
    find = subprocess.run(["find", root], capture_output=True, text=True)
    assert find.returncode == 0, find.stderr
    log = Path(mnt.log).read_text()
    assert "skipping key 'odd/./'" in log and "has no valid file name" in log


# --- credentials --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS of its own, whose keys each read one bucket only; the fault tests stop it too."""
    identities = [
        {"name": "admin", "credentials": [{"accessKey": "admin-key", "secretKey": "admin-secret"}],
         "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
        {"name": "alice", "credentials": [{"accessKey": ALICE[0], "secretKey": ALICE[1]}],
         "actions": ["Read:bucket-a", "List:bucket-a"]},
        {"name": "bob", "credentials": [{"accessKey": BOB[0], "secretKey": BOB[1]}],
         "actions": ["Read:bucket-b", "List:bucket-b"]},
    ]
    server = start_seaweedfs(str(tmp_path_factory.mktemp("guarded")), identities)
    for bucket in ("bucket-a", "bucket-b"):
        server.create_bucket(bucket)
        put_many(server, bucket, {f"{bucket}.txt": bucket.encode(), "big.bin": os.urandom(24 * MiB),
                                  "small.bin": b"small"})
    yield server
    server.stop()


def test_per_host_and_per_bucket_credentials(mounter: Mounter, guarded: S3Server, tmp_path: Path) -> None:
    host = guarded.host_port
    config = s3_config(tmp_path, {"a": f"s3://{host}/bucket-a", "b": f"s3://{host}/bucket-b"}, [
        {"host": host, "key": ALICE[0], "secret": ALICE[1]},
        {"host": host, "bucket": "bucket-b", "key": BOB[0], "secret": BOB[1]},
    ])
    mnt = mounter.mount(config)
    for bucket, path in (("bucket-a", "a"), ("bucket-b", "b")):
        with open(mnt.join(path, f"{bucket}.txt"), "rb") as f:
            assert f.read() == bucket.encode()
    status = mounter.run.status(mnt)
    cmdline = Path(f"/proc/{mnt.pid}/cmdline").read_bytes()
    for secret in (ALICE[1], BOB[1]):
        assert secret not in str(status) and secret not in Path(mnt.log).read_text()
        assert secret.encode() not in cmdline


def test_the_wrong_credentials_fail_the_mount(mountfs: Runner, guarded: S3Server, tmp_path: Path) -> None:
    host = guarded.host_port
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cases = {
        "a key of another bucket": [{"host": host, "key": ALICE[0], "secret": ALICE[1]}],
        "a wrong secret": [{"host": host, "key": BOB[0], "secret": "not-bobs-secret"}],
        "an unknown key": [{"host": host, "key": "nobody", "secret": "nothing"}],
    }
    for case, credentials in cases.items():
        config = s3_config(tmp_path, {"b": f"s3://{host}/bucket-b"}, credentials)
        result = mountfs(config, str(mnt), "-o", f"cache_dir={tmp_path / 'cache'}", timeout=60)
        assert result.returncode == 1, case
        assert result.stderr.startswith(f"mountfs: cannot use s3://{host}/bucket-b: "), (case, result.stderr)
        assert "access denied" in result.stderr and result.stderr.count("\n") == 1, (case, result.stderr)
        assert "not-bobs-secret" not in result.stderr
        assert not os.path.ismount(mnt)


def test_an_unknown_bucket_and_an_unreachable_endpoint_fail_the_mount(
        mountfs: Runner, guarded: S3Server, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    creds = [{"host": guarded.host_port, "key": "admin-key", "secret": "admin-secret"},
             {"host": "127.0.0.1:9", "key": "k", "secret": "s"}]
    config = s3_config(tmp_path, {"x": f"s3://{guarded.host_port}/no-such-bucket"}, creds, FAST_RETRY)
    result = mountfs(config, str(mnt), "-o", f"cache_dir={tmp_path / 'cache'}", timeout=60)
    assert (result.returncode, result.stderr.count("\n")) == (1, 1), result.stderr
    assert "bucket no-such-bucket does not exist" in result.stderr
    config = s3_config(tmp_path, {"x": "s3://127.0.0.1:9/bucket-a"}, creds, FAST_RETRY)
    result = mountfs(config, str(mnt), "-o", f"cache_dir={tmp_path / 'cache'}", timeout=60)
    assert (result.returncode, result.stderr.count("\n")) == (1, 1), result.stderr
    assert "cannot reach s3://bucket-a at http://127.0.0.1:9" in result.stderr
    assert not os.path.ismount(mnt)


# --- faults -------------------------------------------------------------------------------------

def once_recovered(read: Callable[[], bytes], timeout: float = 60.0) -> bytes:
    """`read()` once the mount has noticed the store is back: an offline store is probed again
    every few seconds, and until then reads fail at once with EIO."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except OSError as exc:
            if exc.errno != errno.EIO or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_throttling_is_retried_then_eio_and_the_daemon_keeps_serving(
        mounter: Mounter, guarded: S3Server, tmp_path: Path) -> None:
    proxy = FaultProxy(int(guarded.host_port.rsplit(":", 1)[1]))
    try:
        config = s3_config(tmp_path, {"a": f"s3://{proxy.host_port}/bucket-a"},
                           [{"host": proxy.host_port, "key": ALICE[0], "secret": ALICE[1]}], FAST_RETRY)
        mnt = mounter.mount(config)
        assert read_file(mnt.join("a", "bucket-a.txt")) == b"bucket-a"
        for name in ("small.bin", "big.bin"):  # looked up before the store goes bad
            os.stat(mnt.join("a", name))

        proxy.fail_next(2)  # fewer than the 3 attempts (6 throttled answers): the read succeeds
        assert read_file(mnt.join("a", "small.bin")) == b"small"
        assert proxy.failures_served == 2
        assert "SlowDown" in Path(mnt.log).read_text() and "retrying" in Path(mnt.log).read_text()

        proxy.fail_next(1000)  # always throttled: EIO once the retries are spent
        with pytest.raises(OSError) as info:
            read_file(mnt.join("a", "big.bin"))
        assert info.value.errno == errno.EIO
        assert read_file(mnt.join("a", "bucket-a.txt")) == b"bucket-a", "cached files are still served"
        log = Path(mnt.log).read_text()
        assert "GET s3://bucket-a/big.bin" in log and "gave up after 6 attempt(s)" in log

        proxy.fail_next(0)
        expected = guarded.client().get_object(Bucket="bucket-a", Key="big.bin")["Body"].read()
        assert once_recovered(lambda: read_file(mnt.join("a", "big.bin"))) == expected, \
            "recovers once the store does"
    finally:
        proxy.close()


def test_a_server_stopped_mid_read_gives_eio_then_recovers(
        mounter: Mounter, guarded: S3Server, tmp_path: Path) -> None:
    config = s3_config(tmp_path, {"b": f"s3://{guarded.host_port}/bucket-b"},
                       [{"host": guarded.host_port, "key": BOB[0], "secret": BOB[1]}], FAST_RETRY)
    mnt = mounter.mount(config)
    assert read_file(mnt.join("b", "bucket-b.txt")) == b"bucket-b"
    expected = guarded.client("admin-key", "admin-secret").get_object(
        Bucket="bucket-b", Key="big.bin")["Body"].read()
    fd = os.open(mnt.join("b", "big.bin"), os.O_RDONLY)
    try:
        assert os.pread(fd, MiB, 0) == expected[:MiB]
        guarded.kill()
        with pytest.raises(OSError) as info:
            os.pread(fd, MiB, 20 * MiB)
        assert info.value.errno == errno.EIO
        assert read_file(mnt.join("b", "bucket-b.txt")) == b"bucket-b", "cached files are still served"
        guarded.restart()
        assert once_recovered(lambda: os.pread(fd, MiB, 20 * MiB)) == expected[20 * MiB:21 * MiB]
    finally:
        os.close(fd)
    assert read_file(mnt.join("b", "big.bin")) == expected




def test_a_metadata_walk_costs_one_listing_per_directory(mounter: Mounter, seaweedfs: S3Server,
                                                         dataset: dict[str, bytes], tmp_path: Path) -> None:
    config = s3_config(tmp_path, {"tree": f"s3://{seaweedfs.host_port}/tree"},
                       [{"host": seaweedfs.host_port, "key": seaweedfs.access_key,
                         "secret": seaweedfs.secret_key}])
    mnt = mounter.mount(config)
    files = 0
    for folder, _dirs, names in os.walk(mnt.join("tree")):
        for name in names:
            os.stat(os.path.join(folder, name))
            files += 1
    listing = subprocess.run(["ls", "-lR", mnt.join("tree")], capture_output=True, text=True)
    assert listing.returncode == 0 and files == len(dataset)
    directories = len(tree_of(list(dataset))) - len(dataset) + 1  # implied folders and the root
    requests = mounter.run.status(mnt)["stores"][0]["requests"]
    assert requests.get("head", 0) == 0, requests
    assert requests["list"] <= directories + 2, (requests, directories)  # + the mount-time checks
